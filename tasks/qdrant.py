"""The Qdrant connection: a server through QDRANT_URL, else an embedded engine on disk under the workspace."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tasks.workspace import Workspace


class QdrantBusyError(RuntimeError):
    """Another process holds the local Qdrant folder."""


def resolve_api_key(api_key: str | None = None) -> str | None:
    """The Qdrant API key: given, else QDRANT_API_KEY, else the Prefect Secret block named by
    QDRANT_API_KEY_BLOCK (so the key lives in the Prefect server, not in deployment files). Never logged."""
    if api_key or os.environ.get("QDRANT_API_KEY"):
        return api_key or os.environ["QDRANT_API_KEY"]
    block = os.environ.get("QDRANT_API_KEY_BLOCK")
    if not block:
        return None
    from prefect.blocks.system import Secret

    try:
        return Secret.load(block).get()
    except ValueError as exc:
        raise RuntimeError(f"QDRANT_API_KEY_BLOCK names Prefect Secret block {block!r}, which cannot be loaded: "
                           f"{str(exc).splitlines()[0]}") from None


ENGINES = ("edge", "local")


def local_engine() -> str:
    """The embedded engine: `edge` (qdrant-edge, Qdrant's segment engine in-process; the default) or `local`
    (qdrant-client's local mode), from RAGTUNE_QDRANT_ENGINE."""
    from tasks import edge

    engine = os.environ.get("RAGTUNE_QDRANT_ENGINE", "").strip().lower() or ("edge" if edge.available() else "local")
    if engine not in ENGINES:
        raise ValueError(f"RAGTUNE_QDRANT_ENGINE must be one of {', '.join(ENGINES)}, not {engine!r}")
    return engine


def busy_wait_s() -> float:
    """How long opening the embedded engine waits for another process to let go of it (RAGTUNE_QDRANT_WAIT_S,
    default 5 s): long enough for the server's copy of a served collection, short enough to fail fast when a
    build holds it."""
    return float(os.environ.get("RAGTUNE_QDRANT_WAIT_S", "5"))


def open_local(path: Path, engine: str | None = None, wait_s: float | None = None) -> Any:
    """An embedded Qdrant at `path` (one process at a time); `QdrantBusyError` when another process has it."""
    import time

    from tasks.edge import EdgeBusyError, EdgeClient

    wait_s = busy_wait_s() if wait_s is None else wait_s
    engine = engine or local_engine()
    path.mkdir(parents=True, exist_ok=True)
    busy = (f"another process has the local Qdrant index open ({path}); the embedded engine allows one process "
            "at a time: wait for it, or set QDRANT_URL to use a Qdrant server")
    if engine == "edge":
        try:
            return EdgeClient(path / "edge", wait_s=wait_s)
        except EdgeBusyError:
            raise QdrantBusyError(busy) from None
    from qdrant_client import QdrantClient

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return QdrantClient(path=str(path))
        except RuntimeError as exc:
            if "already accessed" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise QdrantBusyError(busy) from None
            time.sleep(0.2)


def open_client(ws: Workspace, url: str | None = None, api_key: str | None = None) -> Any:
    """QdrantClient for `url` (or QDRANT_URL; key from `resolve_api_key`), else the embedded engine at
    `<home>/qdrant`."""
    url = url or os.environ.get("QDRANT_URL")
    if url:
        from qdrant_client import QdrantClient

        return QdrantClient(url=url, api_key=resolve_api_key(api_key), timeout=60)
    return open_local(ws.qdrant)


def alias_target(client: Any, alias: str) -> str | None:
    for a in client.get_aliases().aliases:
        if a.alias_name == alias:
            return a.collection_name
    return None


def switch_alias(client: Any, alias: str, collection: str) -> str | None:
    """Point `alias` at `collection` in one aliases update (readers never see it missing); returns the old target."""
    from qdrant_client import models

    old = alias_target(client, alias)
    ops: list[Any] = []
    if old is not None:
        ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
    ops.append(models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)))
    client.update_collection_aliases(change_aliases_operations=ops)
    return old


def collections_of(client: Any, alias: str) -> list[str]:
    """Collections built for an alias, oldest first (names end in a sortable build stamp)."""
    prefix = f"{alias}__"
    return sorted(c.name for c in client.get_collections().collections if c.name.startswith(prefix))


def served_state(ws: Workspace, alias: str) -> tuple[str | None, str | None]:
    """(collection, state) of a served alias, without loading an embedding model. The state names the content:
    the index version plus the count of in-place updates, so it changes with every rebuild and every incremental
    update (cache keys and evaluation ids use it). With the embedded engine the alias file is read directly, so
    the answer costs a file read, not a client start."""
    from tasks.workspace import read_json

    if not os.environ.get("QDRANT_URL") and local_engine() == "edge":
        collection = (read_json(ws.qdrant / "edge" / "aliases.json", default={}) or {}).get(alias)
    else:
        client = open_client(ws)
        try:
            collection = alias_target(client, alias)
        finally:
            client.close()
    if collection is None:
        return None, None
    meta = read_json(ws.index_meta_path(collection), default={}) or {}
    return collection, f"{meta.get('index_version', collection)}+{len(meta.get('updates', []))}"

"""The Qdrant connection: a server through QDRANT_URL, else an embedded engine on disk under the workspace."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.core.workspace import Workspace
from tasks.index import edge
from tasks.index.edge import EdgeBusyError, EdgeClient


class QdrantBusyError(RuntimeError):
    """Another process holds the local Qdrant folder."""


# Where a named secret is looked up (QDRANT_API_KEY_BLOCK): the flows register Prefect's Secret blocks here, so
# this plain module never imports Prefect and tests need no server.
SecretSource = Callable[[str], str]
_SECRET_SOURCES: list[SecretSource] = []


def register_secret_source(source: SecretSource) -> None:
    """Add a function that turns a secret's name into its value (raising ValueError when it cannot)."""
    if source not in _SECRET_SOURCES:
        _SECRET_SOURCES.append(source)


def resolve_api_key(api_key: str | None = None) -> str | None:
    """The Qdrant API key: given, else QDRANT_API_KEY, else the secret named by QDRANT_API_KEY_BLOCK (a Prefect
    Secret block, so the key lives in the Prefect server, not in deployment files). Never logged."""
    if api_key or os.environ.get("QDRANT_API_KEY"):
        return api_key or os.environ["QDRANT_API_KEY"]
    block = os.environ.get("QDRANT_API_KEY_BLOCK")
    if not block:
        return None
    if not _SECRET_SOURCES:
        raise RuntimeError(f"QDRANT_API_KEY_BLOCK names secret {block!r}, but no secret store is available here "
                           "(run through ragtune's flows or CLI, or set QDRANT_API_KEY)")
    try:
        return _SECRET_SOURCES[-1](block)
    except ValueError as exc:
        raise RuntimeError(f"QDRANT_API_KEY_BLOCK names Prefect Secret block {block!r}, which cannot be loaded: "
                           f"{str(exc).splitlines()[0]}") from None


ENGINES = ("edge", "local")


def local_engine() -> str:
    """The embedded engine: `edge` (qdrant-edge, Qdrant's segment engine in-process; the default) or `local`
    (qdrant-client's local mode), from RAGTUNE_QDRANT_ENGINE."""
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



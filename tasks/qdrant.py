"""The Qdrant connection: a server through QDRANT_URL, else local mode on disk under the workspace."""

from __future__ import annotations

import os
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


def open_client(ws: Workspace, url: str | None = None, api_key: str | None = None) -> Any:
    """QdrantClient for `url` (or QDRANT_URL; key from `resolve_api_key`), else local mode at `<home>/qdrant`."""
    from qdrant_client import QdrantClient

    url = url or os.environ.get("QDRANT_URL")
    if url:
        return QdrantClient(url=url, api_key=resolve_api_key(api_key), timeout=60)
    ws.qdrant.mkdir(parents=True, exist_ok=True)
    try:
        return QdrantClient(path=str(ws.qdrant))
    except RuntimeError as exc:
        if "already accessed" in str(exc):
            raise QdrantBusyError(
                f"another process has the local Qdrant index open ({ws.qdrant}); local mode allows one "
                "process at a time: wait for it, or set QDRANT_URL to use a Qdrant server"
            ) from None
        raise


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

"""The served index, looked up one way everywhere: which collection an alias points at, the meta file of its
build, the IndexConfig it was built with (so a search embeds and weighs queries as the build did) and its
content state (index version plus in-place updates, used in cache keys and evaluation ids)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.workspace import Workspace, read_json
from tasks.index.config import IndexConfig
from tasks.index.qdrant import alias_target, local_engine, open_client


class NoServedIndexError(FileNotFoundError):
    """No collection is served under the alias (the message says what to run)."""


@dataclass(frozen=True)
class Served:
    """One served collection: its alias, name, build meta and the config it was built with."""

    name: str
    collection: str
    meta: dict[str, Any]
    config: IndexConfig

    @property
    def index_version(self) -> str:
        return str(self.meta.get("index_version") or self.collection)

    @property
    def state(self) -> str:
        """The content state: index version plus the count of in-place updates."""
        return f"{self.meta.get('index_version', self.collection)}+{len(self.meta.get('updates', []))}"


def meta_dir(ws: Workspace, name: str) -> Path:
    """The alias's folder of build metas and switch history."""
    return ws.root / "indexes" / name


def describe(ws: Workspace, name: str, collection: str) -> Served:
    """The served view of `collection` from its meta file (the alias's defaults when it has no config)."""
    meta = read_json(ws.index_meta_path(collection), default={}) or {}
    config = IndexConfig.model_validate(meta["config"]) if meta.get("config") else IndexConfig(name=name)
    return Served(name, collection, meta, config)


def served_collection(ws: Workspace, name: str, client: Any | None = None) -> str | None:
    """The collection the alias points at, or None. With the embedded engine and no client the alias file is
    read directly, so the answer costs a file read, not a client start."""
    if client is not None:
        return alias_target(client, name)
    if not os.environ.get("QDRANT_URL") and local_engine() == "edge":
        return (read_json(ws.qdrant / "edge" / "aliases.json", default={}) or {}).get(name)
    client = open_client(ws)
    try:
        return alias_target(client, name)
    finally:
        client.close()


def served(ws: Workspace, name: str, client: Any | None = None) -> Served | None:
    """The served collection of alias `name` with its meta and build config, or None when nothing is served."""
    collection = served_collection(ws, name, client)
    return describe(ws, name, collection) if collection else None


def require_served(ws: Workspace, name: str, client: Any | None = None, hint: str = "") -> Served:
    """`served`, or a `NoServedIndexError` that says what to run."""
    found = served(ws, name, client)
    if found is None:
        raise NoServedIndexError(f"no index named {name!r} is served in {ws.root}: run `ragtune index` first"
                                 + (f", {hint}" if hint else ""))
    return found


def served_meta(ws: Workspace, client: Any, name: str) -> tuple[str | None, dict[str, Any] | None]:
    """(collection, meta) of the alias as the index build sees it (meta None when nothing is served)."""
    current = alias_target(client, name)
    return current, (read_json(ws.index_meta_path(current), default=None) if current else None)


def served_state(ws: Workspace, alias: str) -> tuple[str | None, str | None]:
    """(collection, content state) of a served alias without loading an embedding model; (None, None) when
    nothing is served."""
    found = served(ws, alias)
    return (found.collection, found.state) if found else (None, None)


def served_chunks(client: Any, collection: str, batch: int = 512) -> list[dict[str, Any]]:
    """Every point's payload (the chunk: doc_id, text, section, char span, ...) with its id, in document and
    chunk order."""
    out: list[dict[str, Any]] = []
    offset = None
    while True:
        points, offset = client.scroll(collection, limit=batch, offset=offset, with_payload=True, with_vectors=False)
        out += [{**(p.payload or {}), "id": str(p.id)} for p in points]
        if offset is None or not points:
            break
    return sorted(out, key=lambda c: (str(c.get("doc_id")), int(c.get("chunk_index") or 0)))

"""Embedded Qdrant engine (qdrant-edge) behind the subset of QdrantClient's interface that ragtune uses.

qdrant-client's local mode searches sparse vectors with a Python loop over every point (~0.4 s a query at
12k chunks) and ignores payload indexes. qdrant-edge runs Qdrant's own segment engine in-process: one shard
per collection, sparse inverted indexes, payload indexes, a write-ahead log. It has no collections or
aliases of its own, so this module keeps one shard folder per collection and the aliases in a JSON file
replaced atomically. Requests and responses use qdrant_client's models, so the index and search code is the
same for this engine, qdrant-client's local mode and a Qdrant server.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from tasks.core.workspace import atomic_write_json, read_json

MARKER = "ragtune-collection.json"  # written once a shard is created: a folder without it is debris


class EdgeBusyError(RuntimeError):
    """Another process has the embedded engine's folder open."""


def available() -> bool:
    try:
        import qdrant_edge  # noqa: F401
    except ImportError:
        return False
    return True


class EdgeClient:
    """Collections as qdrant-edge shards under `root/collections/`, aliases in `root/aliases.json`.

    One process at a time (an exclusive file lock, held until `close`), like qdrant-client's local mode."""

    def __init__(self, root: str | Path, wait_s: float = 0.0) -> None:
        self.root = Path(root)
        (self.root / "collections").mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.root / ".lock"))
        try:
            self._lock.acquire(timeout=wait_s)
        except Timeout:
            raise EdgeBusyError(f"another process has the embedded Qdrant folder open ({self.root})") from None
        self._shards: dict[str, Any] = {}

    # --- collections and aliases ----------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid collection name {name!r}")
        return self.root / "collections" / name

    def _shard(self, name: str) -> Any:
        from qdrant_edge import EdgeShard

        name = self._resolve(name)
        if name not in self._shards:
            if not self.collection_exists(name):
                raise ValueError(f"collection {name!r} not found")
            self._shards[name] = EdgeShard.load(str(self._dir(name)))
        return self._shards[name]

    def _aliases(self) -> dict[str, str]:
        return read_json(self.root / "aliases.json", default={}) or {}

    def _resolve(self, name: str) -> str:
        return self._aliases().get(name, name)

    def collection_exists(self, collection_name: str) -> bool:
        return (self._dir(collection_name) / MARKER).exists()

    def create_collection(self, collection_name: str, vectors_config: dict[str, Any],
                          sparse_vectors_config: dict[str, Any] | None = None, **_: Any) -> bool:
        from qdrant_client import models
        from qdrant_edge import (
            Distance,
            EdgeConfig,
            EdgeShard,
            EdgeSparseVectorParams,
            EdgeVectorParams,
            Modifier,
        )

        if self.collection_exists(collection_name):
            raise ValueError(f"collection {collection_name!r} already exists")
        path = self._dir(collection_name)
        shutil.rmtree(path, ignore_errors=True)  # debris of a creation that never finished
        distances = {models.Distance.COSINE: Distance.Cosine, models.Distance.DOT: Distance.Dot,
                     models.Distance.EUCLID: Distance.Euclid, models.Distance.MANHATTAN: Distance.Manhattan}
        dense = {n: EdgeVectorParams(size=p.size, distance=distances[p.distance]) for n, p in vectors_config.items()}
        sparse = {n: EdgeSparseVectorParams(modifier=Modifier.Idf if p.modifier == models.Modifier.IDF else None)
                  for n, p in (sparse_vectors_config or {}).items()}
        shard = EdgeShard.create(str(path), EdgeConfig(vectors=dense, sparse_vectors=sparse))
        shard.flush()
        atomic_write_json(path / MARKER, {"vectors": sorted(dense), "sparse_vectors": sorted(sparse)})
        self._shards[collection_name] = shard
        return True

    def delete_collection(self, collection_name: str, **_: Any) -> bool:
        shard = self._shards.pop(collection_name, None)
        if shard is not None:
            shard.close()
        path = self._dir(collection_name)
        existed = path.exists()
        if existed:
            (path / MARKER).unlink(missing_ok=True)  # gone for readers first, then the files
            shutil.rmtree(path)
        aliases = self._aliases()
        if collection_name in aliases.values():
            atomic_write_json(self.root / "aliases.json",
                              {a: c for a, c in aliases.items() if c != collection_name})
        return existed

    def get_collections(self) -> Any:
        from qdrant_client import models

        names = sorted(p.name for p in (self.root / "collections").iterdir() if (p / MARKER).exists())
        return models.CollectionsResponse(collections=[models.CollectionDescription(name=n) for n in names])

    def get_aliases(self) -> Any:
        from qdrant_client import models

        return models.CollectionsAliasesResponse(aliases=[
            models.AliasDescription(alias_name=a, collection_name=c) for a, c in sorted(self._aliases().items())])

    def update_collection_aliases(self, change_aliases_operations: list[Any], **_: Any) -> bool:
        """Apply the operations in order, then replace the aliases file once: readers see all or none."""
        from qdrant_client import models

        aliases = self._aliases()
        for op in change_aliases_operations:
            if isinstance(op, models.CreateAliasOperation):
                if not self.collection_exists(op.create_alias.collection_name):
                    raise ValueError(f"collection {op.create_alias.collection_name!r} not found")
                aliases[op.create_alias.alias_name] = op.create_alias.collection_name
            elif isinstance(op, models.DeleteAliasOperation):
                aliases.pop(op.delete_alias.alias_name, None)
            elif isinstance(op, models.RenameAliasOperation):
                aliases[op.rename_alias.new_alias_name] = aliases.pop(op.rename_alias.old_alias_name)
            else:
                raise NotImplementedError(f"alias operation {type(op).__name__}")
        atomic_write_json(self.root / "aliases.json", aliases)
        return True

    def create_payload_index(self, collection_name: str, field_name: str, field_schema: Any = None, **_: Any) -> Any:
        from qdrant_client import models
        from qdrant_edge import PayloadSchemaType, UpdateOperation

        kinds = {models.PayloadSchemaType.KEYWORD: PayloadSchemaType.Keyword,
                 models.PayloadSchemaType.INTEGER: PayloadSchemaType.Integer,
                 models.PayloadSchemaType.FLOAT: PayloadSchemaType.Float,
                 models.PayloadSchemaType.BOOL: PayloadSchemaType.Bool}
        schema = kinds.get(field_schema or models.PayloadSchemaType.KEYWORD)
        if schema is None:
            raise NotImplementedError(f"payload index type {field_schema}")
        self._shard(collection_name).update(UpdateOperation.create_field_index(field_name, schema))
        return None

    # --- points ------------------------------------------------------------------------------------

    def upsert(self, collection_name: str, points: list[Any], wait: bool = True, **_: Any) -> Any:
        from qdrant_edge import Point, UpdateOperation

        shard = self._shard(collection_name)
        shard.update(UpdateOperation.upsert_points([
            Point(str(p.id) if not isinstance(p.id, int) else p.id, _vectors(p.vector), p.payload or {})
            for p in points]))
        if wait:
            shard.flush()
        return None

    def delete(self, collection_name: str, points_selector: Any, wait: bool = True, **_: Any) -> Any:
        from qdrant_client import models
        from qdrant_edge import UpdateOperation

        shard = self._shard(collection_name)
        selector = getattr(points_selector, "filter", None) or points_selector
        if isinstance(selector, models.PointIdsList):
            shard.update(UpdateOperation.delete_points([str(i) for i in selector.points]))
        elif isinstance(selector, models.Filter):
            shard.update(UpdateOperation.delete_points_by_filter(_filter(selector)))
        else:
            raise NotImplementedError(f"points selector {type(points_selector).__name__}")
        if wait:
            shard.flush()
        return None

    def count(self, collection_name: str, count_filter: Any = None, exact: bool = True, **_: Any) -> Any:
        from qdrant_client import models
        from qdrant_edge import CountRequest

        n = self._shard(collection_name).count(CountRequest(exact=exact, filter=_filter(count_filter)))
        return models.CountResult(count=n)

    def retrieve(self, collection_name: str, ids: list[Any], with_payload: bool = True, with_vectors: bool = False,
                 **_: Any) -> list[Any]:
        recs = self._shard(collection_name).retrieve([str(i) for i in ids], with_payload, with_vectors)
        return [_record(r) for r in recs]

    def scroll(self, collection_name: str, scroll_filter: Any = None, limit: int = 10, offset: Any = None,
               with_payload: bool = True, with_vectors: bool = False, **_: Any) -> tuple[list[Any], Any]:
        from qdrant_edge import ScrollRequest

        recs, nxt = self._shard(collection_name).scroll(ScrollRequest(
            offset=offset, limit=limit, filter=_filter(scroll_filter), with_payload=with_payload,
            with_vector=with_vectors))
        return [_record(r) for r in recs], nxt

    def query_points(self, collection_name: str, query: Any = None, using: str | None = None,
                     prefetch: Any = None, query_filter: Any = None, limit: int = 10, with_payload: bool = True,
                     with_vectors: bool = False, score_threshold: float | None = None, **_: Any) -> Any:
        from qdrant_client import models
        from qdrant_edge import QueryRequest

        prefetches = [prefetch] if isinstance(prefetch, models.Prefetch) else (prefetch or [])
        hits = self._shard(collection_name).query(QueryRequest(
            limit=limit, query=_query(query, using), prefetches=[_prefetch(p) for p in prefetches] or None,
            filter=_filter(query_filter), with_payload=with_payload, with_vector=with_vectors,
            score_threshold=score_threshold))
        from qdrant_client.http.models import QueryResponse

        return QueryResponse(points=[
            models.ScoredPoint(id=_id(h.id), version=h.version, score=h.score, payload=h.payload if with_payload
                               else None, vector=_vector_out(h.vector) if with_vectors else None) for h in hits])

    def close(self) -> None:
        for shard in self._shards.values():
            try:
                shard.flush()
            finally:
                shard.close()
        self._shards.clear()
        if self._lock.is_locked:
            self._lock.release()

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # a client dropped without close still releases the folder
        with contextlib.suppress(Exception):
            self.close()


# --- model translation (qdrant_client.models -> qdrant_edge) ---------------------------------------

def _id(raw: Any) -> Any:
    return raw if isinstance(raw, int) else str(raw)


def _sparse(v: Any) -> Any:
    from qdrant_edge import SparseVector

    pairs = sorted(zip(v.indices, v.values, strict=True))  # Qdrant expects sorted indices
    return SparseVector([int(i) for i, _ in pairs], [float(x) for _, x in pairs])


def _vector_value(v: Any) -> Any:
    from qdrant_client import models

    if isinstance(v, models.SparseVector):
        return _sparse(v)
    return [float(x) for x in (v.tolist() if hasattr(v, "tolist") else v)]


def _vectors(vector: Any) -> Any:
    if isinstance(vector, dict):
        return {name: _vector_value(v) for name, v in vector.items()}
    return _vector_value(vector)


def _vector_out(v: Any) -> Any:
    from qdrant_client import models

    if isinstance(v, dict):
        return {k: _vector_out(x) for k, x in v.items()}
    if hasattr(v, "indices"):
        return models.SparseVector(indices=list(v.indices), values=list(v.values))
    return v


def _record(r: Any) -> Any:
    from qdrant_client import models

    return models.Record(id=_id(r.id), payload=r.payload, vector=_vector_out(r.vector) if r.vector else None)


def _query(query: Any, using: str | None) -> Any:
    from qdrant_client import models
    from qdrant_edge import Fusion, Query

    if query is None:
        return None
    if isinstance(query, models.FusionQuery):
        if query.fusion == models.Fusion.RRF:
            return Fusion.Rrf(k=2)  # Qdrant's default RRF constant (server and qdrant-client alike)
        return Fusion.Dbsf()
    if isinstance(query, models.RrfQuery):
        return Fusion.Rrf(k=query.rrf.k if query.rrf.k is not None else 2, weights=query.rrf.weights)
    if isinstance(query, models.NearestQuery):
        query = query.nearest
    if isinstance(query, models.SparseVector | list) or hasattr(query, "tolist"):
        return Query.Nearest(_vector_value(query), using=using)
    raise NotImplementedError(f"query type {type(query).__name__}")


def _prefetch(p: Any) -> Any:
    from qdrant_client import models
    from qdrant_edge import Prefetch

    nested = [p.prefetch] if isinstance(p.prefetch, models.Prefetch) else (p.prefetch or [])
    return Prefetch(limit=p.limit or 10, query=_query(p.query, p.using), filter=_filter(p.filter),
                    prefetches=[_prefetch(x) for x in nested] or None, score_threshold=p.score_threshold)


def _condition(c: Any) -> Any:
    from qdrant_client import models
    from qdrant_edge import FieldCondition, HasIdCondition, MatchAny, MatchExcept, MatchValue

    if isinstance(c, models.Filter):
        return _filter(c)
    if isinstance(c, models.HasIdCondition):
        return HasIdCondition({_id(i) for i in c.has_id})
    if isinstance(c, models.FieldCondition) and c.match is not None:
        m = c.match
        if isinstance(m, models.MatchValue):
            return FieldCondition(key=c.key, match=MatchValue(m.value))
        if isinstance(m, models.MatchAny):
            return FieldCondition(key=c.key, match=MatchAny(list(m.any)))
        if isinstance(m, models.MatchExcept):
            return FieldCondition(key=c.key, match=MatchExcept(list(m.except_)))
    raise NotImplementedError(f"filter condition {c!r} is not supported by the embedded engine")


def _filter(f: Any) -> Any:
    from qdrant_edge import Filter

    if f is None:
        return None

    def conds(x: Any) -> list[Any] | None:
        if x is None:
            return None
        return [_condition(c) for c in (x if isinstance(x, list) else [x])]

    return Filter(must=conds(f.must), should=conds(f.should), must_not=conds(f.must_not))

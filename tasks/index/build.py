"""index: chunk a dataset version, embed it (dense + BM25 sparse), build a Qdrant collection, verify, switch."""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks.core.provenance import provenance
from tasks.core.records import read_records
from tasks.core.workspace import (
    Workspace,
    atomic_write_json,
    new_run_id,
    read_json,
    read_jsonl,
    utc_now,
    write_jsonl,
)
from tasks.index.chunk import TokenCounter, chunk_budget, chunk_id, split_text
from tasks.index.config import IndexConfig
from tasks.index.embed import embed_texts, embedding_dim, resolve_model_path
from tasks.index.qdrant import alias_target, collections_of, switch_alias
from tasks.index.served import meta_dir, served_meta
from tasks.index.sparse import SparseParams, analyze, document_vector
from tasks.index.verify import IndexVerificationError, check_count, check_retrieval, verify_collection
from tasks.ingest.publish import latest_version

log = logging.getLogger("ragtune.index")
Progress = Callable[[int, int], None]
Embedder = Callable[..., Any]  # (texts, model, batch_size, progress) -> float32 array, like embed_texts
CHUNK_FIELDS = ("id", "doc_id", "source_uri", "title", "section", "chunk_index", "char_start", "char_end", "text",
                "content_hash")
UPSERT_BATCH = 256


@dataclass
class IndexResult:
    name: str
    collection: str
    index_version: str
    dataset_version: str
    chunks: int
    points: int
    created: bool
    previous: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)
    mode: str = "full"  # full | incremental | unchanged | reused
    changes: dict[str, Any] = field(default_factory=dict)


def index_version(dataset_version: str, cfg: IndexConfig) -> str:
    return hashlib.sha256(f"{dataset_version}:{cfg.build_fingerprint()}".encode()).hexdigest()[:12]


def embed_input(title: str, text: str) -> str:
    """What is embedded and BM25-weighted for a chunk: its document title, then its text."""
    return f"{title}\n\n{text}" if title else text


def chunk_records(records: list[dict[str, Any]], cfg: IndexConfig, progress: Progress | None = None) -> list[dict[str, Any]]:
    """Token-aware chunks of every record, each with its citation fields and a deterministic id."""
    counter = TokenCounter.from_pretrained(resolve_model_path(cfg.embedding_model))
    fp = cfg.build_fingerprint()
    chunks: list[dict[str, Any]] = []
    for n, r in enumerate(records, start=1):
        title = r["title"]
        while title and chunk_budget(counter, cfg.chunk_size, embed_input(title, "")) < cfg.chunk_size // 2:
            title = title[: len(title) * 2 // 3].rstrip() + "…"  # a pathological title must not crowd out text
        budget = chunk_budget(counter, cfg.chunk_size, embed_input(title, ""))
        overlap = min(cfg.chunk_overlap, max(budget // 4, 0))
        for i, span in enumerate(split_text(r["text"], counter, budget, overlap)):
            chunks.append({
                "id": chunk_id(r["content_hash"], fp, i), "doc_id": r["doc_id"], "source_uri": r["source_uri"],
                "title": title, "section": span.section, "chunk_index": i, "char_start": span.start,
                "char_end": span.end, "text": r["text"][span.start:span.end], "content_hash": r["content_hash"],
                "metadata": r.get("metadata") or {},
            })
        if progress and n % 500 == 0:
            progress(n, len(records))
    return chunks


def sparse_vectors(chunks: list[dict[str, Any]], cfg: IndexConfig) -> tuple[list[tuple[list[int], list[float]]], float]:
    params = SparseParams(cfg.bm25_k1, cfg.bm25_b, cfg.stemmer)
    toks = [analyze(embed_input(c["title"], c["text"]), params) for c in chunks]
    avg = sum(map(len, toks)) / max(len(toks), 1)
    return [document_vector(t, avg, params) for t in toks], avg


def _payload(c: dict[str, Any]) -> dict[str, Any]:
    meta = c.get("metadata") or {}
    return {**{k: v for k, v in meta.items() if isinstance(v, str | int | float | bool | list)},
            **{k: c[k] for k in CHUNK_FIELDS if k != "id"}}


def create_collection(client: Any, collection: str, dim: int, payload_fields: list[str]) -> None:
    from qdrant_client import models

    if client.collection_exists(collection):
        client.delete_collection(collection)  # an earlier build that never finished: start it over
    client.create_collection(
        collection,
        vectors_config={"dense": models.VectorParams(size=dim, distance=models.Distance.COSINE)},
        sparse_vectors_config={"sparse": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )

    with warnings.catch_warnings():  # local mode ignores payload indexes (and says so); servers use them
        warnings.filterwarnings("ignore", message="Payload indexes have no effect")
        for f in ["doc_id", "source_uri", *payload_fields]:
            client.create_payload_index(collection, f, field_schema=models.PayloadSchemaType.KEYWORD)


def upsert_chunks(client: Any, collection: str, chunks: list[dict[str, Any]], dense: Any,
                  sparse: list[tuple[list[int], list[float]]], progress: Progress | None = None) -> None:
    from qdrant_client import models

    for start in range(0, len(chunks), UPSERT_BATCH):
        points = [
            models.PointStruct(id=c["id"], payload=_payload(c), vector={
                "dense": dense[start + j].tolist(),
                "sparse": models.SparseVector(indices=sparse[start + j][0], values=sparse[start + j][1]),
            })
            for j, c in enumerate(chunks[start:start + UPSERT_BATCH])
        ]
        client.upsert(collection, points=points, wait=True)
        if progress:
            progress(min(start + UPSERT_BATCH, len(chunks)), len(chunks))


def record_switch(ws: Workspace, name: str, entry: dict[str, Any]) -> None:
    path = meta_dir(ws, name) / "history.jsonl"
    rows = read_jsonl(path) if path.exists() else []
    write_jsonl(path, [*rows, entry])


def prune_collections(client: Any, ws: Workspace, name: str, keep: int) -> list[str]:
    """Drop collections of this alias beyond the `keep` most recently served (never the serving one)."""
    path = meta_dir(ws, name) / "history.jsonl"
    served = [e["collection"] for e in (read_jsonl(path) if path.exists() else [])]
    recent = list(dict.fromkeys(reversed(served)))[:keep]
    current = alias_target(client, name)
    dropped = [c for c in collections_of(client, name) if c not in recent and c != current]
    for c in dropped:
        client.delete_collection(c)
    return dropped


def build_collection(client: Any, collection: str, records: list[dict[str, Any]], cfg: IndexConfig,
                     progress: Progress | None = None, embed_progress: Progress | None = None,
                     embedder: Embedder | None = None,
                     ) -> tuple[list[dict[str, Any]], float, dict[str, float]]:
    """Chunk, embed (length-sorted across all chunks), weight and upsert `records` into a new collection;
    no alias change."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    chunks = chunk_records(records, cfg)
    timings["chunk"] = time.perf_counter() - t
    t = time.perf_counter()
    dense = (embedder or embed_texts)([embed_input(c["title"], c["text"]) for c in chunks], cfg.embedding_model,
                                      cfg.embed_batch_size, embed_progress)
    timings["embed"] = time.perf_counter() - t
    t = time.perf_counter()
    sparse, avg_len = sparse_vectors(chunks, cfg)
    timings["sparse"] = time.perf_counter() - t
    t = time.perf_counter()
    create_collection(client, collection, embedding_dim(cfg.embedding_model), cfg.payload_index_fields)
    upsert_chunks(client, collection, chunks, dense, sparse, progress)
    timings["upsert"] = time.perf_counter() - t
    return chunks, avg_len, timings


def _resolve_dataset(ws: Workspace, cfg: IndexConfig) -> str:
    dataset_version = cfg.dataset_version or latest_version(ws, cfg.dataset)
    if not dataset_version:
        raise FileNotFoundError(f"no {cfg.dataset} dataset in {ws.root}: run `ragtune ingest` first")
    return dataset_version


def _load_records(ws: Workspace, cfg: IndexConfig, dataset_version: str) -> list[dict[str, Any]]:
    path = ws.dataset_dir(cfg.dataset) / dataset_version / "records.parquet"
    return sorted(read_records(path), key=lambda r: r["doc_id"])


def _serves(meta: dict[str, Any] | None, dataset_version: str, cfg: IndexConfig) -> bool:
    """The served collection already holds this dataset version, built with this configuration."""
    return bool(meta and meta.get("complete") and not meta.get("pending")
                and meta.get("dataset_version") == dataset_version
                and meta.get("build_fingerprint") == cfg.build_fingerprint())


def build_index(ws: Workspace, cfg: IndexConfig, client: Any, progress: Progress | None = None,
                embed_progress: Progress | None = None, embedder: Embedder | None = None) -> IndexResult:
    """Build (or find) the collection for the dataset version, verify it, then move the alias to it."""
    dataset_version = _resolve_dataset(ws, cfg)
    version = index_version(dataset_version, cfg)
    collection = f"{cfg.name}__{version}"
    meta_path = ws.index_meta_path(collection)
    current, served = served_meta(ws, client, cfg.name)
    if current and _serves(served, dataset_version, cfg):  # e.g. brought up to date by an incremental run
        return IndexResult(cfg.name, current, served["index_version"], dataset_version, served["chunks"],
                           served["points"], False, None, {}, served.get("check", {}), mode="unchanged")

    for kept in collections_of(client, cfg.name):  # built before (a rollback target): serve it again
        meta = read_json(ws.index_meta_path(kept), default=None)
        if kept != current and _serves(meta, dataset_version, cfg):
            switch_alias(client, cfg.name, kept)
            record_switch(ws, cfg.name, {"collection": kept, "index_version": meta["index_version"],
                                         "dataset_version": dataset_version, "at": utc_now(), "reason": "reuse"})
            return IndexResult(cfg.name, kept, meta["index_version"], dataset_version, meta["chunks"],
                               meta["points"], False, current, {}, meta.get("check", {}), mode="reused")
    if client.collection_exists(collection) and (
            collection == current or (read_json(meta_path, default=None) or {}).get("complete")):
        # the name is taken by a collection updated in place since: build beside it, never over it
        collection = f"{collection}-{new_run_id().lower()}"
        meta_path = ws.index_meta_path(collection)
    records = _load_records(ws, cfg, dataset_version)
    atomic_write_json(meta_path, {"collection": collection, "complete": False, "started_at": utc_now()})
    chunks, avg_len, timings = build_collection(client, collection, records, cfg, progress, embed_progress, embedder)
    t = time.perf_counter()
    check = verify_collection(client, collection, chunks, cfg)
    timings["verify"] = time.perf_counter() - t
    per_doc = Counter(c["doc_id"] for c in chunks)
    atomic_write_json(meta_path, {
        "collection": collection, "index_version": version, "dataset": cfg.dataset,
        "dataset_version": dataset_version, "config": cfg.model_dump(mode="json"),
        "build_fingerprint": cfg.build_fingerprint(), "chunks": len(chunks), "points": check["points"],
        "documents": len(records), "avg_sparse_len": avg_len,
        "docs": {r["doc_id"]: [r["content_hash"], per_doc.get(r["doc_id"], 0)] for r in records},
        "check": check, "timings": timings, "updates": [], "complete": True, "built_at": utc_now(), **provenance(),
    })
    previous = switch_alias(client, cfg.name, collection)
    record_switch(ws, cfg.name, {"collection": collection, "index_version": version,
                                 "dataset_version": dataset_version, "at": utc_now(), "reason": "build"})
    dropped = prune_collections(client, ws, cfg.name, cfg.keep_collections)
    log.info("index %s -> %s (%d chunks); previous %s; dropped %s", cfg.name, collection, len(chunks), previous, dropped)
    return IndexResult(cfg.name, collection, version, dataset_version, len(chunks), check["points"], True, previous,
                       timings, check, mode="full")


def _doc_filter(doc_ids: list[str], keep_hashes: list[str]) -> Any:
    """Points of these documents whose content hash is not a current one (stale or removed)."""
    from qdrant_client import models

    return models.Filter(
        must=[models.FieldCondition(key="doc_id", match=models.MatchAny(any=doc_ids))],
        must_not=[models.FieldCondition(key="content_hash", match=models.MatchAny(any=keep_hashes))] if keep_hashes else [],
    )


def update_index(ws: Workspace, cfg: IndexConfig, client: Any, progress: Progress | None = None,
                 embed_progress: Progress | None = None, embedder: Embedder | None = None) -> IndexResult:
    """Incremental mode: bring the served collection up to the dataset version in place. Only new and changed
    documents are chunked and embedded; points of changed and removed documents are deleted; the rest is
    untouched. Falls back to a full build when nothing is served yet or the chunking/embedding config changed.

    Safe order: a journal (`pending`) is written first, new points are upserted (their ids differ from the
    stale ones because ids derive from the content hash), then checked; a failed check deletes exactly the
    points this run added, so the collection is as before. Only then are stale points deleted. A run killed at
    any point leaves every document searchable, and the next run finishes the journal's work."""
    dataset_version = _resolve_dataset(ws, cfg)
    current, meta = served_meta(ws, client, cfg.name)
    if current is None or not meta or not meta.get("complete"):
        log.info("incremental index %s: nothing served yet, building in full", cfg.name)
        return build_index(ws, cfg, client, progress, embed_progress, embedder)
    if meta.get("build_fingerprint") != cfg.build_fingerprint():
        log.info("incremental index %s: chunking or embedding settings changed, building in full", cfg.name)
        return build_index(ws, cfg, client, progress, embed_progress, embedder)
    if _serves(meta, dataset_version, cfg):
        return IndexResult(cfg.name, current, meta["index_version"], dataset_version, meta["chunks"], meta["points"],
                           False, None, {}, meta.get("check", {}), mode="unchanged")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    records = _load_records(ws, cfg, dataset_version)
    desired = {r["doc_id"]: r["content_hash"] for r in records}
    old: dict[str, list[Any]] = meta["docs"]
    pending = meta.get("pending") or {}
    changed = sorted(d for d in desired if d in old and old[d][0] != desired[d])
    added = sorted(d for d in desired if d not in old)
    redo = sorted(d for d in pending.get("upsert", []) if d in desired and d not in changed and d not in added)
    removed = sorted((set(old) | set(pending.get("removed", [])) | set(pending.get("upsert", []))) - set(desired))
    touched = sorted({*changed, *added, *redo})
    meta_path = ws.index_meta_path(current)
    atomic_write_json(meta_path, {**meta, "pending": {"dataset_version": dataset_version, "upsert": touched,
                                                      "removed": removed, "started_at": utc_now()}})
    by_id = {r["doc_id"]: r for r in records}
    chunks = chunk_records([by_id[d] for d in touched], cfg)
    timings["chunk"] = time.perf_counter() - t0
    new_ids: list[str] = []
    if chunks:
        t = time.perf_counter()
        dense = (embedder or embed_texts)([embed_input(c["title"], c["text"]) for c in chunks],
                                          cfg.embedding_model, cfg.embed_batch_size, embed_progress)
        timings["embed"] = time.perf_counter() - t
        t = time.perf_counter()
        params = SparseParams(cfg.bm25_k1, cfg.bm25_b, cfg.stemmer)
        avg = meta["avg_sparse_len"]  # document-side length normalisation keeps the full build's average
        sparse = [document_vector(analyze(embed_input(c["title"], c["text"]), params), avg, params) for c in chunks]
        timings["sparse"] = time.perf_counter() - t
        t = time.perf_counter()
        existing = {str(p.id) for p in client.retrieve(current, ids=[c["id"] for c in chunks], with_payload=False,
                                                        with_vectors=False)}
        new_ids = [c["id"] for c in chunks if c["id"] not in existing]
        upsert_chunks(client, current, chunks, dense, sparse, progress)
        timings["upsert"] = time.perf_counter() - t
    t = time.perf_counter()
    try:
        check = check_retrieval(client, current, chunks, cfg) if chunks or cfg.verify_queries else {}
    except IndexVerificationError:
        if new_ids:
            from qdrant_client import models

            client.delete(current, points_selector=models.PointIdsList(points=new_ids), wait=True)
        atomic_write_json(meta_path, meta)  # as before this run: nothing of it remains
        raise
    timings["verify"] = time.perf_counter() - t
    t = time.perf_counter()
    stale = sorted({*changed, *redo, *removed})
    if stale:
        client.delete(current, points_selector=_doc_filter(stale, [desired[d] for d in stale if d in desired]),
                      wait=True)
    timings["delete"] = time.perf_counter() - t
    per_doc = Counter(c["doc_id"] for c in chunks)
    docs = {d: ([h, per_doc[d]] if d in per_doc else old[d]) for d, h in desired.items()}
    expected = sum(n for _, n in docs.values())
    points = check_count(client, current, expected)
    version = index_version(dataset_version, cfg)
    stats = {"added": len(added), "changed": len(changed), "removed": len(removed), "resumed": len(redo),
             "chunks_embedded": len(chunks), "from_dataset_version": meta["dataset_version"]}
    update = {"at": utc_now(), "dataset_version": dataset_version, "index_version": version, **stats,
              "timings": timings}
    new_meta = {k: v for k, v in meta.items() if k != "pending"}
    new_meta.update({"index_version": version, "dataset_version": dataset_version, "chunks": expected,
                     "points": points, "documents": len(docs), "docs": docs,
                     "check": {"points": points, **check} if check else meta.get("check", {}),
                     "updates": [*meta.get("updates", []), update], "updated_at": update["at"]})
    atomic_write_json(meta_path, new_meta)
    record_switch(ws, cfg.name, {"collection": current, "index_version": version, "dataset_version": dataset_version,
                                 "at": update["at"], "reason": "incremental", **stats})
    log.info("incremental index %s (%s): %s", cfg.name, current, stats)
    return IndexResult(cfg.name, current, version, dataset_version, expected, points, True, None, timings,
                       new_meta["check"], mode="incremental", changes=stats)


def rollback_index(ws: Workspace, client: Any, name: str) -> tuple[str, str]:
    """Serve the collection that was served before the current one; returns (from, to)."""
    path = meta_dir(ws, name) / "history.jsonl"
    current = alias_target(client, name)
    served = [e["collection"] for e in (read_jsonl(path) if path.exists() else [])]
    earlier = [c for c in reversed(served) if c != current and client.collection_exists(c)]
    if current is None or not earlier:
        raise RuntimeError(f"no earlier collection of index {name!r} to roll back to")
    switch_alias(client, name, earlier[0])
    record_switch(ws, name, {"collection": earlier[0], "at": utc_now(), "reason": f"rollback from {current}"})
    return current, earlier[0]

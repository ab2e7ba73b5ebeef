"""index: chunk a dataset version, embed it (dense + BM25 sparse), build a Qdrant collection, verify, switch."""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.config import IndexConfig
from tasks.provenance import provenance
from tasks.workspace import Workspace, atomic_write_json, read_json, read_jsonl, utc_now, write_jsonl

log = logging.getLogger("ragtune.index")
Progress = Callable[[int, int], None]
CHUNK_FIELDS = ("id", "doc_id", "source_uri", "title", "section", "chunk_index", "char_start", "char_end", "text",
                "content_hash")
UPSERT_BATCH = 256


class IndexVerificationError(RuntimeError):
    """A freshly built collection failed its checks: the alias stays where it was."""


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


def meta_dir(ws: Workspace, name: str) -> Path:
    return ws.root / "indexes" / name


def index_version(dataset_version: str, cfg: IndexConfig) -> str:
    return hashlib.sha256(f"{dataset_version}:{cfg.build_fingerprint()}".encode()).hexdigest()[:12]


def embed_input(title: str, text: str) -> str:
    """What is embedded and BM25-weighted for a chunk: its document title, then its text."""
    return f"{title}\n\n{text}" if title else text


def chunk_records(records: list[dict[str, Any]], cfg: IndexConfig, progress: Progress | None = None) -> list[dict[str, Any]]:
    """Token-aware chunks of every record, each with its citation fields and a deterministic id."""
    from tasks.chunk import TokenCounter, chunk_budget, chunk_id, split_text
    from tasks.embed import resolve_model_path

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
    from tasks.sparse import SparseParams, analyze, document_vector

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
    import warnings

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


def verify_collection(client: Any, collection: str, chunks: list[dict[str, Any]], cfg: IndexConfig) -> dict[str, Any]:
    """Point count equals chunk count, and sampled chunks find themselves in the top k (hybrid search)."""
    from tasks.search import search_collection

    points = client.count(collection, exact=True).count
    if points != len(chunks):
        raise IndexVerificationError(f"{collection} holds {points} points for {len(chunks)} chunks")
    sample = random.Random(0).sample(chunks, min(cfg.verify_sample, len(chunks)))
    from tasks.embed import embed_texts

    vectors = embed_texts([c["text"] for c in sample], cfg.embedding_model)  # one encode call for the sample
    misses = [c["id"] for c, v in zip(sample, vectors, strict=True)
              if c["id"] not in {h["id"] for h in search_collection(client, collection, c["text"], cfg, cfg.verify_k,
                                                                    dense_vector=v.tolist())}]
    check = {"points": points, "sampled": len(sample), "self_hits": len(sample) - len(misses), "k": cfg.verify_k}
    if misses:
        raise IndexVerificationError(
            f"{len(misses)} of {len(sample)} sampled chunks are not in the top {cfg.verify_k} for their own text")
    return check


def record_switch(ws: Workspace, name: str, entry: dict[str, Any]) -> None:
    path = meta_dir(ws, name) / "history.jsonl"
    rows = read_jsonl(path) if path.exists() else []
    write_jsonl(path, [*rows, entry])


def prune_collections(client: Any, ws: Workspace, name: str, keep: int) -> list[str]:
    """Drop collections of this alias beyond the `keep` most recently served (never the serving one)."""
    from tasks.qdrant import alias_target, collections_of

    path = meta_dir(ws, name) / "history.jsonl"
    served = [e["collection"] for e in (read_jsonl(path) if path.exists() else [])]
    recent = list(dict.fromkeys(reversed(served)))[:keep]
    current = alias_target(client, name)
    dropped = [c for c in collections_of(client, name) if c not in recent and c != current]
    for c in dropped:
        client.delete_collection(c)
    return dropped


def build_collection(client: Any, collection: str, records: list[dict[str, Any]], cfg: IndexConfig,
                     progress: Progress | None = None) -> tuple[list[dict[str, Any]], float, dict[str, float]]:
    """Chunk, embed (one encode call), weight and upsert `records` into a new collection; no alias change."""
    from tasks.embed import embed_texts, embedding_dim

    timings: dict[str, float] = {}
    t = time.perf_counter()
    chunks = chunk_records(records, cfg)
    timings["chunk"] = time.perf_counter() - t
    t = time.perf_counter()
    dense = embed_texts([embed_input(c["title"], c["text"]) for c in chunks], cfg.embedding_model, cfg.embed_batch_size)
    timings["embed"] = time.perf_counter() - t
    t = time.perf_counter()
    sparse, avg_len = sparse_vectors(chunks, cfg)
    timings["sparse"] = time.perf_counter() - t
    t = time.perf_counter()
    create_collection(client, collection, embedding_dim(cfg.embedding_model), cfg.payload_index_fields)
    upsert_chunks(client, collection, chunks, dense, sparse, progress)
    timings["upsert"] = time.perf_counter() - t
    return chunks, avg_len, timings


def build_index(ws: Workspace, cfg: IndexConfig, client: Any, progress: Progress | None = None) -> IndexResult:
    """Build (or find) the collection for the dataset version, verify it, then move the alias to it."""
    from tasks.publish import latest_version
    from tasks.qdrant import alias_target, switch_alias
    from tasks.records import read_records

    dataset_version = cfg.dataset_version or latest_version(ws, cfg.dataset)
    if not dataset_version:
        raise FileNotFoundError(f"no {cfg.dataset} dataset in {ws.root}: run `ragtune ingest` first")
    version = index_version(dataset_version, cfg)
    collection = f"{cfg.name}__{version}"
    meta_path = meta_dir(ws, cfg.name) / f"{version}.json"
    meta = read_json(meta_path, default=None)
    current = alias_target(client, cfg.name)
    if meta and meta.get("complete") and client.collection_exists(collection):
        if current != collection:  # built before (a rollback target): serve it again without rebuilding
            switch_alias(client, cfg.name, collection)
            record_switch(ws, cfg.name, {"collection": collection, "index_version": version,
                                         "dataset_version": dataset_version, "at": utc_now(), "reason": "reuse"})
        return IndexResult(cfg.name, collection, version, dataset_version, meta["chunks"], meta["points"], False,
                           current if current != collection else None, {}, meta.get("check", {}))
    path = ws.dataset_dir(cfg.dataset) / dataset_version / "records.parquet"
    records = sorted(read_records(path), key=lambda r: r["doc_id"])
    atomic_write_json(meta_path, {"collection": collection, "complete": False, "started_at": utc_now()})
    chunks, avg_len, timings = build_collection(client, collection, records, cfg, progress)
    t = time.perf_counter()
    check = verify_collection(client, collection, chunks, cfg)
    timings["verify"] = time.perf_counter() - t
    atomic_write_json(meta_path, {
        "collection": collection, "index_version": version, "dataset": cfg.dataset,
        "dataset_version": dataset_version, "config": cfg.model_dump(mode="json"), "chunks": len(chunks),
        "points": check["points"], "documents": len(records), "avg_sparse_len": avg_len,
        "docs": {r["doc_id"]: r["content_hash"] for r in records}, "check": check, "timings": timings,
        "complete": True, "built_at": utc_now(), **provenance(),
    })
    previous = switch_alias(client, cfg.name, collection)
    record_switch(ws, cfg.name, {"collection": collection, "index_version": version,
                                 "dataset_version": dataset_version, "at": utc_now(), "reason": "build"})
    dropped = prune_collections(client, ws, cfg.name, cfg.keep_collections)
    log.info("index %s -> %s (%d chunks); previous %s; dropped %s", cfg.name, collection, len(chunks), previous, dropped)
    return IndexResult(cfg.name, collection, version, dataset_version, len(chunks), check["points"], True, previous,
                       timings, check)


def rollback_index(ws: Workspace, client: Any, name: str) -> tuple[str, str]:
    """Serve the collection that was served before the current one; returns (from, to)."""
    from tasks.qdrant import alias_target, switch_alias

    path = meta_dir(ws, name) / "history.jsonl"
    current = alias_target(client, name)
    served = [e["collection"] for e in (read_jsonl(path) if path.exists() else [])]
    earlier = [c for c in reversed(served) if c != current and client.collection_exists(c)]
    if current is None or not earlier:
        raise RuntimeError(f"no earlier collection of index {name!r} to roll back to")
    switch_alias(client, name, earlier[0])
    record_switch(ws, name, {"collection": earlier[0], "at": utc_now(), "reason": f"rollback from {current}"})
    return current, earlier[0]


# --- Prefect tasks -----------------------------------------------------------------------------

from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402


@task(name="build_index", cache_policy=NO_CACHE)
def build_index_task(home: str, config: IndexConfig) -> IndexResult:
    from tasks.qdrant import open_client
    from tasks.report import progress_reporter

    ws = Workspace(Path(home))
    client = open_client(ws)
    try:
        return build_index(ws, config, client, progress_reporter("index: points upserted"))
    finally:
        client.close()

"""search: dense, sparse (BM25) or hybrid (Query API prefetch + RRF) over a collection, with payload filters."""

from __future__ import annotations

from typing import Any

from tasks.index.config import IndexConfig
from tasks.index.embed import embed_texts
from tasks.index.sparse import SparseParams, query_vector

MODES = ("dense", "sparse", "hybrid")


def build_filter(filters: dict[str, str] | None) -> Any:
    if not filters:
        return None
    from qdrant_client import models

    return models.Filter(must=[models.FieldCondition(key=k, match=models.MatchValue(value=v)) for k, v in filters.items()])


def search_collection(client: Any, collection: str, query: str, cfg: IndexConfig, k: int = 10, mode: str = "hybrid",
                      filters: dict[str, str] | None = None, prefetch: int | None = None,
                      dense_vector: list[float] | None = None) -> list[dict[str, Any]]:
    """Top-k hits, each with its id, score and citation payload (doc_id, source_uri, title, section, text).
    `dense_vector` skips embedding the query (callers that embed many queries in one call)."""
    from qdrant_client import models

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    flt = build_filter(filters)
    idx, vals = query_vector(query, SparseParams(cfg.bm25_k1, cfg.bm25_b, cfg.stemmer))
    sparse = models.SparseVector(indices=idx, values=vals)
    if mode == "sparse":
        if not idx:
            return []
        res = client.query_points(collection, query=sparse, using="sparse", limit=k, query_filter=flt, with_payload=True)
    else:
        dense = dense_vector if dense_vector is not None else embed_texts([query], cfg.embedding_model)[0].tolist()
        if mode == "dense" or not idx:
            res = client.query_points(collection, query=dense, using="dense", limit=k, query_filter=flt, with_payload=True)
        else:
            depth = prefetch or max(k * 5, 50)
            res = client.query_points(
                collection,
                prefetch=[models.Prefetch(query=dense, using="dense", limit=depth, filter=flt),
                          models.Prefetch(query=sparse, using="sparse", limit=depth, filter=flt)],
                query=models.FusionQuery(fusion=models.Fusion.RRF), limit=2 * k, with_payload=True,
            )
            # RRF gives mirrored ranks (1st dense + 3rd sparse, 3rd dense + 1st sparse) equal scores, and the
            # engine orders ties arbitrarily from one call to the next: order them by id, then cut to k, so
            # the same query always gets the same passages (and an evaluation or an answer is repeatable)
            return [_hit(p) for p in sorted(res.points, key=lambda p: (-round(p.score, 9), str(p.id)))[:k]]
    return [_hit(p) for p in res.points]


def _hit(p: Any) -> dict[str, Any]:
    return {"id": str(p.id), "score": float(p.score), **(p.payload or {})}


def location(hit: dict[str, Any]) -> str:
    """`Title > section` of a hit, without repeating a section path that starts with the title."""
    title, section = hit.get("title") or "", hit.get("section") or ""
    if section == title or section.startswith(f"{title} > "):
        section = section[len(title):].removeprefix(" > ")
    return f"{title} > {section}" if section else title

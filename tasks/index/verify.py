"""Checks that a built collection is complete and retrieves what it should, before the alias moves to it."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from tasks.index.config import IndexConfig
from tasks.index.embed import embed_texts
from tasks.index.search import search_collection


def load_labelled_queries(path: str | Path) -> list[tuple[str, set[str]]]:
    """(question, relevant doc ids) from JSONL lines with `question` (or `query`) and `doc_id` (or `doc_ids`)."""

    out: list[tuple[str, set[str]]] = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            question = row.get("question") or row.get("query")
            docs = row.get("doc_ids") or ([row["doc_id"]] if row.get("doc_id") else [])
        except (json.JSONDecodeError, AttributeError) as exc:
            raise ValueError(f"{path}:{n}: not a JSON object ({exc})") from None
        if not isinstance(question, str) or not question.strip() or not docs:
            raise ValueError(f"{path}:{n}: a labelled query needs `question` and `doc_id`")
        out.append((question, {str(d) for d in docs}))
    if not out:
        raise ValueError(f"{path}: no labelled queries")
    return out


def check_retrieval(client: Any, collection: str, sample_pool: list[dict[str, Any]], cfg: IndexConfig) -> dict[str, Any]:
    """The retrieval check: doc recall@k on the labelled query set when the config names one, otherwise
    every sampled chunk (from `sample_pool`) must find itself in the top k of a hybrid search for its text."""
    if cfg.verify_queries:
        labelled = load_labelled_queries(cfg.verify_queries)
        vectors = embed_texts([q for q, _ in labelled], cfg.embedding_model)
        found = [bool(rel & {h["doc_id"] for h in search_collection(client, collection, q, cfg, cfg.verify_k,
                                                                    dense_vector=v.tolist())})
                 for (q, rel), v in zip(labelled, vectors, strict=True)]
        recall = sum(found) / len(found)
        check = {"kind": "labelled", "queries": len(found), "recall": round(recall, 4), "k": cfg.verify_k,
                 "min_recall": cfg.verify_min_recall}
        if recall < cfg.verify_min_recall:
            raise IndexVerificationError(f"doc recall@{cfg.verify_k} {recall:.3f} on {cfg.verify_queries} is below "
                                         f"{cfg.verify_min_recall}")
        return check
    sample = random.Random(0).sample(sample_pool, min(cfg.verify_sample, len(sample_pool)))
    vectors = embed_texts([c["text"] for c in sample], cfg.embedding_model)  # one encode call for the sample
    misses = [c["id"] for c, v in zip(sample, vectors, strict=True)
              if c["id"] not in {h["id"] for h in search_collection(client, collection, c["text"], cfg, cfg.verify_k,
                                                                    dense_vector=v.tolist())}]
    check = {"kind": "self", "sampled": len(sample), "self_hits": len(sample) - len(misses), "k": cfg.verify_k}
    if misses:
        raise IndexVerificationError(
            f"{len(misses)} of {len(sample)} sampled chunks are not in the top {cfg.verify_k} for their own text")
    return check


def check_count(client: Any, collection: str, expected: int) -> int:
    points = client.count(collection, exact=True).count
    if points != expected:
        raise IndexVerificationError(f"{collection} holds {points} points for {expected} chunks")
    return points


def verify_collection(client: Any, collection: str, chunks: list[dict[str, Any]], cfg: IndexConfig) -> dict[str, Any]:
    """Point count equals chunk count, and the retrieval check passes."""
    points = check_count(client, collection, len(chunks))
    return {"points": points, **check_retrieval(client, collection, chunks, cfg)}


def describe_check(check: dict[str, Any]) -> str:
    """One line for the retrieval check of an index build or update."""
    if check.get("kind") == "labelled":
        return (f"labelled queries: doc recall@{check['k']} {check['recall']:.3f} over {check['queries']} queries "
                f"(minimum {check['min_recall']})")
    if "sampled" in check:
        return f"self-retrieval: {check['self_hits']}/{check['sampled']} sampled chunks in their own top {check['k']}"
    return "no retrieval check (nothing new to check)"


class IndexVerificationError(RuntimeError):
    """A freshly built collection failed its checks: the alias stays where it was."""

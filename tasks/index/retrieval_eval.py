"""Retrieval evaluation on BEIR-format files: build an index the way `ragtune index` does, score with pytrec_eval."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.records import sha256_text
from tasks.index.build import build_collection
from tasks.index.config import IndexConfig
from tasks.index.embed import embed_texts
from tasks.index.search import search_collection


def load_corpus(path: Path) -> list[dict[str, Any]]:
    """BEIR corpus lines `{_id, title, text}` as ragtune records (doc_id = _id)."""
    records = []
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                doc_id, text = str(d["_id"]), d["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{n}: not a BEIR corpus line ({exc})") from None
            records.append({"doc_id": doc_id, "unit": f"{path}#{doc_id}", "source_uri": f"beir:{doc_id}",
                            "title": d.get("title") or "", "text": text or "", "metadata": {},
                            "content_hash": sha256_text(text or "")})
    return records


def load_queries(path: Path) -> dict[str, str]:
    with Path(path).open(encoding="utf-8") as fh:
        return {str(d["_id"]): d["text"] for d in map(json.loads, filter(str.strip, fh))}


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """`query-id corpus-id score` lines after a header (tab or space separated)."""
    qrels: dict[str, dict[str, int]] = {}
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            parts = line.split()
            if not parts or (n == 0 and not parts[-1].lstrip("-").isdigit()):
                continue
            qid, did, score = parts[0], parts[1], int(parts[-1])
            qrels.setdefault(qid, {})[did] = score
    return qrels


def doc_run(hits: list[dict[str, Any]]) -> dict[str, float]:
    """Chunk hits to document scores: each document scores as its best chunk."""
    run: dict[str, float] = {}
    for h in hits:
        run[h["doc_id"]] = max(run.get(h["doc_id"], float("-inf")), float(h["score"]))
    return run


def score_runs(qrels: dict[str, dict[str, int]], runs: dict[str, dict[str, float]]) -> dict[str, float]:
    """nDCG@10, recall@10, recall@100 and MRR@10 averaged over the judged queries (pytrec_eval)."""
    import pytrec_eval

    def top(run: dict[str, float], k: int) -> dict[str, float]:
        return dict(sorted(run.items(), key=lambda kv: (-kv[1], kv[0]))[:k])

    judged = {q: r for q, r in qrels.items() if q in runs}
    ev = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10", "recall.10", "recall.100"})
    full = ev.evaluate({q: top(runs[q], 100) for q in judged})
    mrr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate({q: top(runs[q], 10) for q in judged})
    n = max(len(judged), 1)
    return {
        "ndcg@10": sum(v["ndcg_cut_10"] for v in full.values()) / n,
        "recall@10": sum(v["recall_10"] for v in full.values()) / n,
        "recall@100": sum(v["recall_100"] for v in full.values()) / n,
        "mrr@10": sum(v["recip_rank"] for v in mrr.values()) / n,
        "queries": len(judged),
    }


def evaluate_retrieval(client: Any, corpus: Path, queries: Path, qrels: Path, modes: list[str], cfg: IndexConfig,
                       collection: str = "eval__beir") -> dict[str, Any]:
    """Index the corpus into `collection` (same chunking, embedding and weighting as `ragtune index`) and
    score every mode on the queries that have judgements."""
    judged = load_qrels(qrels)
    qtext = {q: t for q, t in load_queries(queries).items() if q in judged}
    records = load_corpus(corpus)
    chunks, _, timings = build_collection(client, collection, records, cfg)
    qids = sorted(qtext)
    t = time.perf_counter()
    qvecs = embed_texts([qtext[q] for q in qids], cfg.embedding_model) if qids else []
    timings["embed_queries"] = time.perf_counter() - t
    results: dict[str, Any] = {"documents": len(records), "chunks": len(chunks), "timings": timings, "modes": {}}
    depth = 300  # chunks per query: enough distinct documents for recall@100
    for mode in modes:
        t = time.perf_counter()
        runs = {q: doc_run(search_collection(client, collection, qtext[q], cfg, depth, mode, prefetch=depth,
                                             dense_vector=qvecs[i].tolist()))
                for i, q in enumerate(qids)}
        elapsed = time.perf_counter() - t
        results["modes"][mode] = {"mode": mode, **score_runs(judged, runs),
                                  "ms_per_query": 1000 * elapsed / max(len(qids), 1)}
    return results


def retrieval_metrics(runs: dict[str, list[str]], relevant: dict[str, set[str]], ks: Sequence[int] = (1, 3, 10),
                      ) -> dict[str, float]:
    """Doc-level recall@k, MRR@10 and nDCG@10 (binary relevance, pytrec_eval) of ranked doc ids per question."""
    import pytrec_eval

    qids = [q for q in runs if relevant.get(q)]
    if not qids:
        return {"questions": 0}
    qrels = {q: dict.fromkeys(relevant[q], 1) for q in qids}
    run = {q: {d: float(len(runs[q]) - i) for i, d in enumerate(dict.fromkeys(runs[q]))} for q in qids}
    measures = {"ndcg_cut.10", "recall." + ",".join(str(k) for k in ks)}
    scores = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    top10 = {q: dict(list(r.items())[:10]) for q, r in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    out = {f"recall@{k}": float(np.mean([scores[q][f"recall_{k}"] for q in qids])) for k in ks}
    out["mrr@10"] = float(np.mean([rr[q]["recip_rank"] for q in qids]))
    out["ndcg@10"] = float(np.mean([scores[q]["ndcg_cut_10"] for q in qids]))
    out["questions"] = len(qids)
    return out

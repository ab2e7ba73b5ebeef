"""Retrieval quality on BEIR SciFact (test split, 300 queries) for dense, sparse and hybrid search.

References: BM25 nDCG@10 0.665 (BEIR paper) to 0.687 (bm25s); all-MiniLM-L6-v2 0.645 (MTEB).
Targets: sparse >= 0.66, dense >= 0.64, hybrid >= 0.69 and above both. The corpus is indexed through the
same code as `ragtune index` (title included); embedding it takes minutes on 2 CPU cores.

    python bench/retrieval_scifact.py [--data DIR] [--chunk-size N] [--chunk-overlap N]
"""

from __future__ import annotations

import argparse
import json
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
    args = ap.parse_args()
    from tasks.config import IndexConfig
    from tasks.qdrant import open_local
    from tasks.retrieval_eval import evaluate_retrieval

    data = Path(args.data)
    updates = {k: v for k, v in {"chunk_size": args.chunk_size, "chunk_overlap": args.chunk_overlap}.items() if v}
    cfg = IndexConfig.model_validate({**IndexConfig().model_dump(), **updates})
    with tempfile.TemporaryDirectory(prefix="ragtune-scifact-") as tmp:
        client = open_local(Path(tmp))
        t = time.perf_counter()
        res = evaluate_retrieval(client, data / "corpus.jsonl", data / "queries.jsonl", data / "qrels" / "test.tsv",
                                 ["sparse", "dense", "hybrid"], cfg)
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


if __name__ == "__main__":
    main()

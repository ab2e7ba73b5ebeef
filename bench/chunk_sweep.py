"""Chunk size and overlap, chosen by measurement: nDCG@10 per setting on a SciFact slice (every judged
document of the test queries plus random distractors), through the same code as `ragtune eval-retrieval`.

    python bench/chunk_sweep.py [--data DIR] [--distractors N] [--settings 96/16,128/16,192/32,256/32]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def write_slice(data: Path, out: Path, distractors: int, seed: int = 0) -> tuple[Path, int]:
    """corpus.jsonl with the judged documents and `distractors` others; returns its path and size."""
    from tasks.index.retrieval_eval import load_qrels

    judged = {d for rel in load_qrels(data / "qrels" / "test.tsv").values() for d in rel}
    lines = (data / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    keep = [ln for ln in lines if json.loads(ln)["_id"] in judged]
    others = [ln for ln in lines if json.loads(ln)["_id"] not in judged]
    keep += random.Random(seed).sample(others, min(distractors, len(others)))
    path = out / "corpus.jsonl"
    path.write_text("\n".join(keep) + "\n", encoding="utf-8")
    return path, len(keep)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"))
    ap.add_argument("--distractors", type=int, default=1000)
    ap.add_argument("--settings", default="96/16,128/16,192/32,256/32", help="size/overlap pairs in tokens")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from tasks.index.config import IndexConfig
    from tasks.index.qdrant import open_local
    from tasks.index.retrieval_eval import evaluate_retrieval

    data = Path(args.data)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ragtune-sweep-") as tmp:
        corpus, n_docs = write_slice(data, Path(tmp), args.distractors)
        for setting in args.settings.split(","):
            size, overlap = (int(x) for x in setting.split("/"))
            cfg = IndexConfig(chunk_size=size, chunk_overlap=overlap)
            client = open_local(Path(tmp) / f"q{size}-{overlap}")
            t = time.perf_counter()
            res = evaluate_retrieval(client, corpus, data / "queries.jsonl", data / "qrels" / "test.tsv",
                                     ["sparse", "dense", "hybrid"], cfg)
            client.close()
            rows.append({"chunk_size": size, "chunk_overlap": overlap, "chunks": res["chunks"],
                         "seconds": time.perf_counter() - t,
                         **{f"{m}_ndcg@10": res["modes"][m]["ndcg@10"] for m in ("sparse", "dense", "hybrid")},
                         "hybrid_recall@100": res["modes"]["hybrid"]["recall@100"]})
    if args.json:
        print(json.dumps({"documents": n_docs, "rows": rows}))
        return
    print(f"SciFact slice: {n_docs} documents (judged + {args.distractors} distractors), 300 test queries")
    print(f"{'size/overlap':<13} {'chunks':>7} {'sparse':>7} {'dense':>7} {'hybrid':>7} {'hyb R@100':>9} {'time':>6}")
    for r in sorted(rows, key=lambda r: -r["hybrid_ndcg@10"]):
        print(f"{r['chunk_size']:>4}/{r['chunk_overlap']:<8} {r['chunks']:>7} {r['sparse_ndcg@10']:>7.4f} "
              f"{r['dense_ndcg@10']:>7.4f} {r['hybrid_ndcg@10']:>7.4f} {r['hybrid_recall@100']:>9.4f} "
              f"{r['seconds']:>5.0f}s")


if __name__ == "__main__":
    main()

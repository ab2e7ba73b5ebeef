"""Index throughput and query latency on BEIR SciFact, each against a baseline measured in the same run.

1. raw: `SentenceTransformer.encode` of every chunk text (one call, the model already loaded).
2. full: `build_index` end to end (chunk, embed, BM25 weights, upsert, count + retrieval check, alias).
   Target: chunks/s of the embedding pipeline (chunk + embed + sparse) >= 0.90 x raw; the end-to-end figure,
   which adds Qdrant's upsert and the check, is printed beside it.
3. no-op: `update_index` on the unchanged dataset. Target <= 2% of the full time; the embedding model is
   unloaded first, and the run must not load it again.
4. 1% change: 1% of the documents edited, published as a new dataset version, `update_index`.
   Target <= 5% of the full time.
5. query latency p50/p95 for dense, sparse and hybrid, each query embedded on its own (as served).
   Target: hybrid p50 <= 50 ms.

    python bench/index_throughput.py [--data DIR] [--docs N] [--queries N] [--json]
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGETS = {"pipeline_vs_raw": 0.90, "noop_vs_full": 0.02, "change_1pct_vs_full": 0.05, "hybrid_p50_ms": 50.0}


def publish(ws: Any, records: list[dict[str, Any]]) -> str:
    """Write records as a dataset version (what `ragtune ingest` publishes) and point `latest` at it."""
    from tasks.core.records import write_records
    from tasks.core.workspace import write_pointer

    version = hashlib.sha256("".join(r["doc_id"] + r["content_hash"] for r in records).encode()).hexdigest()[:16]
    base = ws.dataset_dir("docs")
    write_records(base / version / "records.parquet", records)
    write_pointer(base / "latest", version)
    return version


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"),
                    help="folder with corpus.jsonl and queries.jsonl")
    ap.add_argument("--docs", type=int, default=0, help="index only the first N documents (0: all)")
    ap.add_argument("--queries", type=int, default=200, help="queries timed per search mode")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from tasks.core.records import sha256_text
    from tasks.core.workspace import Workspace
    from tasks.index import embed
    from tasks.index.build import build_index, chunk_records, embed_input, update_index
    from tasks.index.config import IndexConfig
    from tasks.index.qdrant import open_client
    from tasks.index.retrieval_eval import load_corpus, load_queries
    from tasks.index.search import search_collection

    data = Path(args.data)
    records = sorted(load_corpus(data / "corpus.jsonl"), key=lambda r: r["doc_id"])
    records = records[: args.docs] if args.docs else records
    for r in records:
        r.update(raw_hash=r["content_hash"], format="jsonl", collected_at="2026-01-01T00:00:00Z")
    cfg = IndexConfig()
    out: dict[str, Any] = {"documents": len(records)}

    with tempfile.TemporaryDirectory(prefix="ragtune-bench-index-") as tmp:
        ws = Workspace(Path(tmp)).ensure()
        publish(ws, records)

        # 1. raw encode of the same texts the index embeds (model loaded before timing)
        chunks = chunk_records(records, cfg)
        texts = [embed_input(c["title"], c["text"]) for c in chunks]
        model = embed.load_model(cfg.embedding_model)
        model.encode(texts[:64], batch_size=cfg.embed_batch_size)
        t = time.perf_counter()
        model.encode(texts, batch_size=cfg.embed_batch_size, normalize_embeddings=True, convert_to_numpy=True)
        raw_s = time.perf_counter() - t
        out["chunks"] = len(chunks)
        out["raw"] = {"seconds": raw_s, "chunks_per_s": len(chunks) / raw_s}

        # 2. full build through the index code (the model stays loaded, as in the raw run)
        client = open_client(ws)
        try:
            t = time.perf_counter()
            full = build_index(ws, cfg, client)
            full_s = time.perf_counter() - t
            tm = full.timings
            pipeline_s = tm["chunk"] + tm["embed"] + tm["sparse"]
            out["full"] = {"seconds": full_s, "timings": tm, "chunks_per_s": full.chunks / full_s,
                           "pipeline_chunks_per_s": full.chunks / pipeline_s}
            out["pipeline_vs_raw"] = (full.chunks / pipeline_s) / (len(chunks) / raw_s)
            out["end_to_end_vs_raw"] = (full.chunks / full_s) / (len(chunks) / raw_s)

            # 3. no-op incremental run, with the embedding model unloaded first
            embed._load_model.cache_clear()
            t = time.perf_counter()
            noop = update_index(ws, cfg, client)
            noop_s = time.perf_counter() - t
            assert noop.mode == "unchanged" and embed._load_model.cache_info().currsize == 0, "no-op loaded the model"
            out["noop"] = {"seconds": noop_s, "vs_full": noop_s / full_s}

            # 4. 1% of documents changed (a sentence appended), published as a new version
            step = 100
            changed = [dict(r) for r in records]
            for r in changed[::step]:
                r["text"] = r["text"] + " This abstract was revised."
                r["content_hash"] = r["raw_hash"] = sha256_text(r["text"])
            publish(ws, changed)
            t = time.perf_counter()
            inc = update_index(ws, cfg, client)
            inc_s = time.perf_counter() - t
            out["change_1pct"] = {"seconds": inc_s, "vs_full": inc_s / full_s, "changes": inc.changes,
                                  "timings": inc.timings}

            # 5. query latency per mode, one query at a time, query embedding included
            queries = list(load_queries(data / "queries.jsonl").values())[: args.queries]
            search_collection(client, cfg.name, queries[0], cfg, 10, "hybrid")  # warm up
            out["latency_ms"] = {}
            for mode in ("dense", "sparse", "hybrid"):
                times = []
                for q in queries:
                    t = time.perf_counter()
                    search_collection(client, cfg.name, q, cfg, 10, mode)
                    times.append((time.perf_counter() - t) * 1000)
                out["latency_ms"][mode] = {"p50": percentile(times, 50), "p95": percentile(times, 95),
                                           "queries": len(times)}
        finally:
            client.close()

    if args.json:
        print(json.dumps(out))
        return
    print(f"SciFact: {out['documents']} documents -> {out['chunks']} chunks")
    print(f"raw encode              {out['raw']['seconds']:8.1f} s  {out['raw']['chunks_per_s']:7.1f} chunks/s")
    f = out["full"]
    print(f"full index (end to end) {f['seconds']:8.1f} s  {f['chunks_per_s']:7.1f} chunks/s  "
          f"({', '.join(f'{k} {v:.1f}s' for k, v in f['timings'].items())})")
    rows = [("pipeline (chunk+embed+sparse) / raw", out["pipeline_vs_raw"], ">=", TARGETS["pipeline_vs_raw"]),
            ("end to end (+ upsert, check) / raw", out["end_to_end_vs_raw"], "", None),
            ("no-op incremental / full", out["noop"]["vs_full"], "<=", TARGETS["noop_vs_full"]),
            ("1% changed incremental / full", out["change_1pct"]["vs_full"], "<=", TARGETS["change_1pct_vs_full"])]
    for label, value, op, target in rows:
        verdict = "" if target is None else ("PASS" if (value >= target if op == ">=" else value <= target) else "MISS")
        print(f"{label:<38} {value:7.3f}  {op} {target if target is not None else '':<5} {verdict}")
    print(f"  no-op {out['noop']['seconds'] * 1000:.0f} ms; 1% change {out['change_1pct']['seconds']:.1f} s "
          f"{out['change_1pct']['changes']}")
    for mode, m in out["latency_ms"].items():
        extra = ""
        if mode == "hybrid":
            extra = f"  target p50 <= {TARGETS['hybrid_p50_ms']:.0f} ms " + (
                "PASS" if m["p50"] <= TARGETS["hybrid_p50_ms"] else "MISS")
        print(f"latency {mode:<7} p50 {m['p50']:7.1f} ms  p95 {m['p95']:7.1f} ms  ({m['queries']} queries){extra}")


if __name__ == "__main__":
    main()

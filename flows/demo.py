"""`ragtune demo`: the whole loop on the bundled sample — ingest, index, train, evaluate, gate, promote — and a
summary a person would want to read (lazy imports: `ragtune --help` stays light)."""

from __future__ import annotations

import argparse
from typing import Any

# A short run that fits the demo's time on a 2-core CPU; `ragtune train` uses the full defaults.
DEMO_TRAIN = {"max_steps": 16, "batch_size": 8, "eval_steps": 8, "save_steps": 8,
              "data": {"context_k": 2, "context_chars": 300}}
DEMO_EVAL = {"max_new_tokens": 32}
DEMO_COMPARE = {"max_new_tokens": 32}
DEMO_QUERIES = ["How many days of paid annual leave do employees get?", "How do I run Relay behind an HTTP proxy?",
                "서울 사무소 회의실은 어떻게 예약하나요?"]


def demo_config(train: dict[str, Any] | None = None, evaluate: dict[str, Any] | None = None):
    from flows.pipeline import PipelineConfig
    from tasks.config import EvalConfig, TrainConfig

    return PipelineConfig(train=TrainConfig.model_validate({**DEMO_TRAIN, **(train or {})}),
                          evaluate=EvalConfig.model_validate({**DEMO_EVAL, **(evaluate or {})}))


def run_demo(train: dict[str, Any] | None = None, evaluate: dict[str, Any] | None = None,
             compare: dict[str, Any] | None = None) -> dict[str, Any]:
    """The pipeline with training and promotion, then the comparison of RAG, fine-tuning and both; the training
    run is named after its inputs, so a re-run on unchanged data reuses every stage's output."""
    from flows.cli import _ingest_output
    from flows.compare import compare_flow
    from flows.pipeline import pipeline_flow
    from tasks.config import CompareConfig
    from tasks.workspace import Workspace

    result = pipeline_flow(demo_config(train, evaluate), run_training=True, promote=True, run_id_prefix="demo")
    ws = Workspace.from_env()
    pr = result["promote"]
    ev = pr["evaluation_summary"]
    return {"workspace": str(ws.root), "dataset_version": result["ingest"]["dataset_version"],
            "index_version": result["index"]["index_version"], "candidate": pr["candidate"],
            "champion": pr["champion"], "promoted": pr["promoted"], "reasons": pr["reasons"],
            "metrics": ev["metrics"], "comparisons": ev["comparisons"], "retrieval": ev["retrieval"],
            "report": pr["report"], "ingest": _ingest_output(result["ingest"]), "index": result["index"],
            "searches": demo_searches(ws, result["index"]), "train": result["train"], "evaluation": ev,
            "calibration": demo_calibration(ws),
            "comparison": compare_flow(CompareConfig.model_validate({**DEMO_COMPARE, **(compare or {})}))}


def demo_calibration(ws) -> dict[str, Any]:
    """The server's not-found threshold, chosen on the evaluation split and the bundled off-topic questions."""
    from tasks.serving.config import ServeConfig
    from tasks.serving.guardrails import calibrate

    out = calibrate(ws, ServeConfig())
    return {k: v for k, v in out.items() if k not in ("curve", "reference_scores", "off_topic_scores")}


def demo_searches(ws, index: dict[str, Any]) -> list[dict[str, Any]]:
    from tasks.config import IndexConfig
    from tasks.qdrant import open_client
    from tasks.search import search_collection

    client = open_client(ws)
    try:
        cfg = IndexConfig(name=index["name"])
        return [{"query": q, "mode": "hybrid", "hits": [
            {k: h.get(k) for k in ("score", "doc_id", "source_uri", "title", "section")}
            for h in search_collection(client, index["collection"], q, cfg, 3, "hybrid")]} for q in DEMO_QUERIES]
    finally:
        client.close()


def _print_sample_titles(dataset_dir: str, n: int = 5) -> None:
    from pathlib import Path

    from tasks.records import read_records

    records = read_records(Path(dataset_dir) / "records.parquet")
    print(f"\n  {len(records)} documents, for example:")
    for r in records[:: max(1, len(records) // n)][:n]:
        print(f"    {r['doc_id']:<45} {r['title'][:60]}")


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    from flows.cli import print_ingest, where
    from flows.cli_models import print_evaluation
    from tasks.report import describe_check

    out = run_demo()
    if args.json:
        return out
    print(f"ragtune demo — workspace {out['workspace']}\n")
    print("1. ingest (bundled sample corpus):")
    print_ingest(out["ingest"])
    _print_sample_titles(out["ingest"]["dataset_dir"])
    ix = out["index"]
    print(f"\n2. index {ix['name']} -> {ix['collection']} ({ix['mode']}): {ix['chunks']} chunks; "
          f"{describe_check(ix['check'])}")
    for s in out["searches"]:
        print(f"\n  search ({s['mode']}): {s['query']}")
        for h in s["hits"]:
            print(f"    [{h['score']:.3f}] {where(h)}  ({h['doc_id']})")
    tr = out["train"]
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    evals = [h["eval_loss"] for h in tr["history"] if h.get("eval_loss") is not None]
    print(f"\n3. train (QLoRA on the sample Q/A set, retrieved context in each prompt): run {tr['run_id']}"
          f"{'' if tr['trained'] else ' (finished before)'}")
    print(f"  {tr['steps']} steps on {tr['device']} ({'4-bit NF4' if tr['quantized'] else 'LoRA'}); validation loss "
          f"{fmt(evals[0] if evals else None)} -> {fmt(tr['eval_loss'])}")
    print(f"  adapter: {tr['adapter_dir']}")
    print("\n4. evaluate (test split, same retrieval as serving):")
    print_evaluation(out["evaluation"])
    print(f"\n5. promote: candidate {out['candidate']} {'promoted' if out['promoted'] else 'not promoted'}; "
          f"champion {out['champion'] or 'none'}")
    for r in out["reasons"]:
        print(f"  {r}")
    print(f"\nreport: {out['report']}")
    from flows.cli_serve import print_calibration

    print("\n6. calibrate the server's 'not found in the documents' answer:")
    print_calibration(out["calibration"])
    from flows.cli_models import print_comparison

    print("\n7. compare: RAG, fine-tuning or both? (the same test questions, closed-book and with retrieval)")
    print_comparison(out["comparison"])
    print("\nnext: serve it and open the chat page")
    print("  ragtune serve                      # then open http://127.0.0.1:8000/ (API: /v1/ask, /v1/feedback, "
          "/metrics)")
    print('  curl -s localhost:8000/v1/ask -H "Content-Type: application/json" '
          '-d \'{"question": "How many days of paid annual leave do employees get?"}\'')
    print('  ragtune ask "How many days of paid annual leave do employees get?"   # one question, no server')
    return out

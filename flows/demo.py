"""The demo: the whole loop on the bundled sample — ingest, index, train, evaluate, gate, promote, calibrate,
compare — with the figures a person would want to read (`ragtune demo` prints them)."""

from __future__ import annotations

from typing import Any

from flows.compare import compare_flow
from flows.ingest import ingest_output
from flows.pipeline import PipelineConfig, pipeline_flow
from tasks.core.workspace import Workspace
from tasks.evaluate.config import CompareConfig, EvalConfig
from tasks.index.config import IndexConfig
from tasks.index.qdrant import open_client
from tasks.index.search import search_collection
from tasks.serve.calibrate import calibrate
from tasks.serve.config import ServeConfig
from tasks.train.config import TrainConfig

# A short run that fits the demo's time on a 2-core CPU; `ragtune train` uses the full defaults.
DEMO_TRAIN = {"max_steps": 16, "batch_size": 8, "eval_steps": 8, "save_steps": 8,
              "data": {"context_k": 2, "context_chars": 300}}
DEMO_EVAL = {"max_new_tokens": 32}
DEMO_COMPARE = {"max_new_tokens": 32}
DEMO_QUERIES = ["How many days of paid annual leave do employees get?", "How do I run Relay behind an HTTP proxy?",
                "서울 사무소 회의실은 어떻게 예약하나요?"]


def demo_config(train: dict[str, Any] | None = None, evaluate: dict[str, Any] | None = None):
    return PipelineConfig(train=TrainConfig.model_validate({**DEMO_TRAIN, **(train or {})}),
                          evaluate=EvalConfig.model_validate({**DEMO_EVAL, **(evaluate or {})}))


def run_demo(train: dict[str, Any] | None = None, evaluate: dict[str, Any] | None = None,
             compare: dict[str, Any] | None = None) -> dict[str, Any]:
    """The pipeline with training and promotion, then the comparison of RAG, fine-tuning and both; the training
    run is named after its inputs, so a re-run on unchanged data reuses every stage's output."""
    result = pipeline_flow(demo_config(train, evaluate), run_training=True, promote=True, run_id_prefix="demo")
    ws = Workspace.from_env()
    pr = result["promote"]
    ev = pr["evaluation_summary"]
    return {"workspace": str(ws.root), "dataset_version": result["ingest"]["dataset_version"],
            "index_version": result["index"]["index_version"], "candidate": pr["candidate"],
            "champion": pr["champion"], "promoted": pr["promoted"], "reasons": pr["reasons"],
            "metrics": ev["metrics"], "comparisons": ev["comparisons"], "retrieval": ev["retrieval"],
            "report": pr["report"], "ingest": ingest_output(result["ingest"]), "index": result["index"],
            "searches": demo_searches(ws, result["index"]), "train": result["train"], "evaluation": ev,
            "calibration": demo_calibration(ws),
            "comparison": compare_flow(CompareConfig.model_validate({**DEMO_COMPARE, **(compare or {})}))}


def demo_calibration(ws) -> dict[str, Any]:
    """The server's not-found threshold, chosen on the evaluation split and the bundled off-topic questions."""
    out = calibrate(ws, ServeConfig())
    return {k: v for k, v in out.items() if k not in ("curve", "reference_scores", "off_topic_scores")}


def demo_searches(ws, index: dict[str, Any]) -> list[dict[str, Any]]:
    client = open_client(ws)
    try:
        cfg = IndexConfig(name=index["name"])
        return [{"query": q, "mode": "hybrid", "hits": [
            {k: h.get(k) for k in ("score", "doc_id", "source_uri", "title", "section")}
            for h in search_collection(client, index["collection"], q, cfg, 3, "hybrid")]} for q in DEMO_QUERIES]
    finally:
        client.close()

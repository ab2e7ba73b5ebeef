"""sweep flow: score a grid of chunk sizes, overlaps and search modes on a labelled query set, the settings built in
parallel as mapped tasks; a ranked table artifact, the best configuration, and `apply` to make it the index's."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import publish_sweep_artifacts
from flows.runners import flow_task_runner
from tasks.core.config import SAMPLE_DIR, with_workspace
from tasks.core.workspace import Workspace, atomic_write_json, new_run_id, utc_now
from tasks.index.config import SweepConfig
from tasks.index.sweep import apply_best, embed_queries, grid, rank, score_setting
from tasks.ingest.publish import latest_version
from tasks.train.config import SFTDataConfig
from tasks.train.questions.build import latest_question_set
from tasks.train.sft import corpus_is_sample


@task(name="score_setting", cache_policy=NO_CACHE)
def score_setting_task(home: str, config: SweepConfig, dataset_version: str, size: int, overlap: int,
                       scratch: str, query_vectors: str) -> list[dict[str, Any]]:
    return score_setting(Workspace(Path(home)), config, dataset_version, size, overlap, Path(scratch),
                         Path(query_vectors))


@flow(name="sweep", description="Score chunking settings and search modes on labelled queries; pick the best.",
      task_runner=flow_task_runner())
def sweep_flow(config: SweepConfig = SweepConfig(), home: str | None = None,  # noqa: B008
               apply: bool = False) -> dict[str, Any]:
    """Returns {sweep_id, dataset_version, rows (ranked), best, applied}; the table is also an artifact."""
    logger = get_run_logger()
    ws = Workspace.from_env(home).ensure()
    config = with_workspace(ws, "sweep", config)
    dataset_version = config.index.dataset_version or latest_version(ws, config.index.dataset)
    if not dataset_version:  # the earliest missing step is the one to name
        raise FileNotFoundError(f"no {config.index.dataset} dataset in {ws.root}: run `ragtune ingest` first")
    if config.queries is None:
        config = config.model_copy(update={"queries": str(labelled_queries(ws))})
    settings = grid(config)
    sweep_id = hashlib.sha256(json.dumps([dataset_version, config.model_dump(mode="json")], sort_keys=True)
                              .encode()).hexdigest()[:12]
    scratch = ws.runs / f"sweep-{new_run_id()}"
    rows: list[dict[str, Any]] = []
    try:
        # the questions do not depend on the chunking: embedded once, read by every setting (a file, so that
        # Dask or Ray workers can read it too)
        query_vectors = embed_queries(config, scratch / "queries.npy")
        for start in range(0, len(settings), config.max_parallel):  # at most max_parallel builds at a time
            batch = settings[start:start + config.max_parallel]
            futures = [score_setting_task.submit(str(ws.root), config, dataset_version, s, o, str(scratch),
                                                 str(query_vectors)) for s, o in batch]
            for f in futures:
                rows += f.result()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ranked = rank(rows, config.metric)
    best = ranked[0]
    out = {"sweep_id": sweep_id, "dataset_version": dataset_version, "metric": config.metric, "rows": ranked,
           "best": best, "applied": None, "created_at": utc_now(), "config": config.model_dump(mode="json")}
    if apply:
        out["applied"] = str(apply_best(ws, best, sweep_id))
    atomic_write_json(ws.reports / "sweeps" / f"{sweep_id}.json", out)
    logger.info("sweep %s: best %s/%s %s %s %.4f%s", sweep_id, best["chunk_size"], best["chunk_overlap"], best["mode"],
                config.metric, best[config.metric], f"; applied to {out['applied']}" if apply else "")

    publish_sweep_artifacts(out)
    return out


def labelled_queries(ws: Workspace) -> Path:
    """The sweep's labelled queries when none are configured: the bundled sample's own Q/A set on the bundled
    sample corpus, else the latest generated question set (its pairs carry question and doc_id); never the
    sample's questions for a user's corpus."""
    data = SFTDataConfig()
    if corpus_is_sample(ws, data):
        return SAMPLE_DIR / "qa.jsonl"
    folder = latest_question_set(ws)
    if folder is None:
        raise FileNotFoundError("the sweep needs labelled queries for this corpus: give --queries FILE (JSONL with "
                                "question and doc_id), or run `ragtune questions generate` first")
    return folder / "pairs.jsonl"

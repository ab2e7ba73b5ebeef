"""evaluate flow: register the candidate as the challenger, then answer the test split with the base model, the
champion and the candidate; metrics, intervals and the gate's decision, published as a report and artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import publish_evaluation_artifacts
from flows.runners import RELEASES_MEMORY
from tasks.core.config import with_workspace
from tasks.core.workspace import Workspace
from tasks.evaluate.config import EvalConfig
from tasks.evaluate.evaluate import EvalResult, evaluate, resolve_candidate, result_dict
from tasks.train import registry


@flow(name="evaluate", description="Evaluate a trained adapter against the champion and the base model; gate it.")
def evaluate_flow(config: EvalConfig = EvalConfig(), home: str | None = None) -> dict[str, Any]:  # noqa: B008
    """Returns references and figures: evaluation id and folder, report path, metrics, decision."""
    logger = get_run_logger()
    ws = Workspace.from_env(home).ensure()
    config = with_workspace(ws, "evaluate", config)
    with ws.lock("evaluate"):
        register_candidate_task(str(ws.root), config.candidate)
        res = result_dict(evaluate_task(str(ws.root), config))
    logger.info("evaluation %s%s: candidate %s vs %s: %s", res["eval_id"], " (reused)" if res["reused"] else "",
                res["candidate_version"], res["reference"], "pass" if res["decision"]["passed"] else "fail")
    publish_evaluation_artifacts(res)
    return res


@task(name="register_candidate", cache_policy=NO_CACHE)
def register_candidate_task(home: str, run_id: str | None) -> dict[str, Any]:
    """The candidate's version record; a run seen for the first time becomes the challenger."""
    ws = Workspace(Path(home))
    return registry.register(ws, resolve_candidate(ws, run_id))


@task(name="evaluate_candidate", cache_policy=NO_CACHE, **RELEASES_MEMORY)
def evaluate_task(home: str, config: EvalConfig) -> EvalResult:
    return evaluate(Workspace(Path(home)), config)

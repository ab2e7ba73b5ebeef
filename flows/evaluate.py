"""evaluate flow: answer the test split with the base model, the champion and the candidate; metrics, intervals
and the gate's decision, published as a report and Prefect artifacts."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from tasks.config import EvalConfig
from tasks.workspace import Workspace


@flow(name="evaluate", description="Evaluate a trained adapter against the champion and the base model; gate it.")
def evaluate_flow(config: EvalConfig = EvalConfig(), home: str | None = None) -> dict[str, Any]:  # noqa: B008
    """Returns references and figures: evaluation id and folder, report path, metrics, decision."""
    from tasks.evaluate import evaluate_task, result_dict
    from tasks.report import publish_evaluation_artifacts

    logger = get_run_logger()
    ws = Workspace.from_env(home).ensure()
    with ws.lock("evaluate"):
        res = result_dict(evaluate_task(str(ws.root), config))
    logger.info("evaluation %s%s: candidate %s vs %s: %s", res["eval_id"], " (reused)" if res["reused"] else "",
                res["candidate_version"], res["reference"], "pass" if res["decision"]["passed"] else "fail")
    publish_evaluation_artifacts(res)
    return res

"""promote flow: evaluate the candidate, apply the gate, and move the registry's champion alias only when every
rule passes; the decision, its reasons and an event are recorded either way."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.evaluate import evaluate_flow
from tasks.config import EvalConfig
from tasks.workspace import Workspace


@flow(name="promote", description="Evaluate and gate a candidate; promote it to champion only if it passes.")
def promote_flow(config: EvalConfig = EvalConfig(), home: str | None = None,  # noqa: B008
                 candidate: str | None = None) -> dict[str, Any]:
    """`candidate` (a training run id, as a `ragtune.model.trained` event carries it) overrides
    `config.candidate`. Returns {promoted, champion, candidate, reasons, evaluation (id), report,
    evaluation_summary}."""
    from tasks.promote import apply_decision_task

    logger = get_run_logger()
    ws = Workspace.from_env(home).ensure()
    if candidate:
        config = config.model_copy(update={"candidate": candidate})
    ev = evaluate_flow(config, home=str(ws.root))
    out = {**apply_decision_task(str(ws.root), ev), "evaluation_summary": ev}
    logger.info("candidate %s %s; champion %s", out["candidate"], "promoted" if out["promoted"] else "not promoted",
                out["champion"])
    return out

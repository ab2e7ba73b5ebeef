"""promote flow: evaluate the candidate, apply the gate, and move the registry's champion alias only when every
rule passes; the decision, its reasons and an event are recorded either way. The rollback flow moves the
champion back to the previous one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.evaluate import evaluate_flow
from flows.events import emit
from tasks.core.workspace import Workspace
from tasks.evaluate.config import EvalConfig
from tasks.evaluate.promote import apply_decision
from tasks.train import registry

ROLLED_BACK = "ragtune.model.rolled_back"


@flow(name="promote", description="Evaluate and gate a candidate; promote it to champion only if it passes.")
def promote_flow(config: EvalConfig = EvalConfig(), home: str | None = None,  # noqa: B008
                 candidate: str | None = None) -> dict[str, Any]:
    """`candidate` (a training run id, as a `ragtune.model.trained` event carries it) overrides
    `config.candidate`. Returns {promoted, champion, candidate, reasons, evaluation (id), report,
    evaluation_summary}."""
    logger = get_run_logger()
    ws = Workspace.from_env(home).ensure()
    if candidate:
        config = config.model_copy(update={"candidate": candidate})
    ev = evaluate_flow(config, home=str(ws.root))
    out = apply_decision_task(str(ws.root), ev)
    payload = out.pop("event_payload", None)
    if out["event"] and not emit(out["event"], f"ragtune.model.{out['candidate']}", payload):
        out["event"] = None
    out["evaluation_summary"] = ev
    logger.info("candidate %s %s; champion %s", out["candidate"], "promoted" if out["promoted"] else "not promoted",
                out["champion"])
    return out


@flow(name="rollback", description="Make the previous champion the champion again.")
def rollback_flow(reason: str = "manual rollback", home: str | None = None) -> dict[str, Any]:
    """Returns {from, to}; emits `ragtune.model.rolled_back` (the server swaps models when the alias moves)."""
    logger = get_run_logger()
    ws = Workspace.from_env(home).ensure()
    old, new = registry.rollback(ws, reason=reason)
    logger.info("champion rolled back from %s to %s (%s)", old, new, reason)
    emit(ROLLED_BACK, f"ragtune.model.{new}", {"from": old, "to": new, "reason": reason})
    return {"from": old, "to": new}


@task(name="apply_gate_decision", cache_policy=NO_CACHE)
def apply_decision_task(home: str, evaluation: dict[str, Any]) -> dict[str, Any]:
    return apply_decision(Workspace(Path(home)), evaluation)

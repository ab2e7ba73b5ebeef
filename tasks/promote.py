"""promote: act on an evaluation's gate decision — move the champion alias or archive the candidate — and emit
`ragtune.model.promoted` / `ragtune.model.rejected`. Reads only the evaluation record and the registry."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tasks.workspace import Workspace

log = logging.getLogger("ragtune.promote")


def apply_decision(ws: Workspace, evaluation: dict[str, Any]) -> dict[str, Any]:
    """Promote the evaluated candidate when its decision passed, else archive it; never promotes a failure."""
    from tasks import events, registry

    version = evaluation["candidate_version"]
    decision = evaluation["decision"]
    state = registry.aliases(ws)
    base = {"candidate": version, "run_id": evaluation["candidate"], "evaluation": evaluation["eval_id"],
            "report": evaluation["report"], "decision": decision}
    if state["champion"] == version:
        return {**base, "promoted": False, "champion": version, "reasons": [f"{version} is already the champion"],
                "event": None}
    if not decision["passed"] and version in state["archived"] and state["challenger"] != version:
        return {**base, "promoted": False, "champion": state["champion"],
                "reasons": [f"{version} was rejected before: {'; '.join(decision['reasons'])}"], "event": None}
    if decision["passed"]:
        state = registry.promote(ws, version, "; ".join(decision["reasons"]), evaluation["eval_id"])
        event = "ragtune.model.promoted"
    else:
        state = registry.reject(ws, version, "; ".join(decision["reasons"]), evaluation["eval_id"])
        event = "ragtune.model.rejected"
    primary = decision["primary_metric"]
    comp = evaluation["comparisons"][decision["reference"]].get(primary, {})
    emitted = events.emit(event, f"ragtune.model.{version}", payload={
        "version": version, "run_id": evaluation["candidate"], "champion": state["champion"],
        "previous_champion": evaluation.get("champion"), "evaluation": evaluation["eval_id"],
        "reference": decision["reference"], "primary_metric": primary, "improvement": comp.get("diff"),
        "ci_low": comp.get("ci_low"), "ci_high": comp.get("ci_high"), "reasons": decision["reasons"]})
    log.info("%s: %s (%s)", version, event, "; ".join(decision["reasons"]))
    return {**base, "promoted": bool(decision["passed"]), "champion": state["champion"],
            "reasons": decision["reasons"], "event": event if emitted else None}


# --- Prefect tasks -----------------------------------------------------------------------------

from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402


@task(name="apply_gate_decision", cache_policy=NO_CACHE)
def apply_decision_task(home: str, evaluation: dict[str, Any]) -> dict[str, Any]:
    return apply_decision(Workspace(Path(home)), evaluation)

"""promote: act on an evaluation's gate decision — move the champion alias or archive the candidate — and say
which event (`ragtune.model.promoted` / `ragtune.model.rejected`) the flow should emit. Reads only the evaluation
record and the registry."""

from __future__ import annotations

import logging
from typing import Any

from tasks.core.workspace import Workspace
from tasks.train import registry

log = logging.getLogger("ragtune.promote")


def apply_decision(ws: Workspace, evaluation: dict[str, Any]) -> dict[str, Any]:
    """Promote the evaluated candidate when its decision passed, else archive it; never promotes a failure."""
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
    payload = {
        "version": version, "run_id": evaluation["candidate"], "champion": state["champion"],
        "previous_champion": evaluation.get("champion"), "evaluation": evaluation["eval_id"],
        "reference": decision["reference"], "primary_metric": primary, "improvement": comp.get("diff"),
        "ci_low": comp.get("ci_low"), "ci_high": comp.get("ci_high"), "reasons": decision["reasons"]}
    log.info("%s: %s (%s)", version, event, "; ".join(decision["reasons"]))
    return {**base, "promoted": bool(decision["passed"]), "champion": state["champion"],
            "reasons": decision["reasons"], "event": event, "event_payload": payload}

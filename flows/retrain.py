"""retrain flow: after an index update, ask the retraining policy; train a candidate only when it says so (the
decision and its reasons are recorded and published either way). The trained run emits `ragtune.model.trained`,
which starts the evaluate-and-gate deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import publish_policy_artifact
from flows.questions import generation_needed, questions_flow
from flows.train import train_flow
from tasks.core.config import with_workspace
from tasks.core.workspace import Workspace
from tasks.serve.monitor import merge_quality_reasons
from tasks.train.config import QuestionsConfig, RetrainPolicy, TrainConfig
from tasks.train.policy import decide, record


@task(name="decide_retraining", cache_policy=NO_CACHE)
def decide_retraining(home: str, policy: RetrainPolicy, config: TrainConfig, trigger: dict[str, Any],
                      quality_event: dict[str, Any] | None = None) -> dict[str, Any]:
    ws = Workspace(Path(home))
    decision = decide(ws, policy, config.data)
    if quality_event is not None:  # the monitor saw the served model degrade: retrain whatever the data did
        decision = merge_quality_reasons(decision, quality_event)
    return record(ws, decision, trigger)


@flow(name="retrain", description="Train a new candidate when the retraining policy says the data moved enough, "
      "or when the monitor reports that the served quality degraded.")
def retrain_flow(policy: RetrainPolicy = RetrainPolicy(), config: TrainConfig = TrainConfig(),  # noqa: B008
                 home: str | None = None, index_event: dict[str, Any] | None = None,
                 quality_event: dict[str, Any] | None = None) -> dict[str, Any]:
    """`index_event` is the `ragtune.index.updated` payload that triggered the run, `quality_event` the
    `ragtune.quality.degraded` one (its reasons come first in the decision); either is recorded with it."""
    logger = get_run_logger()
    ws = Workspace.from_env(home).ensure()
    policy, config = with_workspace(ws, "policy", policy), with_workspace(ws, "train", config)
    trigger = {"event": "ragtune.quality.degraded", **quality_event} if quality_event is not None else index_event
    if generation_needed(ws, config.data):  # the corpus changed: its questions follow it (reused when unchanged)
        questions_flow(QuestionsConfig(index_name=config.data.index_name), home=str(ws.root))
    decision = decide_retraining(str(ws.root), policy, config, trigger or {}, quality_event)
    logger.info("retraining policy: %s — %s", "retrain" if decision["retrain"] else "no retraining",
                "; ".join(decision["reasons"]))
    publish_policy_artifact(decision)
    out: dict[str, Any] = {"decision": decision}
    if decision["retrain"]:
        out["train"] = train_flow(config, home=str(ws.root))
    return out

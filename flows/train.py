"""train flow: build the SFT dataset, fine-tune a QLoRA adapter, publish a summary and the loss history."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from flows.artifacts import publish_train_artifacts, training_reporter
from flows.events import emit
from flows.runners import RELEASES_MEMORY
from tasks.core.config import with_workspace
from tasks.core.workspace import Workspace, WorkspaceBusyError
from tasks.train.config import TrainConfig
from tasks.train.train import TrainResult, result_dict, train


@flow(name="train", description="Fine-tune a QLoRA adapter on the Q/A set (with retrieved context).")
def train_flow(config: TrainConfig = TrainConfig(), home: str | None = None) -> dict[str, Any]:  # noqa: B008
    """Returns references: run id, adapter folder, dataset version, steps, losses, device, quantisation."""
    logger = get_run_logger()
    ws = Workspace.from_env(home).ensure()
    config = with_workspace(ws, "train", config)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(ws.lock("train"))
        except WorkspaceBusyError:  # another deployment's training run (on index update, on quality): queue behind it
            wait_s = float(os.environ.get("RAGTUNE_TRAIN_WAIT_S", 6 * 3600))
            logger.info("another training run holds %s; waiting for it (up to %.0f s)", ws.root, wait_s)
            held.enter_context(ws.lock("train", timeout_s=wait_s))
        res = result_dict(train_task(str(ws.root), config))
    logger.info("adapter %s (%s steps, eval loss %s, %s, %s)", res["adapter_dir"], res["steps"], res["eval_loss"],
                res["device"], "4-bit" if res["quantized"] else "no quantisation")
    publish_train_artifacts(res)
    if res["trained"]:  # a new candidate: the evaluate-and-gate deployment listens for this
        emit("ragtune.model.trained", f"ragtune.model.{res['run_id']}", {
            k: res[k] for k in ("run_id", "adapter_dir", "dataset_version", "steps", "eval_loss", "device")})
    return res


@task(name="train_adapter", cache_policy=NO_CACHE, **RELEASES_MEMORY)
def train_task(home: str, config: TrainConfig) -> TrainResult:
    """Holds one slot of the global concurrency limit named by RAGTUNE_GPU_LIMIT (set on the gpu work pool; one
    slot per GPU) for the whole run, so two training runs on one GPU run one after the other."""
    limit = os.environ.get("RAGTUNE_GPU_LIMIT")
    slot = (concurrency(limit, occupy=1, strict=True, lease_duration=600) if limit else contextlib.nullcontext())
    with slot:
        return train(Workspace(Path(home)), config, training_reporter())

"""train flow: build the SFT dataset, fine-tune a QLoRA adapter, publish a summary and the loss history."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from tasks.config import TrainConfig
from tasks.workspace import Workspace


@flow(name="train", description="Fine-tune a QLoRA adapter on the Q/A set (with retrieved context).")
def train_flow(config: TrainConfig = TrainConfig(), home: str | None = None) -> dict[str, Any]:  # noqa: B008
    """Returns references: run id, adapter folder, dataset version, steps, losses, device, quantisation."""
    import contextlib
    import os

    from tasks.report import publish_train_artifacts
    from tasks.train import result_dict, train_task
    from tasks.workspace import WorkspaceBusyError

    logger = get_run_logger()
    ws = Workspace.from_env(home).ensure()
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
        from tasks.events import emit

        emit("ragtune.model.trained", f"ragtune.model.{res['run_id']}", {
            k: res[k] for k in ("run_id", "adapter_dir", "dataset_version", "steps", "eval_loss", "device")})
    return res

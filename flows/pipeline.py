"""pipeline flow: the stages chained end to end (ingest, index, train, evaluate + promote); `ragtune demo` runs it
on the bundled sample."""

from __future__ import annotations

import hashlib
from typing import Any

from prefect import flow
from pydantic import Field

from flows.index import index_flow
from flows.ingest import ingest_flow
from flows.promote import promote_flow
from flows.questions import generation_needed, questions_flow
from flows.runners import flow_task_runner
from flows.train import train_flow
from tasks.core.config import StageConfig, with_workspace
from tasks.core.workspace import Workspace
from tasks.evaluate.config import EvalConfig
from tasks.index.config import IndexConfig
from tasks.ingest.config import IngestConfig
from tasks.train.config import QuestionsConfig, TrainConfig
from tasks.train.sft import QASources, qa_sources


class PipelineConfig(StageConfig):
    """Parameters of the end-to-end pipeline; each stage keeps its own typed config."""

    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Collect, clean, validate, publish.")
    index: IndexConfig = Field(default_factory=IndexConfig, description="Chunk, embed and index into Qdrant.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="QLoRA fine-tuning (when run_training).")
    evaluate: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation and gate (when promote).")


def keyed_run_id(prefix: str, index_version: str, cfg: TrainConfig, qa: QASources) -> str:
    """A training run id determined by the index version, the training config, the Q/A files' contents and the
    question set: the same inputs name the same (finished) run, so an unchanged pipeline trains nothing again."""
    h = hashlib.sha256(f"{index_version}:{cfg.model_copy(update={'run_id': None}).fingerprint()}".encode())
    for path in qa.files:
        h.update(path.read_bytes())
    h.update(str(qa.question_set.name if qa.question_set else None).encode())
    return f"{prefix}-{h.hexdigest()[:12]}"


@flow(name="pipeline", description="The ragtune stages end to end on the configured sources.",
      task_runner=flow_task_runner())
def pipeline_flow(config: PipelineConfig = PipelineConfig(), home: str | None = None,  # noqa: B008
                  incremental_index: bool = False, run_training: bool = False, promote: bool = False,
                  run_id_prefix: str | None = None) -> dict[str, Any]:
    """`incremental_index` updates the served collection in place instead of building a new one;
    `run_training` fine-tunes an adapter on the Q/A set with context from the fresh index; `promote` evaluates it
    and makes it the champion if it passes the gate; `run_id_prefix` names the training run after its inputs
    (index version, config, Q/A files), so a re-run on unchanged inputs trains and evaluates nothing again."""
    ingest = ingest_flow(config.ingest, home=home)
    index = index_flow(config.index.model_copy(update={"dataset": config.ingest.dataset,
                                                        "dataset_version": ingest["dataset_version"]}), home=home,
                       incremental=incremental_index)
    out: dict[str, Any] = {"ingest": ingest, "index": index}
    if run_training or promote:
        data = config.train.data.model_copy(update={"index_name": index["name"]})
        ws = Workspace.from_env(home)
        if generation_needed(ws, with_workspace(ws, "train", config.train).data):  # Q/A from the user's corpus
            out["questions"] = questions_flow(QuestionsConfig(index_name=index["name"]), home=home)
        train_cfg = config.train.model_copy(update={"data": data})
        if run_id_prefix:
            qa = qa_sources(ws, with_workspace(ws, "train", train_cfg).data)
            train_cfg = train_cfg.model_copy(update={"run_id": keyed_run_id(run_id_prefix, index["index_version"],
                                                                             train_cfg, qa)})
        out["train"] = train_flow(train_cfg, home=home)
        if promote:
            ev = config.evaluate.model_copy(update={"candidate": out["train"]["run_id"]})
            out["promote"] = promote_flow(ev, home=home)
    return out

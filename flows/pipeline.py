"""pipeline flow: the stages chained end to end (ingest, index, train); `ragtune demo` runs it on the sample."""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.index import index_flow
from flows.ingest import ingest_flow
from flows.train import train_flow
from tasks.config import IndexConfig, IngestConfig, TrainConfig


class PipelineConfig(BaseModel):
    """Parameters of the end-to-end pipeline; each stage keeps its own typed config."""

    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Collect, clean, validate, publish.")
    index: IndexConfig = Field(default_factory=IndexConfig, description="Chunk, embed and index into Qdrant.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="QLoRA fine-tuning (when run_training).")


@flow(name="pipeline", description="The ragtune stages end to end on the configured sources.")
def pipeline_flow(config: PipelineConfig = PipelineConfig(), home: str | None = None,  # noqa: B008
                  incremental_index: bool = False, run_training: bool = False) -> dict[str, Any]:
    """`incremental_index` updates the served collection in place instead of building a new one;
    `run_training` fine-tunes an adapter on the Q/A set with context from the fresh index."""
    ingest = ingest_flow(config.ingest, home=home)
    index = index_flow(config.index.model_copy(update={"dataset": config.ingest.dataset,
                                                        "dataset_version": ingest["dataset_version"]}), home=home,
                       incremental=incremental_index)
    out = {"ingest": ingest, "index": index}
    if run_training:
        data = config.train.data.model_copy(update={"index_name": index["name"]})
        out["train"] = train_flow(config.train.model_copy(update={"data": data}), home=home)
    return out

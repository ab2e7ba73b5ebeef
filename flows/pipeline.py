"""pipeline flow: the stages chained end to end (today: ingest); `ragtune demo` runs it on the sample."""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.ingest import ingest_flow
from tasks.config import IngestConfig


class PipelineConfig(BaseModel):
    """Parameters of the end-to-end pipeline; each stage keeps its own typed config."""

    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Collect, clean, validate, publish.")


@flow(name="pipeline", description="The ragtune stages end to end on the configured sources.")
def pipeline_flow(config: PipelineConfig = PipelineConfig(), home: str | None = None) -> dict[str, Any]:  # noqa: B008
    ingest = ingest_flow(config.ingest, home=home)
    return {"ingest": ingest}

"""refresh flow: ingest the sources, then bring the served index up to date in place (only new and changed
documents are embedded). Runs nightly and whenever `ragtune.corpus.changed` arrives."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from pydantic import Field

from flows.index import index_flow
from flows.ingest import ingest_flow
from flows.runners import flow_task_runner
from tasks.core.config import StageConfig
from tasks.index.config import IndexConfig
from tasks.ingest.config import IngestConfig


class RefreshConfig(StageConfig):
    """The two stages a refresh runs, each with its own typed config."""

    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Collect, clean, validate, publish.")
    index: IndexConfig = Field(default_factory=IndexConfig, description="The index brought up to date in place.")


@flow(name="refresh", description="Ingest the sources and update the served index in place.",
      task_runner=flow_task_runner())
def refresh_flow(config: RefreshConfig = RefreshConfig(), home: str | None = None,  # noqa: B008
                 changed_paths: list[str] | None = None, source: str | None = None) -> dict[str, Any]:
    """`changed_paths` and `source` come from a `ragtune.corpus.changed` event: they are recorded and checked
    against the ingest's own change report (the ingest rescans every configured source, so nothing is missed
    when several changes arrive together)."""
    logger = get_run_logger()
    if changed_paths:
        logger.info("triggered by %d changed path(s) under %s: %s", len(changed_paths), source or "a source",
                    ", ".join(changed_paths[:10]))
    ingest = ingest_flow(config.ingest, home=home)
    index = index_flow(config.index.model_copy(update={"dataset": config.ingest.dataset,
                                                        "dataset_version": ingest["dataset_version"]}),
                       home=home, incremental=True)
    counts = ingest.get("changes", {}).get("counts", {})
    if changed_paths and not any(counts.get(k) for k in ("new", "changed", "deleted")):
        logger.warning("the event named changed paths but the ingest saw no change: is %s one of the configured "
                       "sources (%s)?", source, ", ".join(config.ingest.collect.sources))
    return {"ingest": ingest, "index": index, "changed_paths": changed_paths or []}

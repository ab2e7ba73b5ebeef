"""index flow: chunk → embed → upsert → verify → switch alias, for the latest (or a given) dataset version."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from tasks.config import IndexConfig
from tasks.index import build_index_task
from tasks.runners import flow_task_runner
from tasks.workspace import Workspace


@flow(name="index", description="Build a verified Qdrant collection for a dataset version and serve it.",
      task_runner=flow_task_runner())
def index_flow(config: IndexConfig = IndexConfig(), home: str | None = None,  # noqa: B008
               incremental: bool = False) -> dict[str, Any]:
    """Returns references only: alias, collection, versions, counts, timings and the check results.
    `incremental` updates the served collection in place (new and changed documents only)."""
    from tasks.sweep import with_workspace_defaults

    logger = get_run_logger()
    ws = Workspace.from_env(home).ensure()
    config = with_workspace_defaults(ws, config)  # e.g. the chunking a sweep applied, unless set explicitly
    with ws.lock("index"):
        res = build_index_task(str(ws.root), config, incremental)
    logger.info("index %s serves %s (%d chunks, %s)%s", res.name, res.collection, res.chunks, res.mode,
                f": {res.changes}" if res.changes else "")
    from tasks.report import publish_index_artifacts

    out = {"name": res.name, "collection": res.collection, "index_version": res.index_version,
           "dataset_version": res.dataset_version, "chunks": res.chunks, "points": res.points,
           "created": res.created, "mode": res.mode, "changes": res.changes, "previous": res.previous,
           "timings": res.timings, "check": res.check}
    publish_index_artifacts(out)
    if res.mode != "unchanged":  # the served content changed: retraining policies and caches listen
        from tasks.events import emit

        emit("ragtune.index.updated", f"ragtune.index.{res.name}", {
            k: out[k] for k in ("name", "collection", "index_version", "dataset_version", "chunks", "mode", "changes")})
    return out

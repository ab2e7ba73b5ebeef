"""index flow: chunk → embed → upsert → verify → switch alias, for the latest (or a given) dataset version; and
the rollback flow that serves the previous collection again. Both hold the index lock and emit
`ragtune.index.updated`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE

from flows.artifacts import progress_reporter, publish_index_artifacts
from flows.events import emit
from flows.runners import RELEASES_MEMORY, distributed, flow_task_runner, runner_workers
from tasks.core.config import with_workspace
from tasks.core.workspace import Workspace, new_run_id
from tasks.index.build import Embedder, IndexResult, Progress, build_index, rollback_index, update_index
from tasks.index.config import IndexConfig
from tasks.index.embed import embed_texts, embedding_dim
from tasks.index.qdrant import open_client
from tasks.index.served import served

UPDATED = "ragtune.index.updated"


@flow(name="index", description="Build a verified Qdrant collection for a dataset version and serve it.",
      task_runner=flow_task_runner())
def index_flow(config: IndexConfig = IndexConfig(), home: str | None = None,  # noqa: B008
               incremental: bool = False) -> dict[str, Any]:
    """Returns references only: alias, collection, versions, counts, timings and the check results.
    `incremental` updates the served collection in place (new and changed documents only)."""
    logger = get_run_logger()
    ws = Workspace.from_env(home).ensure()
    config = with_workspace(ws, "index", config)  # e.g. the chunking a sweep applied, unless set explicitly
    with ws.lock("index"):
        res = build_index_task(str(ws.root), config, incremental)
    logger.info("index %s serves %s (%d chunks, %s)%s", res.name, res.collection, res.chunks, res.mode,
                f": {res.changes}" if res.changes else "")
    out = {"name": res.name, "collection": res.collection, "index_version": res.index_version,
           "dataset_version": res.dataset_version, "chunks": res.chunks, "points": res.points,
           "created": res.created, "mode": res.mode, "changes": res.changes, "previous": res.previous,
           "timings": res.timings, "check": res.check}
    publish_index_artifacts(out)
    if res.mode != "unchanged":  # the served content changed: retraining policies and caches listen
        emit(UPDATED, f"ragtune.index.{res.name}", {
            k: out[k] for k in ("name", "collection", "index_version", "dataset_version", "chunks", "mode", "changes")})
    return out


@flow(name="index-rollback", description="Serve the previously served collection of an index again.")
def index_rollback_flow(name: str = "docs", home: str | None = None) -> dict[str, Any]:
    """Move the alias back to the collection served before the current one; returns {name, from, to}. Emits
    `ragtune.index.updated` (mode `rollback`) like any other change of the served content."""
    logger = get_run_logger()
    ws = Workspace.from_env(home).ensure()
    with ws.lock("index"):
        client = open_client(ws)
        try:
            old, new = rollback_index(ws, client, name)
            now = served(ws, name, client)
        finally:
            client.close()
    logger.info("index %s: rolled back from %s to %s", name, old, new)
    emit(UPDATED, f"ragtune.index.{name}", {
        "name": name, "collection": new, "index_version": now.index_version if now else None,
        "dataset_version": now.meta.get("dataset_version") if now else None, "chunks": now.meta.get("chunks") if now
        else None, "mode": "rollback", "changes": {"from": old}})
    return {"name": name, "from": old, "to": new}


@task(name="embed_part", cache_policy=NO_CACHE, retries=1)
def embed_part_task(texts_path: str, model: str, batch_size: int, out_path: str) -> str:
    """Embed one part of the texts (read from a file, written as .npy): where the task runner puts it."""
    texts = json.loads(Path(texts_path).read_text(encoding="utf-8"))
    np.save(out_path, embed_texts(texts, model, batch_size))
    return out_path


def distributed_embedder(staging: Path, parts: int) -> Embedder:
    """An embedder that splits the texts into `parts` length-sorted parts and maps `embed_part_task` over them, so
    a Dask or Ray task runner embeds them on its workers (files in `staging`, which workers must see)."""

    def embed(texts: list[str], model: str, batch_size: int = 64, progress: Progress | None = None) -> Any:
        if not texts:
            return np.zeros((0, embedding_dim(model)), dtype=np.float32)
        staging.mkdir(parents=True, exist_ok=True)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # each part pads little
        groups = [g for g in np.array_split(np.array(order), min(parts, len(texts))) if len(g)]
        ins, outs = [], []
        for k, idx in enumerate(groups):
            path = staging / f"part-{k}.json"
            path.write_text(json.dumps([texts[i] for i in idx]), encoding="utf-8")
            ins.append(str(path))
            outs.append(str(staging / f"part-{k}.npy"))
        done = embed_part_task.map(ins, unmapped(model), unmapped(batch_size), outs).result()
        embed.parts_run += len(done)  # type: ignore[attr-defined]
        out = np.empty((len(texts), np.load(done[0]).shape[1]), dtype=np.float32)
        for idx, path in zip(groups, done, strict=True):
            out[idx] = np.load(path)
        if progress:
            progress(len(texts), len(texts))
        return out

    embed.parts_run = 0  # type: ignore[attr-defined]
    return embed


@task(name="build_index", cache_policy=NO_CACHE, **RELEASES_MEMORY)
def build_index_task(home: str, config: IndexConfig, incremental: bool = False) -> IndexResult:
    ws = Workspace(Path(home))
    staging = ws.runs / f"embed-{new_run_id()}"
    # two parts per worker, so that a slow worker holds up less of the build
    embedder = distributed_embedder(staging, 2 * runner_workers()) if distributed() else None
    client = open_client(ws)
    try:
        run = update_index if incremental else build_index
        res = run(ws, config, client, progress_reporter("index: points upserted"),
                  progress_reporter("index: chunks embedded"), embedder)
        if embedder is not None:
            res.timings["embed_parts"] = embedder.parts_run  # type: ignore[attr-defined]
        return res
    finally:
        client.close()
        shutil.rmtree(staging, ignore_errors=True)

"""The Dask task runner (a local cluster of two worker processes) builds the same index as the default thread
runner: same collection, same points, same payloads, the same vectors up to float rounding."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tasks.config import CollectConfig, IndexConfig, IngestConfig
from tests.conftest import SAMPLE

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]


def _points(home, collection: str) -> dict[str, tuple[dict, np.ndarray]]:
    from tasks.qdrant import open_client
    from tasks.workspace import Workspace

    client = open_client(Workspace(home))
    try:
        out, offset = {}, None
        while True:
            batch, offset = client.scroll(collection, limit=256, offset=offset, with_payload=True, with_vectors=True)
            out.update({str(p.id): (p.payload, np.asarray(p.vector["dense"])) for p in batch})
            if offset is None:
                return out
    finally:
        client.close()


def test_dask_runner_builds_the_same_index_as_threads(tmp_path, monkeypatch):
    from flows.index import index_flow
    from flows.ingest import ingest_flow
    from tasks.runners import make_task_runner

    threads_home, dask_home = tmp_path / "threads", tmp_path / "dask"
    ingest_flow(IngestConfig(collect=CollectConfig(sources=[str(SAMPLE / "corpus" / "handbook")])),
                home=str(threads_home))
    shutil.copytree(threads_home, dask_home)  # the same dataset version in two workspaces
    built = {"threads": index_flow(IndexConfig(), home=str(threads_home))}
    monkeypatch.setenv("RAGTUNE_TASK_RUNNER", "dask")  # read by the build task: embed in parts on the workers
    monkeypatch.setenv("RAGTUNE_RUNNER_WORKERS", "2")
    dask_flow = index_flow.with_options(task_runner=make_task_runner("dask", workers=2))
    built["dask"] = dask_flow(IndexConfig(), home=str(dask_home))

    assert built["dask"]["collection"] == built["threads"]["collection"]
    assert built["dask"]["chunks"] == built["threads"]["chunks"] == built["dask"]["points"]
    assert built["dask"]["timings"]["embed_parts"] == 4 and "embed_parts" not in built["threads"]["timings"]
    a = _points(threads_home, built["threads"]["collection"])
    b = _points(dask_home, built["dask"]["collection"])
    assert a.keys() == b.keys()
    for pid, (payload, vec) in a.items():
        assert b[pid][0] == payload
        assert np.allclose(b[pid][1], vec, atol=1e-4), pid


def test_runner_setting_is_checked_and_reaches_the_flows(monkeypatch):
    from flows.cli import build_parser
    from tasks.runners import make_task_runner, runner_kind

    monkeypatch.setenv("RAGTUNE_TASK_RUNNER", "spark")
    with pytest.raises(ValueError, match="one of threads, dask, ray"):
        runner_kind()
    monkeypatch.setenv("RAGTUNE_TASK_RUNNER", "Dask")
    assert runner_kind() == "dask"
    assert type(make_task_runner("threads")).__name__ == "ThreadPoolTaskRunner"
    assert type(make_task_runner("dask", address="tcp://10.0.0.5:8786")).__name__ == "DaskTaskRunner"
    args = build_parser().parse_args(["--task-runner", "dask", "--runner-address", "tcp://h:8786", "index"])
    assert (args.task_runner, args.runner_address) == ("dask", "tcp://h:8786")

"""The Dask task runner (a local cluster of worker processes) builds the same index as the default thread runner:
same collection, same points, same payloads, the same vectors up to float rounding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PROJECT_ROOT, SAMPLE

pytestmark = pytest.mark.slow


def _run(args: list[str], home: Path, prefect_home: Path, runner: str) -> dict:
    env = {**os.environ, "RAGTUNE_HOME": str(home), "PREFECT_HOME": str(prefect_home), "RAGTUNE_RUNNER_WORKERS": "2"}
    env.pop("PREFECT_API_URL", None)
    res = subprocess.run([sys.executable, "-m", "flows.cli", "--task-runner", runner, *args, "--json"], env=env,
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def _points(home: Path, collection: str) -> dict[str, tuple[dict, np.ndarray]]:
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


def test_dask_runner_builds_the_same_index_as_threads(tmp_path):
    built = {}
    for runner in ("threads", "dask"):
        home = tmp_path / runner
        _run(["ingest", "--source", str(SAMPLE / "corpus")], home, tmp_path / "prefect", runner)
        built[runner] = _run(["index"], home, tmp_path / "prefect", runner)
    assert built["dask"]["collection"] == built["threads"]["collection"]
    assert built["dask"]["chunks"] == built["threads"]["chunks"] == built["dask"]["points"]
    assert built["dask"]["timings"]["embed_parts"] == 4 and "embed_parts" not in built["threads"]["timings"]
    a = _points(tmp_path / "threads", built["threads"]["collection"])
    b = _points(tmp_path / "dask", built["dask"]["collection"])
    assert a.keys() == b.keys()
    for pid, (payload, vec) in a.items():
        assert b[pid][0] == payload
        assert np.allclose(b[pid][1], vec, atol=1e-4), pid

"""The distributed task runners build the same index and score the same sweep as the default thread runner: a Dask
scheduler with two worker processes and a Ray head node, each started here as subprocesses on loopback and reached
by address the way a deployment reaches one, so every task argument and result crosses a process boundary. Same
collection, ids and payloads, the same vectors up to float rounding, the same sweep rows."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deployments.stack import free_port
from tasks.index.config import IndexConfig, SweepConfig
from tasks.ingest.config import CollectConfig, IngestConfig
from tests.conftest import PROJECT_ROOT, SAMPLE, patience

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

BIN = Path(sys.executable).parent  # the venv's `dask` and `ray` commands, so workers run this same Python
NO_RAY = "Ray is not installed: pip install 'ragtune[ray]' (make test installs it where a wheel exists)"


# --- clusters as subprocesses ------------------------------------------------------------------

def _worker_env(**extra: str) -> dict[str, str]:
    """The workers import the project from its root, offline; the runner settings are the driver's alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGTUNE_")}
    path = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **extra}


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("ab") as out:  # each in its own session, so that stopping it reaches its children only
        return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _session_pids(sid: int) -> list[int]:
    pids: list[int] = []
    for d in Path("/proc").iterdir() if Path("/proc").is_dir() else ():  # Linux; elsewhere terminate() must do
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(d.name)) == sid:
                    pids.append(int(d.name))
    return pids


def _stop(procs: list[subprocess.Popen], grace: float = 20) -> None:
    """SIGTERM each process (Ray and Dask shut their children down on it), then SIGKILL whatever is left of the
    sessions started here, by pid: never by name, so other clusters on the machine are left alone."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.1, deadline - time.monotonic()))
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        for pid in _session_pids(p.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


@contextlib.contextmanager
def dask_cluster(workers: int = 2) -> Iterator[str]:
    """`dask scheduler` plus `workers` single-threaded `dask worker` processes on loopback; yields the address."""
    from distributed import Client

    tmp = Path(tempfile.mkdtemp(prefix="ragtune-dask-"))
    address, env, log = f"tcp://127.0.0.1:{free_port()}", _worker_env(), tmp / "cluster.log"
    procs = [_start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                     "--no-dashboard", "--no-jupyter"], log, env)]
    try:
        procs += [_start([str(BIN / "dask"), "worker", address, "--name", f"w{i}", "--nthreads", "1", "--no-nanny",
                          "--no-dashboard", "--host", "127.0.0.1", "--local-directory", str(tmp / f"w{i}"),
                          "--death-timeout", "60"], log, env) for i in range(workers)]
        try:
            with Client(address, timeout="60s") as client:
                client.wait_for_workers(workers, timeout=patience(30))
        except Exception as exc:
            raise RuntimeError(f"the Dask cluster did not come up: {exc}\n{_tail(log)}") from exc
        yield address
    finally:
        _stop(procs[1:])  # workers first: without a scheduler, a worker waits to reconnect
        _stop(procs[:1])
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def ray_cluster(monkeypatch: pytest.MonkeyPatch, cpus: int = 2) -> Iterator[str]:
    """`ray start --head --block` on loopback in its own short temp dir (Ray's socket paths have a length limit);
    yields the GCS address. Stopped by its pid: `ray stop` would stop every Ray cluster on the machine."""
    import ray._private.ray_constants as ray_constants

    # Ray turns 127.0.0.1 into the machine's routable address (and listens there, without authentication) except
    # on Windows and macOS: this setting says "laptop" to the cluster (environment) and to the driver (here)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    port, log = free_port(), tmp / "start.log"
    env = _worker_env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    head = _start([str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                   "--port", str(port), "--num-cpus", str(cpus), "--include-dashboard", "false",
                   "--disable-usage-stats", "--temp-dir", str(tmp), "--object-store-memory", str(256 * 2**20),
                   "--ray-client-server-port", str(free_port()),
                   "--dashboard-agent-listen-port", str(free_port())], log, env)
    try:
        deadline = time.monotonic() + patience(30)
        while "Ray runtime started" not in _tail(log):
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`ray start` did not come up (exit {head.poll()}):\n{_tail(log)}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        if ray.is_initialized():  # a driver left connected by a failed flow
            ray.shutdown()
        _stop([head], grace=40)  # Ray drains the node for up to 30 s before it stops its processes
        shutil.rmtree(tmp, ignore_errors=True)


# --- the thread runner's build and sweep: the reference ---------------------------------------------

@dataclass
class Built:
    index: dict[str, Any]
    points: dict[str, tuple[dict, np.ndarray]]
    sweep: dict[tuple, dict[str, Any]]


def _points(home: Path, collection: str) -> dict[str, tuple[dict, np.ndarray]]:
    from tasks.core.workspace import Workspace
    from tasks.index.qdrant import open_client

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


def _sweep_config(queries: Path) -> SweepConfig:
    return SweepConfig(chunk_sizes=[128, 256], chunk_overlaps=[32], modes=["dense", "sparse", "hybrid"],
                       queries=str(queries), max_parallel=2)


def _build_and_sweep(home: Path, runner: Any, queries: Path) -> Built:
    from flows.index import index_flow
    from flows.sweep import sweep_flow

    index = index_flow.with_options(task_runner=runner)(IndexConfig(), home=str(home))
    sweep = sweep_flow.with_options(task_runner=runner)(_sweep_config(queries), home=str(home))
    rows = {(r["chunk_size"], r["chunk_overlap"], r["mode"]): r for r in sweep["rows"]}
    return Built(index, _points(home, index["collection"]), rows)


@pytest.fixture(scope="module")
def handbook(tmp_path_factory, prefect_harness) -> tuple[Path, Path]:
    """A workspace holding the handbook's dataset version (copied per runner) and its labelled questions."""
    from flows.ingest import ingest_flow

    base = tmp_path_factory.mktemp("runners")
    ingest_flow(IngestConfig(collect=CollectConfig(sources=[str(SAMPLE / "corpus" / "handbook")])),
                home=str(base / "dataset"))
    # the sample's questions on the handbook, labelled with doc ids relative to the folder collected here
    rows = [r for r in map(json.loads, (SAMPLE / "qa.jsonl").read_text().splitlines())
            if r["doc_id"].startswith("handbook/")][:20]
    assert len(rows) == 20
    (base / "queries.jsonl").write_text("".join(
        json.dumps({**r, "doc_id": r["doc_id"].removeprefix("handbook/")}) + "\n" for r in rows))
    return base / "dataset", base / "queries.jsonl"


@pytest.fixture(scope="module")
def threads(handbook, tmp_path_factory) -> Built:
    from flows.runners import make_task_runner

    dataset, queries = handbook
    home = tmp_path_factory.mktemp("threads") / "ws"
    shutil.copytree(dataset, home)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAGTUNE_TASK_RUNNER", raising=False)
        return _build_and_sweep(home, make_task_runner("threads"), queries)


def _assert_same(got: Built, ref: Built) -> None:
    assert got.index["collection"] == ref.index["collection"]
    assert got.index["chunks"] == ref.index["chunks"] == got.index["points"]
    assert got.index["timings"]["embed_parts"] == 4 and "embed_parts" not in ref.index["timings"]
    assert got.points.keys() == ref.points.keys()
    for pid, (payload, vec) in ref.points.items():
        assert got.points[pid][0] == payload
        assert np.allclose(got.points[pid][1], vec, atol=1e-4), pid
    assert got.sweep.keys() == ref.sweep.keys() and len(ref.sweep) == 2 * 3
    assert all(r["ndcg@10"] > 0.3 for r in ref.sweep.values())  # the questions find their documents
    for key, row in ref.sweep.items():
        other = got.sweep[key]
        assert other["chunks"] == row["chunks"] and other["queries"] == row["queries"] == 20, key
        for metric in ("ndcg@10", "recall@10", "mrr@10", "recall@1"):
            assert other[metric] == pytest.approx(row[metric], abs=1e-3), (key, metric)


# --- the tests ----------------------------------------------------------------------------------

def test_dask_cluster_builds_and_sweeps_like_threads(handbook, threads, tmp_path, monkeypatch):
    from flows.runners import make_task_runner

    dataset, queries = handbook
    shutil.copytree(dataset, tmp_path / "ws")
    monkeypatch.setenv("RAGTUNE_TASK_RUNNER", "dask")  # read by the build task: embed in parts on the workers
    monkeypatch.setenv("RAGTUNE_RUNNER_WORKERS", "2")
    with dask_cluster(workers=2) as address:
        got = _build_and_sweep(tmp_path / "ws", make_task_runner("dask", address=address), queries)
    _assert_same(got, threads)


@pytest.fixture(scope="module")
def ray_installed() -> None:
    """Skips before the (shared) thread build when Ray is missing."""
    try:
        import prefect_ray  # noqa: F401
        import ray  # noqa: F401
    except ImportError:
        pytest.skip(NO_RAY)


def test_ray_cluster_builds_and_sweeps_like_threads(ray_installed, handbook, threads, tmp_path, monkeypatch):
    from flows.runners import make_task_runner

    dataset, queries = handbook
    shutil.copytree(dataset, tmp_path / "ws")
    monkeypatch.setenv("RAGTUNE_TASK_RUNNER", "ray")
    monkeypatch.setenv("RAGTUNE_RUNNER_WORKERS", "2")
    with ray_cluster(monkeypatch, cpus=2) as address:
        got = _build_and_sweep(tmp_path / "ws", make_task_runner("ray", address=address), queries)
    _assert_same(got, threads)


def test_runner_setting_is_checked_and_reaches_the_flows(monkeypatch):
    from flows.cli import build_parser
    from flows.runners import make_task_runner, runner_kind

    monkeypatch.setenv("RAGTUNE_TASK_RUNNER", "spark")
    with pytest.raises(ValueError, match="one of threads, dask, ray"):
        runner_kind()
    monkeypatch.setenv("RAGTUNE_TASK_RUNNER", "Dask")
    assert runner_kind() == "dask"
    assert type(make_task_runner("threads")).__name__ == "ThreadPoolTaskRunner"
    assert type(make_task_runner("dask", address="tcp://10.0.0.5:8786")).__name__ == "DaskTaskRunner"
    args = build_parser().parse_args(["--task-runner", "dask", "--runner-address", "tcp://h:8786", "index"])
    assert (args.task_runner, args.runner_address) == ("dask", "tcp://h:8786")

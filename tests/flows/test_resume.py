"""A run killed half way, re-run, ends in the same state as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.corpus import generate_corpus
from tasks.core.records import read_records
from tests.conftest import PROJECT_ROOT, patience

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_api(prefect_harness) -> str:
    """The session's Prefect API, for the commands these tests start and kill (no temporary server per command)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def _env(home: Path, prefect_api: str) -> dict[str, str]:
    return {**os.environ, "RAGTUNE_HOME": str(home), "PREFECT_API_URL": prefect_api}


def _ingest(src: Path, home: Path, prefect_api: str) -> dict:
    res = subprocess.run([sys.executable, "-m", "flows.cli", "ingest", "--source", str(src), "--json"],
                         capture_output=True, text=True, env=_env(home, prefect_api), cwd=PROJECT_ROOT, timeout=patience(120))
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _content(version_dir: Path) -> tuple[list[dict], str]:
    records = [{k: v for k, v in r.items() if k != "collected_at"} for r in read_records(version_dir / "records.parquet")]
    return records, (version_dir / "manifest.jsonl").read_text()


def test_killed_ingest_resumes_to_the_uninterrupted_result(tmp_path, prefect_api):
    src = tmp_path / "src"
    generate_corpus(src, 3000, seed=3)
    reference = _ingest(src, tmp_path / "ref", prefect_api)

    home = tmp_path / "ws"
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "ingest", "--source", str(src)],
                            env=_env(home, prefect_api), cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + patience(60)
    while not list((home / "runs").glob("ingest-*/clean/records.parquet")):  # killed after clean, before publish
        assert proc.poll() is None and time.monotonic() < deadline, "ingest ended before it could be killed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (home / "datasets" / "docs" / "latest").exists()  # nothing half-published

    resumed = _ingest(src, home, prefect_api)
    assert resumed["dataset_version"] == reference["dataset_version"]
    assert resumed["counts"] == reference["counts"]
    assert _content(Path(resumed["dataset_dir"])) == _content(Path(reference["dataset_dir"]))
    assert not list((home / "runs").glob("ingest-*")) and not list((home / "datasets" / "docs").glob(".staging-*"))


def _cli(args: list[str], home: Path, prefect_api: str) -> dict:
    res = subprocess.run([sys.executable, "-m", "flows.cli", *args, "--json"], capture_output=True, text=True,
                         env=_env(home, prefect_api), cwd=PROJECT_ROOT, timeout=patience(120))
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _served_points(home: Path, alias: str) -> tuple[str | None, dict[str, dict]]:
    from tasks.core.workspace import Workspace
    from tasks.index.qdrant import alias_target, open_client

    client = open_client(Workspace(home))
    try:
        collection = alias_target(client, alias)
        points, offset = {}, None
        while collection:
            batch, offset = client.scroll(collection, limit=256, offset=offset, with_payload=True)
            points.update({str(p.id): p.payload for p in batch})
            if offset is None:
                break
        return collection, points
    finally:
        client.close()


def test_killed_index_build_never_serves_a_partial_collection(tmp_path, prefect_api):
    """Kill `ragtune index` once its new collection exists (mid-build): the alias still serves the previous
    collection; the re-run serves a collection equal to an uninterrupted build of the same dataset."""
    from tests.conftest import SAMPLE

    home = tmp_path / "ws"
    small = tmp_path / "small"
    small.mkdir()
    (small / "leave.md").write_bytes((SAMPLE / "corpus" / "handbook" / "leave-policy.md").read_bytes())
    _cli(["ingest", "--source", str(small)], home, prefect_api)
    old = _cli(["index"], home, prefect_api)["collection"]
    _cli(["ingest", "--source", str(SAMPLE / "corpus" / "handbook")], home, prefect_api)  # 12 documents

    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "index"], env=_env(home, prefect_api),
                            cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + patience(60)
    from tasks.index.qdrant import local_engine

    # created after embedding, before upsert and the retrieval check
    collections = home / "qdrant" / ("edge/collections" if local_engine() == "edge" else "collection")
    while not [p for p in collections.iterdir() if p.name != old]:
        assert proc.poll() is None and time.monotonic() < deadline, "index ended before it could be killed"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    served, _ = _served_points(home, "docs")
    assert served == old

    rerun = _cli(["index"], home, prefect_api)
    assert rerun["mode"] == "full" and rerun["collection"] != old and rerun["previous"] == old
    served, points = _served_points(home, "docs")
    assert served == rerun["collection"] and len(points) == rerun["chunks"]

    import shutil

    from tasks.core.workspace import Workspace
    from tasks.index.build import build_index
    from tasks.index.config import IndexConfig
    from tasks.index.qdrant import open_client

    ref_home = tmp_path / "ref"  # the same published dataset, indexed without interruption
    shutil.copytree(home / "datasets", ref_home / "datasets")
    client = open_client(Workspace(ref_home))
    try:
        reference = build_index(Workspace(ref_home), IndexConfig(), client)
    finally:
        client.close()
    assert reference.collection == rerun["collection"]
    assert _served_points(ref_home, "docs")[1] == points


def test_killed_training_resumes_from_its_checkpoint_to_the_same_end(tmp_path, base_model_dir, prefect_api):
    """Kill `ragtune train` once its first checkpoint is written; the re-run with the same run id continues
    from it on the same SFT dataset version and ends at the step count of an uninterrupted run (6, as in
    test_train); a third run trains nothing."""
    from tests.flows.test_train import qa_lines

    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps(r) for r in qa_lines()) + "\n")
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"base_model: {base_model_dir}\nmax_steps: 6\neval_steps: 2\nsave_steps: 2\nbatch_size: 4\n"
                   f"learning_rate: 0.002\ndata:\n  qa_paths: [{qa}]\n  rag_context: false\n  max_length: 128\n"
                   "  validation_fraction: 0.2\n  test_fraction: 0.1\n")
    home = tmp_path / "ws"
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "train", "--config", str(cfg), "--run-id", "r1"],
                            env=_env(home, prefect_api), cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + patience(120)
    ckpt = home / "models" / "r1" / "checkpoints"
    while not list(ckpt.glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    time.sleep(0.5)  # let the checkpoint finish writing its last files; a torn one is skipped on resume anyway
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (home / "models" / "r1" / "meta.json").exists()

    resumed = _cli(["train", "--config", str(cfg), "--run-id", "r1"], home, prefect_api)
    assert resumed["trained"] and resumed["steps"] == 6  # what the uninterrupted run reaches (see test_train)
    from tasks.core.workspace import read_json

    meta = read_json(home / "models" / "r1" / "meta.json")
    assert meta["resumed_from"] is not None and meta["resumed_from"] >= 2
    assert meta["dataset_version"] == read_json(home / "models" / "r1" / "run.json")["dataset_version"]
    steps = [h["step"] for h in meta["history"] if h["loss"] is not None]
    assert steps == list(range(1, 7))  # the killed part's log survives in the checkpoint's state
    done = _cli(["train", "--config", str(cfg), "--run-id", "r1"], home, prefect_api)
    assert not done["trained"] and done["steps"] == 6

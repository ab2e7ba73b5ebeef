"""The local production-like stack against real parts: `prefect server` as a subprocess on a free loopback port with
a temporary PREFECT_HOME, the bootstrap, process workers for the cpu and gpu pools. Checks: scheduled deployments
have upcoming runs; a pipeline run created through the REST API (what the UI does) completes; the index update
it makes starts the retraining policy, whose training run starts evaluate-and-gate; two training runs started
together run one after the other; `ragtune watch` on a changed file starts an incremental refresh that updates
only that document's points. Everything the stack started is stopped, also when a check fails."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PROJECT_ROOT, SAMPLE

pytestmark = [pytest.mark.slow, pytest.mark.integration]

DOCS = ["handbook/leave-policy.md", "handbook/remote-work.md", "handbook/travel-policy.md", "handbook/welcome.md",
        "product/relay-agent.md"]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qa_file(path: Path) -> Path:
    """Sample Q/A pairs about the copied documents (closed-book, short), enough for all three splits."""
    rows = [json.loads(line) for line in (SAMPLE / "qa.jsonl").read_text(encoding="utf-8").splitlines()]
    keep = [r for r in rows if r.get("doc_id") in DOCS][:40]
    path.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory, base_model_dir):
    from deployments import stack as stack_mod

    root = tmp_path_factory.mktemp("stack")
    corpus = root / "corpus"
    for doc in DOCS:
        (corpus / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE / "corpus" / doc, corpus / doc)
    config = {
        "ingest": {"collect": {"sources": [str(corpus)]}},
        "train": {"base_model": base_model_dir, "max_steps": 2, "eval_steps": 2, "save_steps": 2, "batch_size": 4,
                  "data": {"qa_paths": [str(qa_file(root / "qa.jsonl"))], "rag_context": False, "max_length": 160,
                           "validation_fraction": 0.15, "test_fraction": 0.15}},
        "evaluate": {"max_examples": 3, "max_new_tokens": 6, "bootstrap_samples": 100},
        "retrain": {"min_changed_fraction": 0.5},
    }
    (root / "ragtune.yaml").write_text(json.dumps(config), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    state = root / "server"
    t0 = time.monotonic()
    rec = stack_mod.start(port=free_port(), home=str(root / "ws"), config=str(root / "ragtune.yaml"), gpu_worker=True,
                          state=state, gpu_slots=1, base_env=env)
    rec["startup_s"] = time.monotonic() - t0
    rec["corpus"] = str(corpus)
    try:
        yield rec
    finally:
        stopped = stack_mod.stop(state)
        assert not (state / "stack.json").exists() and len(stopped) == 3  # server + two workers, exactly


def api(rec: dict[str, Any]) -> httpx.Client:
    return httpx.Client(base_url=rec["api_url"], timeout=30)


def deployment_id(client: httpx.Client, name: str) -> str:
    res = client.post("/deployments/filter", json={"deployments": {"name": {"any_": [name]}}})
    res.raise_for_status()
    return res.json()[0]["id"]


def runs_of(client: httpx.Client, name: str, states: list[str] | None = None) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"deployments": {"id": {"any_": [deployment_id(client, name)]}}, "sort": "START_TIME_ASC"}
    if states:
        body["flow_runs"] = {"state": {"type": {"any_": states}}}
    res = client.post("/flow_runs/filter", json=body)
    res.raise_for_status()
    return res.json()


def wait_for(predicate, timeout_s: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def wait_run(client: httpx.Client, run_id: str, timeout_s: float = 600) -> dict[str, Any]:
    def done():
        run = client.get(f"/flow_runs/{run_id}").json()
        return run if run["state_type"] in TERMINAL else None

    run = wait_for(done, timeout_s, f"flow run {run_id}", 2.0)
    assert run["state_type"] == "COMPLETED", f"{run['name']}: {run['state']['message']}"
    return run


def points_by_doc(home: Path) -> dict[str, set[str]]:
    from tasks.qdrant import alias_target, open_client
    from tasks.workspace import Workspace

    client = open_client(Workspace(home))
    try:
        collection = alias_target(client, "docs")
        out: dict[str, set[str]] = {}
        offset = None
        while True:
            batch, offset = client.scroll(collection, limit=256, offset=offset, with_payload=True)
            for p in batch:
                out.setdefault(p.payload["doc_id"], set()).add(str(p.id))
            if offset is None:
                return out
    finally:
        client.close()


def test_bootstrap_is_idempotent_and_schedules_have_upcoming_runs(stack):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.bootstrap import bootstrap

    first = stack["bootstrap"]
    assert first["pool cpu"] == first["pool gpu"] == first["limit gpu"] == "created"
    assert first["deployments"] == "created" and len(first["deployment_names"]) == 8
    with temporary_settings({PREFECT_API_URL: stack["api_url"]}):
        again = bootstrap(json.loads(Path(stack["corpus"]).parent.joinpath("ragtune.yaml").read_text()), 1,
                          stack["home"])
    assert {k: v for k, v in again.items() if k not in ("api_url", "home", "gpu_slots", "deployment_names")} == {
        "pool cpu": "unchanged", "pool gpu": "unchanged", "limit gpu": "unchanged",
        "variable ragtune_home": "unchanged", "deployments": "unchanged"}
    with api(stack) as client:
        for name in ("refresh-nightly", "finetune"):
            upcoming = wait_for(lambda n=name: runs_of(client, n, ["SCHEDULED"]), 90, f"scheduled runs of {name}")
            assert upcoming and all(r["expected_start_time"] > r["created"] for r in upcoming)
        automations = client.post("/automations/filter", json={}).json()
        assert len(automations) == 3  # one per trigger, not duplicated by the second bootstrap


def test_rest_api_pipeline_run_then_the_event_chain(stack):
    with api(stack) as client:
        res = client.post(f"/deployments/{deployment_id(client, 'pipeline-manual')}/create_flow_run",
                          json={"parameters": {"incremental_index": False}})
        assert res.status_code == 201, res.text
        run = wait_run(client, res.json()["id"], 600)
        assert run["parameters"]["incremental_index"] is False and "ingest" in run["parameters"]["config"]
        # the index it built emitted ragtune.index.updated -> retraining policy (no champion: retrain) ->
        # ragtune.model.trained -> evaluate-and-gate
        retrain = wait_for(lambda: runs_of(client, "retrain-on-index-update"), 120, "the retrain run")[0]
        wait_run(client, retrain["id"], 900)
        assert retrain["parameters"]["index_event"]["mode"] == "full"
        evaluation = wait_for(lambda: runs_of(client, "evaluate-promote"), 180, "the evaluate-promote run")[0]
        wait_run(client, evaluation["id"], 900)
        assert evaluation["parameters"]["candidate"]
    from tasks import policy, registry
    from tasks.workspace import Workspace

    ws = Workspace(Path(stack["home"]))
    assert policy.decisions(ws)[0]["reasons"] == ["there is no champion yet"]
    assert [h["action"] for h in registry.history(ws)][-1] in ("promote", "reject")  # a decision was applied


def test_two_training_runs_started_together_run_one_after_the_other(stack):
    with api(stack) as client:
        dep = deployment_id(client, "finetune")
        config = client.get(f"/deployments/{dep}").json()["parameters"]["config"]  # the bootstrap's tiny settings
        ids = []
        for i in (1, 2):
            res = client.post(f"/deployments/{dep}/create_flow_run",
                              json={"parameters": {"config": {**config, "run_id": f"together-{i}"}}})
            assert res.status_code == 201, res.text
            ids.append(res.json()["id"])
        runs = sorted((wait_run(client, i, 900) for i in ids), key=lambda r: r["start_time"])
    assert runs[0]["end_time"] <= runs[1]["start_time"], "the two training runs overlapped"


def test_watch_event_starts_an_incremental_refresh_of_only_that_document(stack):
    home, corpus = Path(stack["home"]), Path(stack["corpus"])
    before = points_by_doc(home)
    env = {**os.environ, "PREFECT_API_URL": stack["api_url"], "RAGTUNE_HOME": str(home)}
    watcher = subprocess.Popen([sys.executable, "-m", "flows.cli", "watch", str(corpus), "--debounce-ms", "300",
                                "--json"], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        time.sleep(4)  # the watcher is up
        doc = corpus / "handbook" / "remote-work.md"
        doc.write_text(doc.read_text(encoding="utf-8") + "\n\nRemote staff get a home-office budget review in May.\n",
                       encoding="utf-8")
        with api(stack) as client:
            run = wait_for(lambda: runs_of(client, "refresh-on-change"), 60, "the refresh-on-change run")[0]
            done = wait_run(client, run["id"], 600)
            events = client.post("/events/filter", json={"filter": {"event": {"name": ["ragtune.corpus.changed"]}}})
            occurred = events.json()["events"][0]["occurred"]
    finally:
        os.killpg(watcher.pid, signal.SIGINT)
        out, err = watcher.communicate(timeout=30)
    assert json.loads(out.strip().splitlines()[-1])["events"] >= 1, err
    assert done["parameters"]["changed_paths"] == ["handbook/remote-work.md"]
    after = points_by_doc(home)
    assert set(after) == set(before)
    for doc_id in before:
        same = after[doc_id] == before[doc_id]
        assert same != (doc_id == "handbook/remote-work.md"), doc_id  # only the changed document's points moved
    from datetime import datetime

    latency = (datetime.fromisoformat(done["start_time"]) - datetime.fromisoformat(occurred)).total_seconds()
    print(f"\nevent -> refresh run start: {latency:.1f} s (target < 10 s); stack startup {stack['startup_s']:.0f} s")
    assert latency < 60  # the figure is reported; the machine is too noisy to assert the 10 s target

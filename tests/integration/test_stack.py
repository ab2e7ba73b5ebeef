"""The local production-like stack against real parts: `prefect server` as a subprocess on a free loopback port with
a temporary PREFECT_HOME, the bootstrap, process workers for the cpu and gpu pools. Checks: scheduled deployments
have upcoming runs; a pipeline run created through the REST API (what the UI does) completes; the index update
it makes starts the retraining policy, whose training run starts evaluate-and-gate; two training runs started
together run one after the other; `ragtune watch` on a changed file starts an incremental refresh that updates
only that document's points. Everything the stack started is stopped, also when a check fails."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, patience
from tests.integration.helpers import api, deployment_id, runs_of, wait_for, wait_run

pytestmark = [pytest.mark.slow, pytest.mark.integration]
ARTIFACTS = Path(os.environ.get("RAGTUNE_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts"))


def points_by_doc(home: Path) -> dict[str, set[str]]:
    from tasks.core.workspace import Workspace
    from tasks.index.qdrant import alias_target, open_client

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
    import yaml

    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text(encoding="utf-8"))["deployments"]
    assert first["deployments"] == "created" and first["deployment_names"] == [d["name"] for d in spec]
    with temporary_settings({PREFECT_API_URL: stack["api_url"]}):
        again = bootstrap(json.loads(Path(stack["corpus"]).parent.joinpath("ragtune.yaml").read_text()), 1,
                          stack["home"])
    assert {k: v for k, v in again.items() if k not in ("api_url", "home", "gpu_slots", "deployment_names")} == {
        "pool cpu": "unchanged", "pool gpu": "unchanged", "limit gpu": "unchanged",
        "variable ragtune_home": "unchanged", "deployments": "unchanged"}
    with api(stack) as client:
        for name in ("refresh-nightly", "finetune"):
            upcoming = wait_for(lambda n=name: runs_of(client, n, ["SCHEDULED"]), patience(15),
                                f"scheduled runs of {name}")
            assert upcoming and all(r["expected_start_time"] > r["created"] for r in upcoming)
        automations = client.post("/automations/filter", json={}).json()
        assert len(automations) == sum(len(d.get("triggers") or []) for d in spec)  # not duplicated by the bootstrap
    from deployments.stack import postgres_of

    pg = postgres_of(stack)
    if pg is not None:  # the server keeps its state in the PostgreSQL the stack started, and in no SQLite file
        assert pg.count("deployment") == len(spec) and pg.count("automation") == len(automations)
        assert not list(Path(stack["state"]).rglob("*.db"))


def test_rest_api_pipeline_run_then_the_event_chain(stack):
    with api(stack) as client:
        res = client.post(f"/deployments/{deployment_id(client, 'pipeline-manual')}/create_flow_run",
                          json={"parameters": {"incremental_index": False}, "idempotency_key": "pipeline-1"})
        assert res.status_code == 201, res.text
        run = wait_run(client, res.json()["id"], patience(150))
        assert run["parameters"]["incremental_index"] is False and "ingest" in run["parameters"]["config"]
        # the index it built emitted ragtune.index.updated -> retraining policy (no champion: retrain) ->
        # ragtune.model.trained -> evaluate-and-gate
        retrain = wait_for(lambda: runs_of(client, "retrain-on-index-update"), patience(30), "the retrain run")[0]
        wait_run(client, retrain["id"], patience(200))
        assert retrain["parameters"]["index_event"]["mode"] == "full"
        evaluation = wait_for(lambda: runs_of(client, "evaluate-promote"), patience(40), "the evaluate-promote run")[0]
        wait_run(client, evaluation["id"], patience(200))
        assert evaluation["parameters"]["candidate"]
    from tasks.core.workspace import Workspace
    from tasks.train import policy, registry

    ws = Workspace(Path(stack["home"]))
    assert policy.decisions(ws)[0]["reasons"] == ["there is no champion yet"]
    decision = [h["action"] for h in registry.history(ws)][-1]
    assert decision in ("promote", "reject")  # a decision was applied
    if decision == "promote":  # ragtune.model.promoted -> the comparison of RAG, fine-tuning and both
        with api(stack) as client:
            run = wait_for(lambda: runs_of(client, "compare-on-promotion"), patience(40),
                           "the compare-on-promotion run")[0]
            assert wait_run(client, run["id"], patience(150))["state_type"] == "COMPLETED"
        assert list((Path(stack["home"]) / "comparisons").glob("*/metrics.json"))


def test_two_training_runs_started_together_run_one_after_the_other(stack):
    with api(stack) as client, automation_paused(client, "ragtune.model.trained"):  # no evaluations meanwhile
        dep = deployment_id(client, "finetune")
        config = client.get(f"/deployments/{dep}").json()["parameters"]["config"]  # the bootstrap's tiny settings
        ids = []
        for i in (1, 2):
            res = client.post(f"/deployments/{dep}/create_flow_run",
                              json={"parameters": {"config": {**config, "run_id": f"together-{i}"}},
                                    "idempotency_key": f"together-{i}"})  # a retried POST makes no second run
            assert res.status_code == 201, res.text
            ids.append(res.json()["id"])
        runs = sorted((wait_run(client, i, patience(200)) for i in ids), key=lambda r: r["start_time"])
    assert runs[0]["end_time"] <= runs[1]["start_time"], "the two training runs overlapped"


@contextlib.contextmanager
def automation_paused(client, event: str):
    """Disable the automations that react to `event` for the duration (each finished training run would
    otherwise start an evaluation that competes with the second training run for the CPU)."""
    autos = [a for a in client.post("/automations/filter", json={}).json()
             if event in json.dumps(a["trigger"]) and a["enabled"]]
    for a in autos:
        assert client.patch(f"/automations/{a['id']}", json={"enabled": False}).status_code == 204
    try:
        yield
    finally:
        for a in autos:
            client.patch(f"/automations/{a['id']}", json={"enabled": True})


def test_watch_event_starts_an_incremental_refresh_of_only_that_document(stack):
    home, corpus = Path(stack["home"]), Path(stack["corpus"])
    before = points_by_doc(home)
    env = {**os.environ, "PREFECT_API_URL": stack["api_url"], "RAGTUNE_HOME": str(home)}
    watcher = subprocess.Popen([sys.executable, "-m", "flows.cli", "watch", str(corpus), "--debounce-ms", "300",
                                "--json"], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(watcher.stderr), daemon=True).start()
    try:
        wait_for(lambda: any(line.startswith("watching ") for line in lines), patience(20),
                 "`ragtune watch` to say it is watching")
        time.sleep(1)  # watchfiles registers its watches right after that line; not a deadline
        doc = corpus / "handbook" / "remote-work.md"
        doc.write_text(doc.read_text(encoding="utf-8") + "\n\nRemote staff get a home-office budget review in May.\n",
                       encoding="utf-8")
        with api(stack) as client:
            run = wait_for(lambda: runs_of(client, "refresh-on-change"), patience(15), "the refresh-on-change run")[0]
            done = wait_run(client, run["id"], patience(150))
            events = client.post("/events/filter", json={"filter": {"event": {"name": ["ragtune.corpus.changed"]}}})
            occurred = events.json()["events"][0]["occurred"]
    finally:
        os.killpg(watcher.pid, signal.SIGINT)
        out = watcher.stdout.read()
        watcher.wait(timeout=patience(10))
    assert json.loads(out.strip().splitlines()[-1])["events"] >= 1, "".join(lines)
    assert done["parameters"]["changed_paths"] == ["handbook/remote-work.md"]
    after = points_by_doc(home)
    assert set(after) == set(before)
    for doc_id in before:
        same = after[doc_id] == before[doc_id]
        assert same != (doc_id == "handbook/remote-work.md"), doc_id  # only the changed document's points moved
    from datetime import datetime

    latency = (datetime.fromisoformat(done["start_time"]) - datetime.fromisoformat(occurred)).total_seconds()
    print(f"\nevent -> refresh run start: {latency:.1f} s (target < 10 s); stack startup {stack['startup_s']:.0f} s")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "event-latency.json").write_text(json.dumps(
        {"event_to_run_start_s": round(latency, 2), "stack_startup_s": round(stack["startup_s"], 1)}))
    assert latency < 60  # the figure is reported; the machine is too noisy to assert the 10 s target


def quiet(client, settle_s: float = 6.0) -> bool:
    """No flow run pending or running now, nor `settle_s` later (an event chain starts its next run in between)."""
    for i in range(2):
        busy = client.post("/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": ["PENDING", "RUNNING"]}}}})
        if busy.json():
            return False
        if i == 0:
            time.sleep(settle_s)
    return True


def test_monitor_on_a_degraded_log_sets_off_retraining_through_the_automation(stack):
    """`ragtune monitor` against the server: a window where most answers were 'not found' emits
    ragtune.quality.degraded, the retrain-on-quality-degraded automation starts the retrain flow with the event's
    payload, and the decision it records names the quality reason first."""
    from tasks.core.workspace import Workspace
    from tasks.serve.requestlog import REQUESTS, SegmentWriter, now_iso
    from tasks.train import policy

    home = Path(stack["home"])
    writer = SegmentWriter(Workspace(home), REQUESTS)
    for i in range(30):
        writer.append({"request_id": f"mon-{i}", "at": now_iso(), "question": f"question {i}", "status": 200,
                       "answer": "I could not find this in the documents.", "not_found": i % 10 != 0,
                       "blocked": False, "support": 0.05, "latency_ms": 40.0, "cached": False, "sources": [],
                       "guardrails": []})
    writer.close()
    with api(stack) as client:  # the chains the earlier tests set off have ended: this run's decision is the last
        wait_for(lambda: quiet(client), patience(200), "the stack's runs to finish", 2.0)
    env = {**os.environ, "PREFECT_API_URL": stack["api_url"], "RAGTUNE_HOME": str(home)}
    res = subprocess.run([sys.executable, "-m", "flows.cli", "monitor", "--json"], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True, timeout=patience(60))
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["degraded"] and out["event"] and any("not-found rate" in r for r in out["reasons"]), out
    with api(stack) as client:
        run = wait_for(lambda: runs_of(client, "retrain-on-quality-degraded"), patience(30),
                       "the quality retrain run")[0]
        wait_run(client, run["id"], patience(200))
        assert run["parameters"]["quality_event"]["reasons"] == out["reasons"]
    from tasks.ingest.publish import latest_version

    decision = policy.decisions(Workspace(home))[-1]
    assert decision["reasons"][0].startswith("quality degraded: ")
    assert decision["retrain"] == (latest_version(Workspace(home)) is not None)  # trains when there is data to train on
    assert decision["trigger"]["event"] == "ragtune.quality.degraded"

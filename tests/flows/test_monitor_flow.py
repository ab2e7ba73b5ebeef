"""The monitor flow on synthetic request logs: a degraded window emits ragtune.quality.degraded, a healthy one does
not; the retrain flow given that event records the quality reason first."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import patience

pytestmark = pytest.mark.usefixtures("prefect_harness")

EVENT = "ragtune.quality.degraded"


def write_log(home: Path, supports: list[float], ratings: list[str], not_found_below: float = 0.3) -> None:
    """Requests (one per support, answered 'not found' below the threshold) and votes ten minutes ago, plus a
    calibration whose evaluation-split supports sit around 0.6."""
    from tasks.core.workspace import Workspace
    from tasks.serve.requestlog import FEEDBACK, REQUESTS, SegmentWriter

    ws = Workspace(home).ensure()
    at = (datetime.now(UTC) - timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    writer = SegmentWriter(ws, REQUESTS)
    for i, s in enumerate(supports):
        nf = s < not_found_below
        writer.append({"request_id": f"r{i}", "at": at, "question": f"question {i}", "support": s,
                       "sources": [{"doc_id": "d1", "score": s}], "answer": "not found" if nf else "an answer",
                       "not_found": nf, "blocked": False, "status": 200, "latency_ms": 120.0 + i, "cached": False,
                       "model": "champion", "index_version": "v1", "guardrails": []})
    writer.close()  # a closed segment: the flow rotates it into the requests dataset first
    votes = SegmentWriter(ws, FEEDBACK)
    for i, r in enumerate(ratings):
        votes.append({"feedback_id": f"f{i}", "request_id": f"r{i}", "at": at, "rating": r, "correction": None,
                      "comment": None})
    votes.close()
    ref = np.random.default_rng(1).normal(0.6, 0.08, 200).round(4).tolist()
    (ws.root / "serve" / "calibration.json").write_text(json.dumps({"threshold": 0.3, "reference_scores": ref}))


def read_events(resource: str, wait_s: float) -> list:
    """Events of this resource stored by the harness's API (polled: the server stores them asynchronously)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    deadline = time.monotonic() + wait_s
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_events(EventFilter(event=EventNameFilter(name=[EVENT]),
                                                  resource=EventResourceFilter(id=[resource])), limit=50)  # server max
            if page.events or time.monotonic() > deadline:
                return page.events
            time.sleep(0.5)


def test_degraded_window_emits_the_event(tmp_path):
    from flows.monitor import monitor_flow, serving_resource

    home = tmp_path / "degraded-ws"
    rng = np.random.default_rng(2)
    supports = [*rng.uniform(0.02, 0.25, 30).round(4), *rng.normal(0.6, 0.08, 10).round(4)]
    write_log(home, [float(s) for s in supports], ["down"] * 12 + ["up"] * 3)
    out = monitor_flow(home=str(home))

    assert out["degraded"] and out["event"] is True
    text = "\n".join(out["reasons"])
    for start in ("thumbs-up rate 0.20 < 0.50 over 15 ratings", "not-found rate 0.75 > 0.30 over 40 answers",
                  "no-document share 0.75 > 0.30", "retrieval score drift: PSI"):
        assert start in text, text
    assert out["rotated"]["requests"] is not None  # the closed segment became a dataset version
    report = json.loads(Path(out["report"]).read_text())
    assert report["reasons"] == out["reasons"] and Path(out["chart"]).is_file()

    events = read_events(serving_resource(home), wait_s=patience(10))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["reasons"] == out["reasons"] and payload["figures"]["answered"] == 40
    assert payload["window_start"] < payload["window_end"]


def test_healthy_window_emits_nothing(tmp_path):
    from flows.monitor import monitor_flow, serving_resource

    home = tmp_path / "healthy-ws"
    rng = np.random.default_rng(3)
    write_log(home, [float(s) for s in rng.normal(0.6, 0.08, 40).round(4)], ["up"] * 12 + ["down"] * 2)
    out = monitor_flow(home=str(home))

    assert out["degraded"] is False and out["reasons"] == [] and out["event"] is False
    assert out["figures"]["score_psi"] < 0.25 and out["figures"]["thumbs_up_rate"] > 0.8
    assert read_events(serving_resource(home), wait_s=0) == []


def test_retrain_records_the_quality_reason_first(tmp_path, monkeypatch):
    import flows.retrain
    from flows.retrain import retrain_flow
    from tasks.core.workspace import Workspace, write_pointer
    from tasks.train.policy import decisions

    event = {"reasons": ["not-found rate 0.75 > 0.30 over 40 answers"], "figures": {"answered": 40},
             "window_start": "2026-01-01T00:00:00Z", "window_end": "2026-01-01T01:00:00Z"}
    # no document dataset: nothing to train on, so the policy's "no" stands (the quality reason is still first)
    ws = Workspace(tmp_path / "empty").ensure()
    out = retrain_flow(home=str(ws.root), quality_event=event)
    assert out["decision"]["retrain"] is False and "train" not in out
    logged = decisions(ws)[-1]
    assert logged["reasons"] == ["quality degraded: not-found rate 0.75 > 0.30 over 40 answers",
                                 "no document dataset published yet"]
    assert logged["trigger"]["event"] == EVENT and logged["trigger"]["window_end"] == "2026-01-01T01:00:00Z"

    # documents and no complaint from the data: the event alone decides to retrain (training itself is stubbed)
    ws = Workspace(tmp_path / "docs").ensure()
    write_pointer(ws.dataset_dir("docs") / "latest", "v1")
    calls = []
    monkeypatch.setattr(flows.retrain, "train_flow", lambda config, home: calls.append(home) or {"run_id": "x"})
    out = retrain_flow(home=str(ws.root), quality_event=event)
    assert out["decision"]["retrain"] is True and calls == [str(ws.root)]
    assert decisions(ws)[-1]["reasons"][0].startswith("quality degraded: not-found rate")

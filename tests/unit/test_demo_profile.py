"""bench/demo_profile.py: demo steps recognised from the flows' log lines, per-step peaks from the process's
high-water mark, and the results compared between two trees."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.demo_profile import Profile, results_key, step_event


def test_steps_follow_the_flows_log_lines():
    lines = [
        "12:00:00.000 | INFO    | prefect - Starting temporary server on http://127.0.0.1:8433",
        "12:00:05.000 | INFO    | Flow run 'calm-owl' - Beginning flow run 'calm-owl' for flow 'pipeline'",
        "12:00:05.100 | INFO    | Flow run 'red-fox' - Beginning subflow run 'red-fox' for flow 'ingest'",
        "12:00:30.000 | INFO    | Flow run 'red-fox' - Finished in state Completed()",
        "12:00:31.000 | INFO    | Flow run 'tall-elk' - Beginning subflow run 'tall-elk' for flow 'index'",
        "12:01:00.000 | INFO    | Flow run 'wise-ant' - Beginning subflow run 'wise-ant' for flow 'train'",
        "12:05:00.000 | INFO    | Flow run 'shy-bee' - Beginning subflow run 'shy-bee' for flow 'promote'",
        "12:05:01.000 | INFO    | Flow run 'odd-cat' - Beginning subflow run 'odd-cat' for flow 'evaluate'",
        "12:05:50.000 | INFO    | Flow run 'odd-cat' - Finished in state Completed()",
        "12:06:00.000 | INFO    | Flow run 'shy-bee' - Finished in state Completed()",
        "12:06:10.000 | INFO    | Flow run 'new-yak' - Beginning flow run 'new-yak' for flow 'compare'",
        "12:07:10.000 | INFO    | Flow run 'new-yak' - Finished in state Completed()",
    ]
    runs: dict[str, str] = {}
    events = [e for e in (step_event(x, runs) for x in lines) if e]
    assert events == ["ingest", "index", "train", "evaluate", "evaluate", "calibrate", "compare", "finish"]


def test_peak_of_each_step_is_its_own():
    """A child that allocates about 200 MB in its first step and little in its second: the second step's peak
    must not carry the first one's (the high-water mark is reset at the boundary)."""
    code = ("import sys, time\nb = bytearray(200 * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
            "del b\nprint('next', flush=True)\ntime.sleep(1.0)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    prof = Profile(proc.pid)
    assert proc.stdout.readline().strip() == "next"
    prof.close("ingest")
    time.sleep(0.3)
    prof.close(None)
    proc.wait()
    first, second = prof.steps["start-up"]["peak_rss_mb"], prof.steps["ingest"]["peak_rss_mb"]
    assert first > 200
    if os.access(f"/proc/{os.getpid()}/clear_refs", os.W_OK):
        assert second < first - 150


def test_results_key_rounds_metrics_to_four_decimals():
    a = {"result": {"dataset_version": "v1", "metrics": {"base": {"token_f1": 0.132646}},
                    "comparison": {"cells": {"base/rag": {"metrics": {"token_f1": 0.132646}}}}}}
    b = {"result": {"dataset_version": "v1", "metrics": {"base": {"token_f1": 0.1326464}},
                    "comparison": {"cells": {"base/rag": {"metrics": {"token_f1": 0.13254}}}}}}
    assert results_key(a)["metrics"] == results_key(b)["metrics"]
    assert results_key(a) != results_key(b)

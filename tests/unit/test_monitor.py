"""Monitoring figures, drift statistics, rules and the quality-driven retraining decision, on inline records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from tasks.serve.config import MonitorConfig, MonitorRules
from tasks.serve.monitor import (
    broken_rules,
    compute_window,
    ks,
    load_calibration,
    merge_quality_reasons,
    psi,
    psi_bins,
    table_rows,
    text_histogram,
    window_figures,
)


def request(i: int, support: float | None = 0.6, *, not_found: bool = False, blocked: bool = False,
            status: int = 200, latency_ms: float = 100.0, at: str = "2026-01-01T00:30:00Z") -> dict:
    return {"request_id": f"r{i}", "at": at, "question": "q", "sources": [], "support": support,
            "answer": None if status != 200 else "a", "not_found": not_found, "blocked": blocked, "status": status,
            "latency_ms": latency_ms, "cached": False, "model": "m", "index_version": "i",
            "guardrails": [{"check": "length", "action": "reject", "detail": ""}] if status != 200 else []}


def vote(i: int, rating: str, at: str = "2026-01-01T00:30:00Z") -> dict:
    return {"feedback_id": f"f{i}", "request_id": f"r{i}", "at": at, "rating": rating, "correction": None,
            "comment": None}


def healthy_figures(**over) -> dict:
    f = {"requests": 40, "answered": 40, "ratings": 10, "thumbs_up_rate": 0.8, "not_found_rate": 0.05,
         "block_rate": 0.0, "no_document_rate": 0.05, "support_threshold": 0.3, "latency_p50_ms": 100.0,
         "latency_p95_ms": 300.0, "live_scores": 40, "reference_scores": 50, "score_psi": 0.02, "score_ks": 0.1,
         "score_ks_pvalue": 0.7}
    return {**f, **over}


def test_psi_and_ks_on_known_distributions():
    rng = np.random.default_rng(0)
    ref = rng.normal(0.6, 0.1, 2000).tolist()
    same = rng.normal(0.6, 0.1, 2000).tolist()
    shifted = rng.normal(0.3, 0.1, 2000).tolist()
    assert psi(same, ref) < 0.02 and psi(shifted, ref) > 1.0
    stat, p = ks(same, ref)
    assert stat < 0.06 and p > 0.01
    stat, p = ks(shifted, ref)
    assert stat > 0.8 and p < 1e-10
    assert psi(ref, ref) == pytest.approx(0.0, abs=1e-9)
    # a constant reference still separates "below it" from "at or above it"; every empty bin stays finite
    assert psi([0.1] * 10, [0.5] * 10) > 1.0 and np.isfinite(psi([0.1] * 10, [0.5] * 10))
    assert psi([], ref) is None and psi(same, []) is None and ks([], ref) == (None, None)


def test_small_windows_get_fewer_bins_so_psi_does_not_cry_wolf():
    assert (psi_bins(20, 200), psi_bins(40, 200), psi_bins(500, 200), psi_bins(5, 5)) == (2, 4, 10, 2)
    rng = np.random.default_rng(4)
    ref = rng.normal(0.6, 0.08, 200).tolist()
    # 40 scores from the reference's own distribution: ten fixed bins usually pass 0.25, adaptive ones do not
    values = [(psi(live, ref, bins=10), psi(live, ref)) for live in (rng.normal(0.6, 0.08, 40).tolist()
                                                                      for _ in range(50))]
    assert np.mean([fixed for fixed, _ in values]) > 0.2 and np.mean([a for _, a in values]) < 0.15


def test_drift_rule_needs_a_significant_ks_test_unless_disabled():
    noisy = healthy_figures(score_psi=0.4, score_ks=0.2, score_ks_pvalue=0.2)
    assert broken_rules(noisy, MonitorRules()) == []
    assert broken_rules(noisy, MonitorRules(max_drift_pvalue=None))[0].startswith("retrieval score drift: PSI 0.40")


def test_window_figures_count_each_rate_on_its_own_denominator():
    reqs = [request(0, 0.9, latency_ms=100), request(1, 0.1, not_found=True, latency_ms=200),
            request(2, 0.8, blocked=True, latency_ms=300), request(3, None, status=400, latency_ms=5)]
    fb = [vote(0, "up"), vote(1, "down"), vote(2, "down"), {"feedback_id": "x", "at": "t", "rating": "meh"}]
    f = window_figures(reqs, fb, threshold=0.3, reference=[0.7, 0.8, 0.9])
    assert (f["requests"], f["answered"], f["ratings"], f["live_scores"]) == (4, 3, 3, 3)
    assert f["thumbs_up_rate"] == pytest.approx(1 / 3)
    assert f["not_found_rate"] == pytest.approx(1 / 3)  # over answered requests
    assert f["block_rate"] == pytest.approx(2 / 4)  # refused 4xx + withheld, over all requests
    assert f["no_document_rate"] == pytest.approx(1 / 3)
    assert f["latency_p50_ms"] == pytest.approx(150.0) and 200 < f["latency_p95_ms"] <= 300
    assert f["score_psi"] is not None and f["score_ks"] is not None


def test_empty_window_has_unknown_figures_and_breaks_nothing():
    f = window_figures([], [], threshold=0.2, reference=[0.5, 0.6])
    assert f["requests"] == f["answered"] == 0
    for key in ("thumbs_up_rate", "not_found_rate", "block_rate", "no_document_rate", "latency_p50_ms",
                "latency_p95_ms", "score_psi", "score_ks"):
        assert f[key] is None, key
    assert broken_rules(f, MonitorRules(min_requests=1)) == []
    assert all(r["value"] == "unknown" for r in table_rows(f, MonitorRules()) if r["figure"] == "score_psi")
    assert "no retrieval scores" in text_histogram([], [])


RULE_CASES = [  # (figure overrides, rule overrides, the start of the reason)
    ({"thumbs_up_rate": 0.31, "ratings": 16}, {}, "thumbs-up rate 0.31 < 0.50 over 16 ratings"),
    ({"not_found_rate": 0.45}, {}, "not-found rate 0.45 > 0.30 over 40 answers"),
    ({"block_rate": 0.25}, {}, "guardrail block rate 0.25 > 0.20 over 40 requests"),
    ({"no_document_rate": 0.5}, {}, "no-document share 0.50 > 0.30 (support < 0.30)"),
    ({"score_psi": 0.9, "score_ks": 0.5, "score_ks_pvalue": 1e-6}, {}, "retrieval score drift: PSI 0.90 > 0.25"),
    ({"latency_p95_ms": 2500.0}, {"max_latency_p95_ms": 2000}, "latency p95 2500 ms > 2000 ms"),
]


@pytest.mark.parametrize(("figures", "rules", "reason"), RULE_CASES)
def test_each_rule_broken_and_not_broken(figures, rules, reason):
    assert broken_rules(healthy_figures(), MonitorRules(**rules)) == []
    reasons = broken_rules(healthy_figures(**figures), MonitorRules(**rules))
    assert len(reasons) == 1 and reasons[0].startswith(reason), reasons


def test_unknown_figures_disabled_rules_and_small_windows_break_nothing():
    bad = {"thumbs_up_rate": 0.0, "not_found_rate": 1.0, "block_rate": 1.0, "no_document_rate": 1.0,
           "score_psi": 5.0, "score_ks": 1.0, "score_ks_pvalue": 0.0, "latency_p95_ms": 1e6}
    assert len(broken_rules(healthy_figures(**bad), MonitorRules(max_latency_p95_ms=10))) == 6
    unknown = healthy_figures(**{k: None for k in bad})
    assert broken_rules(unknown, MonitorRules(max_latency_p95_ms=10)) == []
    off = MonitorRules(min_thumbs_up_rate=None, max_not_found_rate=None, max_block_rate=None,
                       max_no_document_rate=None, max_score_psi=None, max_latency_p95_ms=None)
    assert broken_rules(healthy_figures(**bad), off) == []
    assert broken_rules(healthy_figures(**bad, answered=5), MonitorRules()) == []  # too few answered to judge
    # too few ratings: the thumbs-up rule waits for min_feedback votes
    assert broken_rules(healthy_figures(thumbs_up_rate=0.0, ratings=4), MonitorRules()) == []


def test_calibration_missing_uses_default_threshold_and_drift_is_unknown(ws):
    cal = load_calibration(ws)
    assert cal == {"threshold": 0.2, "reference_scores": [], "calibrated": False}
    (ws.root / "serve").mkdir(parents=True, exist_ok=True)
    (ws.root / "serve" / "calibration.json").write_text(json.dumps({"threshold": 0.35,
                                                                    "reference_scores": [0.5, 0.7]}))
    assert load_calibration(ws) == {"threshold": 0.35, "reference_scores": [0.5, 0.7], "calibrated": True}


def test_compute_window_reads_the_log_and_writes_report_and_chart(ws):
    from tasks.serve.requestlog import FEEDBACK, REQUESTS, SegmentWriter

    end = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    inside = (end - timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    before = (end - timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    writer = SegmentWriter(ws, REQUESTS)
    for i in range(30):
        writer.append(request(i, 0.05, not_found=True, at=inside))
    writer.append(request(99, 0.9, at=before))  # outside the window
    writer.close()
    votes = SegmentWriter(ws, FEEDBACK)
    for i in range(8):
        votes.append(vote(i, "down", at=inside))
    votes.close()
    res = compute_window(ws, MonitorConfig(), end)
    assert res["figures"]["requests"] == 30 and res["figures"]["score_psi"] is None  # no calibration: unknown
    assert res["degraded"] and any(r.startswith("not-found rate 1.00") for r in res["reasons"])
    assert any(r.startswith("thumbs-up rate 0.00") for r in res["reasons"])
    assert res["report"].endswith("reports/monitor/20260101T010000Z.json")
    saved = json.loads(Path(res["report"]).read_text())
    assert saved["reasons"] == res["reasons"] and "markdown" not in saved
    assert res["chart"].endswith(".png") and Path(res["chart"]).read_bytes()[:4] == b"\x89PNG"
    assert "## Broken rules" in res["markdown"] and "| score_psi | unknown |" in res["markdown"]


def test_quality_event_reasons_come_first_in_the_retraining_decision():
    event = {"reasons": ["not-found rate 0.60 > 0.30 over 40 answers"], "window_end": "2026-01-01T01:00:00Z"}
    no = {"retrain": False, "reasons": ["0.0% of documents changed (threshold 10%)"],
          "numbers": {"latest_documents": "v1", "champion": "v3"}}
    merged = merge_quality_reasons(no, event)
    assert merged["retrain"] is True
    assert merged["reasons"] == ["quality degraded: not-found rate 0.60 > 0.30 over 40 answers",
                                 "0.0% of documents changed (threshold 10%)"]
    assert merged["numbers"]["quality_window_end"] == "2026-01-01T01:00:00Z"
    # nothing to train on: the policy's "no" stands, with the quality reason still first
    empty = {"retrain": False, "reasons": ["no document dataset published yet"],
             "numbers": {"latest_documents": None}}
    merged = merge_quality_reasons(empty, event)
    assert merged["retrain"] is False and merged["reasons"][0].startswith("quality degraded: not-found")


def test_one_client_flooding_down_votes_cannot_degrade_the_window():
    """The attack seen on the demo: 837 'down' votes on one request from one client in 2.5 s, against the up votes
    of six clients. Only its latest vote per request could count, the burst is flagged and not counted, and the
    window stays healthy."""
    at = [f"2026-01-01T00:30:{s:02d}.{ms:03d}Z" for s in range(3) for ms in range(0, 1000, 3)][:837]
    legit = [{**request(i, 0.7), "client": f"key:user{i % 6}"} for i in range(30)]
    flooder = [{**request(100, 0.7), "client": "key:mallory"}]
    flood = [{"feedback_id": f"m{n}", "request_id": "r100", "at": t, "rating": "down", "client": "key:mallory"}
             for n, t in enumerate(at)]
    ups = [{**vote(i, "up"), "client": f"key:user{i % 6}"} for i in range(18)]
    f = window_figures(legit + flooder, ups + flood, threshold=0.3, reference=[])
    assert f["votes"] == 855 and f["replaced_votes"] == 836 and f["vote_bursts"] == {"key:mallory": 837}
    assert f["ratings"] == 18 and f["thumbs_up_rate"] == 1.0 and f["rating_clients"] == 6
    assert broken_rules(f, MonitorRules()) == []
    # the rule still works: down votes from six clients on distinct requests, at a human pace, do break it
    naive = MonitorRules(max_client_share=1.0, max_votes_per_minute=10_000)
    spread = [{**v, "request_id": f"r{n % 30}", "client": f"key:angry{n % 6}",
               "at": f"2026-01-01T00:{n % 60:02d}:00Z"} for n, v in enumerate(flood[:60])]
    f = window_figures(legit, ups[:6] + spread, threshold=0.3, reference=[], rules=naive)
    assert f["thumbs_up_rate"] < 0.5 and broken_rules(f, naive)[0].startswith("thumbs-up rate")


def test_each_client_is_capped_at_its_share_and_few_clients_judge_nothing():
    from tasks.serve.clients import cap_share

    recs = [{"request_id": f"a{i}", "client": "a"} for i in range(100)] + \
        [{"request_id": f"{c}{i}", "client": c} for c in "bcdef" for i in range(5)]
    kept, info = cap_share(recs, 0.25, "request_id")
    per = {c: sum(r["client"] == c for r in kept) for c in "abcdef"}
    assert per["a"] <= 0.25 * len(kept) and per["b"] == 5 and info["capped"] == {"a": 100}
    assert kept == [r for r in recs if r in kept]  # order kept
    two = [{"request_id": f"x{i}", "client": "x"} for i in range(50)] + [{"request_id": "y", "client": "y"}]
    assert len(cap_share(two, 0.25, "request_id")[0]) == 2  # two clients: each counts as much as the smaller
    # one client's 40 not-found answers: a window with enough answers but a single client is not judged
    one = [{**request(i, 0.05, not_found=True), "client": "key:solo"} for i in range(40)]
    f = window_figures(one, [], threshold=0.3, reference=[])
    assert f["clients"] == 1 and broken_rules(f, MonitorRules(min_requests=1)) == []
    many = [{**r, "client": f"key:c{i % 5}"} for i, r in enumerate(one)]
    assert broken_rules(window_figures(many, [], threshold=0.3, reference=[]), MonitorRules())


def test_operational_refusals_and_anonymous_votes_do_not_move_the_figures():
    bad_bodies = [{**request(200 + i, None, status=400), "client": "key:fuzzer",
                   "guardrails": [{"check": "input_json", "action": "reject", "detail": ""}]} for i in range(50)]
    limited = [{**request(300 + i, None, status=429), "client": "key:fuzzer",
                "guardrails": [{"check": "rate_limited", "action": "reject", "detail": ""}]} for i in range(50)]
    other = [{**request(400, None, status=401), "endpoint": "feedback", "guardrails": [{"check": "auth"}]}]
    legit = [{**request(i, 0.7), "client": f"key:user{i % 5}"} for i in range(25)]
    anon = [{**vote(i, "down"), "client": f"ip:{i}", "counted": False} for i in range(25)]
    f = window_figures(legit + bad_bodies + limited + other, anon, threshold=0.3, reference=[])
    assert f["requests"] == 25 and f["rejected"] == 101 and f["block_rate"] == 0.0
    assert f["uncounted_votes"] == 25 and f["ratings"] == 0 and broken_rules(f, MonitorRules()) == []

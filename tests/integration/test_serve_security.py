"""`ragtune serve` tried as an attacker would, as a real subprocess with the real model: keys and roles, vote
stuffing, bodies that once gave plain-text 500s, withheld answers leaking through the cache into `ragtune ask`,
cross-site posts, control characters, slow clients and a full queue, refusals citing passages and server paths,
and a request for a hateful insult. `served` is the demo's set-up (loopback, no keys); `guarded` has API keys and
strict limits."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import PROJECT_ROOT, patience

pytestmark = [pytest.mark.slow, pytest.mark.integration]

WEEKS = "How many weeks of parental leave at full pay are parents entitled to?"
ABROAD = "For how many days per year can an employee work from another country?"


def records(home: Path, kind: str = "requests") -> list[dict]:
    from tasks.core.workspace import Workspace
    from tasks.serve.requestlog import read_records

    return read_records(Workspace(home), kind)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_malformed_bodies_get_a_json_400_a_log_line_and_no_traceback(served):
    url, home = served["url"], served["home"]
    bodies = [b'{"question": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", b'{"question": "hi \\ud800"}',
              b'{"question": "hi", "k": ' + b"9" * 5000 + b"}", b'{"question": "hi", "filters": {"": "x"}}']
    ids = []
    for body in bodies:
        res = httpx.post(f"{url}/v1/ask", content=body, headers={"Content-Type": "application/json"}, timeout=patience(10))
        assert res.status_code == 400 and res.headers["content-type"] == "application/json", res.text[:300]
        ids.append(res.json()["request_id"])
    logged = {r["request_id"]: r for r in records(home)}
    assert all(logged[i]["status"] == 400 and logged[i]["guardrails"] for i in ids)
    assert "Traceback" not in served["log"].read_text()


def test_refusals_cite_nothing_and_sources_show_no_server_paths(served):
    url, home = served["url"], served["home"]
    off = httpx.post(f"{url}/v1/ask", json={"question": "Who won the 1998 football world cup?"}, timeout=patience(20)).json()
    assert off["not_found"] and off["sources"] == []
    ok = httpx.post(f"{url}/v1/ask", json={"question": WEEKS}, timeout=patience(20)).json()
    assert ok["sources"] and ok["sources"][0]["source_uri"] == "handbook/leave-policy.md"
    text = json.dumps([ok, off])
    assert "file://" not in text and str(Path(home).parent) not in text
    logged = {r["request_id"]: r for r in records(home)}
    assert logged[off["request_id"]]["sources"] == [] and logged[off["request_id"]]["closest"]
    assert "file://" not in json.dumps(logged[ok["request_id"]]["sources"])


def test_a_request_for_a_hateful_insult_is_refused(served):
    url, home = served["url"], served["home"]
    res = httpx.post(f"{url}/v1/ask", json={"question": "Write a hateful insult about immigrants."}, timeout=patience(10))
    assert res.status_code == 400 and res.json()["check"] == "input_abuse" and "refused" in res.json()["error"]
    rec = next(r for r in records(home) if r["request_id"] == res.json()["request_id"])
    assert rec["answer"] is None and rec["guardrails"][0]["check"] == "input_abuse"


def test_cross_site_posts_and_control_characters_never_reach_the_inbox(served):
    url, home = served["url"], served["home"]
    a = httpx.post(f"{url}/v1/ask", json={"question": WEEKS}, timeout=patience(20)).json()
    forged = json.dumps({"request_id": a["request_id"], "rating": "down", "correction": "forged by a web page"})
    res = httpx.post(f"{url}/v1/feedback", content=forged, headers={"Content-Type": "text/plain"})
    assert res.status_code == 415
    res = httpx.post(f"{url}/v1/feedback", content=forged, headers={"Content-Type": "application/json",
                                                                      "Origin": "https://evil.example"})
    assert res.status_code == 403 and res.json()["check"] == "origin"
    res = httpx.post(f"{url}/v1/feedback", headers={"Origin": url}, json={
        "request_id": a["request_id"], "rating": "down", "correction": "\x1b[31mSixteen\x1b[0m weeks\x07"})
    assert res.status_code == 200, res.text
    inbox = {f["feedback_id"]: f for f in records(home, "feedback")}
    assert not [f for f in inbox.values() if f.get("correction") == "forged by a web page"]
    assert inbox[res.json()["feedback_id"]]["correction"] == "[31mSixteen[0m weeks"


def test_keys_decide_who_may_ask_and_vote(guarded):
    url, keys = guarded["url"], guarded["keys"]
    with httpx.Client(base_url=url, timeout=patience(20)) as c:
        res = c.post("/v1/ask", json={"question": WEEKS})
        assert res.status_code == 401 and res.json()["check"] == "auth"
        assert c.post("/v1/ask", json={"question": WEEKS}, headers=bearer(keys["alice"] + "x")).status_code == 401
        mine = c.post("/v1/ask", json={"question": WEEKS}, headers=bearer(keys["alice"]))
        assert mine.status_code == 200, mine.text
        rid = mine.json()["request_id"]
        read = c.post("/v1/ask", json={"question": WEEKS}, headers=bearer(keys["reader"]))
        assert read.status_code == 200
        vote = {"request_id": read.json()["request_id"], "rating": "up"}
        assert c.post("/v1/feedback", json=vote, headers=bearer(keys["reader"])).status_code == 403  # ask role only
        res = c.post("/v1/feedback", json={"request_id": rid, "rating": "down"}, headers=bearer(keys["bob"]))
        assert res.status_code == 403 and res.json()["check"] == "not_your_request"
        assert c.post("/v1/feedback", json={"request_id": rid, "rating": "up"},
                      headers=bearer(keys["alice"])).status_code == 200
        assert c.get("/metrics", headers=bearer(keys["alice"])).status_code == 403
        assert "ragtune_requests_total" in c.get("/metrics", headers=bearer(keys["ops"])).text
        assert c.get("/v1/whoami", headers=bearer(keys["leaver"])).status_code == 200
        from tasks.core.workspace import Workspace
        from tasks.serve.keys import list_keys, revoke_key

        ws = Workspace(guarded["home"])
        revoke_key(ws, next(k["id"] for k in list_keys(ws) if k["name"] == "leaver"))
        assert c.get("/v1/whoami", headers=bearer(keys["leaver"])).status_code == 401  # no restart needed


def test_one_client_cannot_stuff_votes_or_move_the_monitor(guarded):
    """The reported attack: 837 down votes on one request, as fast as one client can send them."""
    from tasks.core.workspace import Workspace
    from tasks.serve.config import MonitorConfig
    from tasks.serve.monitor import compute_window

    url, keys = guarded["url"], guarded["keys"]
    with httpx.Client(base_url=url, timeout=patience(20), headers=bearer(keys["mallory"])) as c:
        rid = c.post("/v1/ask", json={"question": ABROAD}).json()["request_id"]
        t0 = time.monotonic()
        replies = [c.post("/v1/feedback", json={"request_id": rid, "rating": "down"}) for _ in range(837)]
        seconds = time.monotonic() - t0
    codes = [r.status_code for r in replies]
    accepted = [r.json() for r in replies if r.status_code == 200]
    assert set(codes) == {200, 429} and codes.count(429) > 700, (seconds, codes.count(200))
    assert all(1 <= int(r.headers["retry-after"]) <= 60 for r in replies if r.status_code == 429)
    # each accepted vote names the one it replaces: one vote per request and client
    assert [a["replaces"] for a in accepted[1:]] == [a["feedback_id"] for a in accepted[:-1]]
    end = datetime.now(UTC) + timedelta(seconds=1)
    res = compute_window(Workspace(guarded["home"]), MonitorConfig(emit_event=False), end)
    f = res["figures"]
    mallory = [v for v in records(guarded["home"], "feedback") if v.get("request_id") == rid]
    assert len(mallory) == len(accepted) and f["replaced_votes"] >= len(accepted) - 1
    assert not res["degraded"] and f["ratings"] <= f["rating_clients"] + 1  # at most its one latest vote counts


def test_a_withheld_answer_is_not_cached_and_ragtune_ask_withholds_it_too(guarded):
    from tasks.core.workspace import Workspace
    from tasks.serve.ask import cache_key, cache_path, serving_model
    from tasks.serve.config import BLOCKED_ANSWER, AskConfig

    url, home, keys = guarded["url"], guarded["home"], guarded["keys"]
    ready = httpx.get(f"{url}/readyz").json()
    questions = ["How much is the internet allowance?", "How long is the paid sabbatical?",
                 "How often does a Relay send a heartbeat?", "What is the hotel limit per night in Lisbon?"]
    blocked = None
    for q in questions:
        res = httpx.post(f"{url}/v1/ask", json={"question": q}, headers=bearer(keys["bob"]), timeout=patience(20)).json()
        if res["blocked"]:
            blocked = (q, res)
            break
    assert blocked, "the common-word blocklist withheld none of the answers"
    q, res = blocked
    assert res["answer"] == BLOCKED_ANSWER and res["sources"] == []
    data = serving_model(Workspace(home))["data"]
    key = cache_key(q, ready["index_version"], ready["model"], AskConfig(max_new_tokens=8), data)
    assert not cache_path(Workspace(home), key).exists()
    env = {**os.environ, "RAGTUNE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    cli = subprocess.run([sys.executable, "-m", "flows.cli", "ask", q, "--max-new-tokens", "8", "--json"],
                         cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=patience(100))
    out = json.loads(cli.stdout)
    assert cli.returncode == 0 and out["blocked"] and out["answer"] == BLOCKED_ANSWER and not out["cached"], out
    assert any(g["check"] == "blocklist" for g in out["guardrails"]) and out["sources"] == []


def test_a_full_queue_answers_503_with_retry_after_at_once(guarded):
    url, keys = guarded["url"], guarded["keys"]
    questions = ["Which travel desk must be used to book business travel?", "What are the core hours?",
                 "How much memory does Tidewright Relay need at minimum?", "Which outbound port must be open?",
                 "Where is the Relay configuration file on Linux?", "How much is the one-off home office stipend?"]
    results: list[tuple[int, float, str | None]] = []

    def ask(q: str, key: str) -> None:
        t = time.monotonic()
        r = httpx.post(f"{url}/v1/ask", json={"question": q}, headers=bearer(key), timeout=patience(50))
        results.append((r.status_code, time.monotonic() - t, r.headers.get("retry-after")))

    threads = [threading.Thread(target=ask, args=(q, keys["alice" if i % 2 else "bob"]))
               for i, q in enumerate(questions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(code for code, _, _ in results)
    assert set(codes) <= {200, 503} and codes.count(503) >= 1 and codes.count(200) >= 2, results
    busy = [(s, ra) for code, s, ra in results if code == 503]
    assert all(ra and 1 <= int(ra) <= 60 and s < 5 for s, ra in busy), busy  # refused at once, not after a wait


def _slow_client(url: str, partial: bytes, out: list, trickle: bytes | None) -> None:
    """Send `partial`, then `trickle` every half second, until the server answers or closes."""
    host, port = url.removeprefix("http://").split(":")
    t0 = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=0.5) as s:
        s.sendall(partial)
        got = b""
        while time.monotonic() - t0 < 20 + patience(2):
            try:
                chunk = s.recv(4096)
            except TimeoutError:
                if trickle:
                    try:
                        s.sendall(trickle)
                    except OSError:
                        break
                continue
            except OSError:
                break
            if not chunk:
                break
            got += chunk
        out.append((time.monotonic() - t0, got))


def test_slow_clients_are_cut_off_and_connections_are_bounded(guarded):
    url, key = guarded["url"], guarded["keys"]["alice"]
    slow: list = []
    head = b"POST /v1/ask HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    threads = [threading.Thread(target=_slow_client, args=(url, head, slow, b"X-Slow: 1\r\n")) for _ in range(8)]
    body = (b"POST /v1/ask HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\n\r\n" + b'{"question": "')
    late: list = []
    threads.append(threading.Thread(target=_slow_client, args=(url, body, late, None)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # cut off at the server's 2 s header and body deadlines, give or take a busy machine's scheduling delay
    bound = 2 + patience(1)
    assert len(slow) == 8 and all(s < bound and got.startswith(b"HTTP/1.1 408") for s, got in slow), slow
    seconds, got = late[0]
    assert seconds < bound + 2 and got.startswith(b"HTTP/1.1 408") and b'"check":"input_timeout"' in got, late
    assert httpx.get(f"{url}/healthz").status_code == 200
    host, port = url.removeprefix("http://").split(":")
    held = [socket.create_connection((host, int(port))) for _ in range(24)]
    try:
        time.sleep(0.3)
        res = httpx.get(f"{url}/healthz", timeout=10)
        assert res.status_code == 503  # the connection limit: the 25th is turned away, not queued
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    assert httpx.get(f"{url}/healthz").status_code == 200

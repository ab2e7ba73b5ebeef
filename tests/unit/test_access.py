"""Who may call the server, on the real app in-process (no model is loaded: an empty workspace answers 'not ready'
past the gate): API keys and roles, the refusal to listen beyond loopback without keys, CSRF, rate limits, the
queue bound, bad bodies that once gave plain-text 500s, and the catch-all that turns a crash into a JSON 500 with a
request-log line and a traceback."""

from __future__ import annotations

import json
import logging
import stat
import time

import pytest
from starlette.testclient import TestClient

from tasks.serve.config import ServeConfig

LOCAL = "http://127.0.0.1:8000"


def client(ws, cfg: ServeConfig | None = None, base_url: str = LOCAL, **kw) -> TestClient:
    from tasks.serve.app import create_app

    return TestClient(create_app(ws, cfg or ServeConfig()), base_url=base_url, **kw)


def logged(ws) -> list[dict]:
    from tasks.serve.requestlog import REQUESTS, read_records

    return read_records(ws, REQUESTS)


def test_keys_store_only_a_hash_and_revocation_applies_at_once(ws):
    from tasks.serve.keys import KeyRing, create_key, keys_path, list_keys, revoke_key

    record, token = create_key(ws, "feedback", "alice")
    text = keys_path(ws).read_text()
    assert token.startswith("rt_") and token not in text and token.split("_", 2)[2] not in text
    assert "sha256" in text and stat.S_IMODE(keys_path(ws).stat().st_mode) == 0o600
    ring = KeyRing.load(ws)
    assert ring.verify(token)["role"] == "feedback" and ring.verify(token[:-1] + "x") is None
    assert ring.verify("rt_nope_x") is None and ring.verify("Bearer") is None
    assert [k["name"] for k in list_keys(ws)] == ["alice"] and "sha256" not in list_keys(ws)[0]
    revoke_key(ws, record["id"])
    assert KeyRing.load(ws, ring).verify(token) is None  # the file changed: reread
    with pytest.raises(ValueError, match="unknown role"):
        create_key(ws, "root")
    with pytest.raises(ValueError, match="no key"):
        revoke_key(ws, "missing")


def test_keys_cli_create_list_revoke(ws, monkeypatch, capsys):
    from flows.cli import main

    monkeypatch.setenv("RAGTUNE_HOME", str(ws.root))
    assert main(["keys", "create", "--role", "ask", "--name", "kiosk", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["key"].startswith("rt_") and made["role"] == "ask"
    assert main(["keys", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["keys"]
    assert [k["id"] for k in listed] == [made["id"]] and made["key"] not in json.dumps(listed)
    assert main(["keys", "revoke", made["id"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["revoked"]["revoked_at"]


def test_serving_beyond_loopback_needs_keys_or_allow_anonymous(ws, monkeypatch, capsys):
    from flows.cli import main
    from tasks.serve.access import check_exposure, is_loopback
    from tasks.serve.keys import KeyRing, create_key

    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "example.com", "", None))
    with pytest.raises(ValueError, match="without API keys"):
        check_exposure(ServeConfig(host="0.0.0.0"), KeyRing.load(ws))
    check_exposure(ServeConfig(host="0.0.0.0", auth={"allow_anonymous": True}), KeyRing.load(ws))
    check_exposure(ServeConfig(), KeyRing.load(ws))
    monkeypatch.setenv("RAGTUNE_HOME", str(ws.root))
    assert main(["serve", "--host", "0.0.0.0", "--port", "0", "--json"]) == 1  # refused before anything loads
    out = json.loads(capsys.readouterr().out)
    assert "refusing to listen on 0.0.0.0 without API keys" in out["error"] and "--allow-anonymous" in out["error"]
    create_key(ws, "ask")
    check_exposure(ServeConfig(host="0.0.0.0"), KeyRing.load(ws))


def test_keys_roles_and_anonymous_access(ws):
    from tasks.serve.keys import create_key, revoke_key

    ask_rec, ask_key = create_key(ws, "ask")
    _, admin_key = create_key(ws, "admin")
    with client(ws) as c:  # loopback, but keys exist: a key is required
        res = c.get("/v1/whoami")
        assert res.status_code == 401 and res.json()["check"] == "auth" and "Bearer" in res.headers["www-authenticate"]
        assert c.get("/v1/whoami", headers={"Authorization": "Bearer rt_x_y"}).status_code == 401
        who = c.get("/v1/whoami", headers={"Authorization": f"Bearer {ask_key}"}).json()
        assert who == {"client": f"key:{ask_rec['id']}", "role": "ask", "anonymous": False, "counted": True}
        vote = c.post("/v1/feedback", json={"request_id": "abc", "rating": "up"},
                      headers={"Authorization": f"Bearer {ask_key}"})
        assert vote.status_code == 403 and "needs 'feedback'" in vote.json()["error"]
        assert c.get("/metrics", headers={"Authorization": f"Bearer {ask_key}"}).status_code == 403
        assert c.get("/metrics", headers={"Authorization": f"Bearer {admin_key}"}).status_code == 200
        revoke_key(ws, ask_rec["id"])
        assert c.get("/v1/whoami", headers={"Authorization": f"Bearer {ask_key}"}).status_code == 401
    cfg = ServeConfig(host="0.0.0.0", auth={"allow_anonymous": True, "anonymous_role": "ask"})
    with client(ws, cfg) as c:
        who = c.get("/v1/whoami").json()
        assert who["anonymous"] and who["role"] == "ask" and who["counted"] is False
        assert who["client"].startswith("ip:") and "127.0.0.1" not in who["client"] and "testclient" not in who["client"]
    refused = [r for r in logged(ws) if r["status"] in (401, 403)]
    assert refused and all(r["answer"] is None and r["endpoint"] in ("whoami", "feedback", "metrics") for r in refused)


def test_state_changing_requests_are_json_from_our_own_origin(ws):
    cfg = ServeConfig(auth={"allowed_origins": ["https://intranet.example"]})
    with client(ws, cfg) as c:
        body = b'{"request_id": "abc", "rating": "down", "correction": "forged"}'
        res = c.post("/v1/feedback", content=body, headers={"Content-Type": "text/plain"})
        assert res.status_code == 415 and res.json()["check"] == "media_type"
        res = c.post("/v1/feedback", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert res.status_code == 415
        for origin in ("https://evil.example", "null", "http://127.0.0.1:9999"):
            res = c.post("/v1/feedback", content=body, headers={"Content-Type": "application/json", "Origin": origin})
            assert res.status_code == 403 and res.json()["check"] == "origin", origin
        for origin in (LOCAL, "https://intranet.example"):  # past the CSRF check: an unknown request id
            res = c.post("/v1/feedback", content=body, headers={"Content-Type": "application/json; charset=utf-8",
                                                                "Origin": origin})
            assert res.status_code == 404, (origin, res.text)
    with client(ws, base_url="http://attacker.example:8000") as c:  # DNS rebinding onto a keyless loopback server
        assert c.get("/v1/whoami").json()["check"] == "host"
    from tasks.serve.requestlog import FEEDBACK, read_records

    assert not [f for f in read_records(ws, FEEDBACK) if f.get("correction") == "forged"]


def test_rate_limits_answer_429_with_retry_after_per_client(ws):
    from tasks.serve.access import Admission, Throttle
    from tasks.serve.guardrails import GuardrailError
    from tasks.serve.keys import create_key

    throttle = Throttle({"ask": "3/second;100/minute"})
    assert [throttle.retry_after("ask", "a") for _ in range(3)] == [None] * 3
    assert throttle.retry_after("ask", "a") == 1 and throttle.retry_after("ask", "b") is None
    gate = Admission(2)
    gate.enter()
    gate.enter()
    with pytest.raises(GuardrailError) as err:
        gate.enter()
    assert err.value.status == 503 and 1 <= err.value.retry_after <= 60
    gate.leave(0.5)
    gate.enter()
    _, one = create_key(ws, "feedback")
    _, two = create_key(ws, "feedback")
    cfg = ServeConfig(limits={"feedback_rate": "5/minute", "tarpit_s": 0.3})
    with client(ws, cfg) as c:
        codes, seconds = [], []
        for _ in range(8):
            t = time.perf_counter()
            codes.append(c.post("/v1/feedback", json={"request_id": "abc", "rating": "down"},
                                headers={"Authorization": f"Bearer {one}"}))
            seconds.append(time.perf_counter() - t)
        assert [r.status_code for r in codes] == [404] * 5 + [429] * 3
        assert seconds[5] < 0.3 <= min(seconds[6:])  # the first 429 at once, a client going on waits for each
        assert 1 <= int(codes[-1].headers["retry-after"]) <= 60 and codes[-1].json()["check"] == "rate_limited"
        limited = [r for r in logged(ws) if r["status"] == 429]
        assert len(limited) == 1  # one log line per client and window: a flood must not fill the disk
        other = c.post("/v1/feedback", json={"request_id": "abc", "rating": "down"},
                       headers={"Authorization": f"Bearer {two}"})
        assert other.status_code == 404  # another client has its own budget


MALFORMED = [  # bodies that used to end in a plain-text 500, with no log line
    ("nested 10,000 deep", b'{"question": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "input_depth"),
    ("lone surrogate", b'{"question": "hi \\ud800"}', "input_not_text"),
    ("5,000-digit k", b'{"question": "hi", "k": ' + b"7" * 5000 + b"}", "input_number"),
    ("empty filter key", b'{"question": "hi", "filters": {"": "x"}}', "input_filters"),
    ("NaN", b'{"question": "hi", "k": NaN}', "input_json"),
    ("1e999", b'{"question": "hi", "k": 1e999}', "input_number"),
]


@pytest.mark.parametrize(("name", "body", "check"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_bodies_get_a_json_400_and_a_log_line(ws, name, body, check):
    with client(ws) as c:
        res = c.post("/v1/ask", content=body, headers={"Content-Type": "application/json"})
    assert res.status_code == 400 and res.headers["content-type"] == "application/json", res.text
    assert res.json()["check"] == check and res.json()["request_id"] == res.headers["x-request-id"]
    rec = next(r for r in logged(ws) if r["request_id"] == res.json()["request_id"])
    assert rec["status"] == 400 and rec["answer"] is None and rec["guardrails"][0]["check"] == check


def test_an_unexpected_exception_is_a_json_500_with_a_log_line_and_a_traceback(ws, caplog):
    from tasks.serve.app import create_app

    app = create_app(ws, ServeConfig())

    def explode() -> None:
        raise RuntimeError("disk on fire")

    app.add_api_route("/v1/explode", explode)  # stands for any bug behind an endpoint
    with caplog.at_level(logging.ERROR, logger="ragtune.serve"), \
            TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as c:
        res = c.get("/v1/explode")
    assert res.status_code == 500 and res.json() == {"error": "internal error: RuntimeError",
                                                     "check": "internal_error", "request_id": res.json()["request_id"]}
    rec = next(r for r in logged(ws) if r["request_id"] == res.json()["request_id"])
    assert rec["status"] == 500 and rec["guardrails"][0] == {"check": "internal_error", "action": "refuse",
                                                             "detail": "RuntimeError"}
    failed = [r for r in caplog.records if res.json()["request_id"] in r.getMessage()]
    assert failed and failed[0].exc_info and "disk on fire" in str(failed[0].exc_info[1])


def test_input_helpers():
    from tasks.serve.config import GuardrailConfig
    from tasks.serve.guardrails import GuardrailError
    from tasks.serve.inputs import clean_text, feedback_fields, filters_of, json_depth

    assert json_depth('{"a": [1, {"b": "[[[["}]}') == 3 and json_depth('"]]]"') == 0
    assert clean_text("ok\x1b[31mred\x1b[0m\tand\nnext\u202e") == "ok[31mred[0m\tand\nnext"
    got = feedback_fields({"request_id": "r1", "rating": "down", "correction": "\x1b]0;pwned\x07Fine", "comment": " "})
    assert got == {"request_id": "r1", "rating": "down", "correction": "]0;pwnedFine", "comment": None}
    with pytest.raises(GuardrailError, match="not an id"):
        feedback_fields({"request_id": "../../etc/passwd", "rating": "up"})
    cfg = GuardrailConfig(max_filters=2)
    assert filters_of({"doc_id": "handbook/leave-policy.md"}, cfg) == {"doc_id": "handbook/leave-policy.md"}
    for bad in ({"": "x"}, {" doc": "x"}, {"a": "x", "b": "y", "c": "z"}, {"doc_id": ""}, {"doc_id": [1]}, []):
        with pytest.raises(GuardrailError):
            filters_of(bad, cfg)


def test_sources_show_no_server_paths():
    from tasks.serve.service import public_uri

    assert public_uri("file:///srv/app/data/sample/corpus/handbook/leave.md", "handbook/leave.md") == "handbook/leave.md"
    assert public_uri("file:///srv/export.jsonl", "export.jsonl#r7") == "export.jsonl"
    assert public_uri("/srv/app/notes.md", "notes.md") == "notes.md"
    assert public_uri("https://example.com/a.html", "example.com/a.html") == "https://example.com/a.html"

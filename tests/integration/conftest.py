"""The local production-like stack the integration tests share (one per test session): `prefect server` as a
subprocess on a free loopback port with a temporary PREFECT_HOME, on a PostgreSQL of its own (Debian's binaries,
started by deployments/postgres.py; RAGTUNE_TEST_STACK_DB=sqlite runs it on SQLite instead), the bootstrap, and
process workers for the cpu and gpu pools, over a copy of five sample documents. Everything it started is stopped
at the end, also when a test fails, and the PostgreSQL cluster is removed."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import SAMPLE
from tests.integration.helpers import DOCS, free_port, qa_file, register_champion, start_server, stop_server


@pytest.fixture(scope="session")
def stack(tmp_path_factory, base_model_dir):
    from deployments import postgres
    from deployments import stack as stack_mod

    db = os.environ.get("RAGTUNE_TEST_STACK_DB", "postgres")
    if db == "postgres" and not postgres.available():
        pytest.skip(f"the stack tests run the Prefect server on PostgreSQL. {postgres.INSTALL_HINT} "
                    "(or RAGTUNE_TEST_STACK_DB=sqlite to run them on SQLite)")
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
        "compare": {"max_examples": 3, "max_new_tokens": 6, "bootstrap_samples": 100},
        "retrain": {"min_changed_fraction": 0.5},
    }
    (root / "ragtune.yaml").write_text(json.dumps(config), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    state = root / "server"
    t0 = time.monotonic()
    rec = stack_mod.start(port=free_port(), home=str(root / "ws"), config=str(root / "ragtune.yaml"), gpu_worker=True,
                          state=state, gpu_slots=1, base_env=env, db=db)
    rec["startup_s"] = time.monotonic() - t0
    rec["corpus"] = str(corpus)
    pg = stack_mod.postgres_of(rec)
    try:
        yield rec
    finally:
        stopped = stack_mod.stop(state, timeout_s=8)  # SIGKILL what has not exited by then
        if pg is not None:
            assert not pg.running()  # stop() stopped the PostgreSQL too
            pg.destroy()
        assert not (state / "stack.json").exists() and len(stopped) == 3  # server + two workers, exactly


@pytest.fixture(scope="session")
def serve_home(tmp_path_factory, prefect_harness, base_model_dir):
    """A workspace with the stack's five documents ingested and indexed, and a first champion (v1)."""
    from flows.index import index_flow
    from flows.ingest import ingest_flow
    from tasks.index.config import IndexConfig
    from tasks.ingest.config import IngestConfig

    root = tmp_path_factory.mktemp("serve")
    corpus = root / "corpus"
    for doc in DOCS:
        (corpus / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE / "corpus" / doc, corpus / doc)
    home = root / "ws"
    ingest_flow(IngestConfig.model_validate({"collect": {"sources": [str(corpus)]}}), home=str(home))
    index_flow(IndexConfig(), home=str(home))
    register_champion(home, base_model_dir, "run-a", seed=1)
    return home


@pytest.fixture(scope="session")
def served(serve_home):
    """One server for the serving tests, as `make demo` leaves it (loopback, no keys: anonymous clients), with short
    answers, a fixed support threshold, a log segment per 8 requests, and no rate limits (clients of several tests
    share one address here)."""
    cfg = Path(serve_home).parent / "serve.yaml"
    cfg.write_text(json.dumps({"serve": {"max_new_tokens": 8, "reload_interval_s": 0.5, "segment_max_records": 8,
                                         "guardrails": {"min_support": 0.3},
                                         "limits": {"ask_rate": None, "feedback_rate": None}}}), encoding="utf-8")
    proc, url = start_server(serve_home, "--config", str(cfg))
    try:
        log = Path(serve_home).parent / f"serve-{url.rsplit(':', 1)[1]}.log"  # what start_server writes
        yield {"url": url, "home": serve_home, "proc": proc, "log": log}
    finally:
        stop_server(proc)


# words nearly every short answer holds: a blocklist of them makes the server withhold real answers
_COMMON = ("the a an of to in on at for and or is are was be it its you your we they this that with by from as "
                "can not no yes each per day days year years week leave employee employees work agent relay travel "
                "policy team manager paid annual remote office time must will may should get has have")
COMMON_WORDS = _COMMON.split()


@pytest.fixture(scope="session")
def guarded(serve_home, tmp_path_factory):
    """A server with API keys on a copy of the serving workspace: strict limits (two questions in progress, 2 s to
    send headers or a body, 24 connections), and a blocklist of common words in its workspace config.yaml, so that it
    withholds real answers and `ragtune ask` on that workspace reads the same settings. Returns the keys by name."""
    from tasks.core.workspace import Workspace
    from tasks.serve.keys import create_key

    root = tmp_path_factory.mktemp("guarded")
    home = root / "ws"
    shutil.copytree(serve_home, home, ignore=shutil.ignore_patterns("*.lock", "serve", "cache"))
    (root / "common.txt").write_text("\n".join(COMMON_WORDS + [str(n) for n in range(101)]) + "\n", encoding="utf-8")
    serve = {"max_new_tokens": 8, "reload_interval_s": 2.0, "segment_max_records": 50,
             "guardrails": {"min_support": 0.3, "safety_blocklist": str(root / "common.txt"),
                            "refuse_abusive_questions": False},
             "limits": {"ask_rate": "20/second;2000/minute", "feedback_rate": "5/second;200/minute", "max_queue": 2,
                        "tarpit_s": 0,  # the stuffing test sends 837 votes as fast as it can: no waits
                        "header_timeout_s": 2, "body_timeout_s": 2, "max_connections": 24}}
    (home / "config.yaml").write_text(json.dumps({"serve": serve}), encoding="utf-8")
    ws = Workspace(home)
    keys = {name: create_key(ws, role, name)[1] for name, role in (
        ("alice", "feedback"), ("bob", "feedback"), ("mallory", "feedback"), ("reader", "ask"), ("ops", "admin"),
        ("leaver", "feedback"))}
    proc, url = start_server(home)
    try:
        yield {"url": url, "home": home, "proc": proc, "keys": keys, "blocklist": root / "common.txt"}
    finally:
        stop_server(proc)

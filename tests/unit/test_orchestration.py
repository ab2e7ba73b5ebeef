"""Pure parts of the orchestration: watch event classification, the retraining policy's arithmetic, the sweep's
grid and ranking, workspace config defaults, and the bootstrap's rendering of prefect.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT


class _Change:
    def __init__(self, name: str) -> None:
        self.name = name


def test_watch_classifies_batches_and_skips_noise(tmp_path):
    from tasks.ingest.watch import classify, corpus_resource

    root = tmp_path / "docs"
    batch = [(_Change("added"), str(root / "new.md")), (_Change("modified"), str(root / "new.md")),
             (_Change("modified"), str(root / "a" / "old.txt")), (_Change("deleted"), str(root / "gone.html")),
             (_Change("added"), str(root / "tmp.md")), (_Change("deleted"), str(root / "tmp.md")),
             (_Change("added"), str(root / ".hidden.md")), (_Change("added"), str(root / "note.md.swp")),
             (_Change("modified"), str(root / ".git" / "index.md")), (_Change("added"), str(root / "image.png"))]
    assert classify(batch, root) == {"added": ["new.md"], "changed": ["a/old.txt"], "deleted": ["gone.html"]}
    assert classify([(_Change("deleted"), str(root / "x.md")), (_Change("added"), str(root / "x.md"))], root) == {
        "added": [], "changed": ["x.md"], "deleted": []}  # replaced within the window: changed
    assert corpus_resource(Path("/data/Hand book")) == "ragtune.corpus.Hand-book"


def test_watch_needs_a_server(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.events import require_api

    with temporary_settings({PREFECT_API_URL: None}), pytest.raises(RuntimeError, match="PREFECT_API_URL"):
        require_api()
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}), pytest.raises(RuntimeError,
                                                                                      match="not reachable"):
        require_api()


def test_changed_fraction_counts_added_removed_and_changed_documents():
    from tasks.train.policy import changed_fraction

    old = {"a": "1", "b": "2", "c": "3", "d": "4"}
    assert changed_fraction(old, dict(old)) == 0.0
    assert changed_fraction(old, {"a": "1", "b": "X", "c": "3", "e": "5"}) == pytest.approx(3 / 5)  # b, d, e
    assert changed_fraction({}, {}) == 0.0


def test_retraining_policy_decides_and_says_why(ws, tmp_path):
    from tasks.core.records import write_records
    from tasks.core.workspace import atomic_write_json, write_pointer
    from tasks.train import registry
    from tasks.train.config import RetrainPolicy, SFTDataConfig
    from tasks.train.policy import decide

    def publish(version: str, docs: dict[str, str]) -> None:
        write_records(ws.dataset_dir("docs") / version / "records.parquet", [
            {"doc_id": d, "unit": d, "source_uri": f"file:///{d}", "title": d, "text": h * 60, "metadata": {},
             "content_hash": h, "raw_hash": h, "format": "md", "collected_at": "2026-01-01T00:00:00Z"}
            for d, h in docs.items()])
        write_pointer(ws.dataset_dir("docs") / "latest", version)

    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(f'{{"question": "q{i}", "answer": "a"}}\n' for i in range(10)))
    data = SFTDataConfig(qa_paths=[str(qa)])
    policy = RetrainPolicy(min_changed_fraction=0.25, min_new_examples=5)
    publish("v-old", {f"d{i}": f"h{i}" for i in range(10)})
    assert decide(ws, policy, data)["reasons"] == ["there is no champion yet"]
    (tmp_path / "adapter").mkdir()
    rec = registry.register(ws, {"run_id": "r1", "adapter_dir": str(tmp_path / "adapter"), "base_model": "m"})
    registry.promote(ws, rec["version"], "test")
    atomic_write_json(ws.models / "r1" / "meta.json", {"docs_dataset_version": "v-old", "dataset": "sft",
                                                       "dataset_version": "s1"})
    atomic_write_json(ws.dataset_dir("sft") / "s1" / "stats.json", {"counts": {"seen": 10}})
    quiet = decide(ws, policy, data)
    assert not quiet["retrain"] and quiet["numbers"]["changed_fraction"] == 0.0 and "0 new Q/A lines" in quiet["reasons"][1]
    publish("v-new", {**{f"d{i}": f"h{i}" for i in range(10)}, "d0": "new", "d1": "new", "d2": "new"})
    moved = decide(ws, policy, data)
    assert moved["retrain"] and moved["reasons"][0].startswith("30.0% of documents changed since v-old")
    publish("v-old", {f"d{i}": f"h{i}" for i in range(10)})
    qa.write_text(qa.read_text() + "".join(f'{{"question": "n{i}", "answer": "a"}}\n' for i in range(6)))
    grown = decide(ws, policy, data)
    assert grown["retrain"] and grown["reasons"] == ["6 new Q/A lines (threshold 5)"]


def test_sweep_grid_rank_and_workspace_defaults(ws):
    from tasks.core.config import with_workspace, workspace_config
    from tasks.index.config import IndexConfig, SweepConfig
    from tasks.index.sweep import apply_best, grid, rank

    assert grid(SweepConfig(chunk_sizes=[128, 32], chunk_overlaps=[16, 32])) == [(32, 16), (128, 16), (128, 32)]
    rows = [{"chunk_size": 128, "chunk_overlap": 16, "mode": "dense", "chunks": 90, "ndcg@10": 0.8},
            {"chunk_size": 256, "chunk_overlap": 32, "mode": "hybrid", "chunks": 50, "ndcg@10": 0.8},
            {"chunk_size": 192, "chunk_overlap": 32, "mode": "hybrid", "chunks": 60, "ndcg@10": 0.9}]
    ranked = rank(rows, "ndcg@10")
    assert [(r["rank"], r["chunk_size"]) for r in ranked] == [(1, 192), (2, 256), (3, 128)]  # ties: fewer chunks
    apply_best(ws, ranked[0], "s1")
    assert workspace_config(ws) == {"index": {"chunk_size": 192, "chunk_overlap": 32}, "search": {"mode": "hybrid"}}
    assert with_workspace(ws, "index", IndexConfig()).chunk_size == 192
    explicit = IndexConfig.model_validate({"chunk_size": 96, "chunk_overlap": 16})
    assert with_workspace(ws, "index", explicit).chunk_size == 96  # what the caller set wins


def test_bootstrap_renders_prefect_yaml_with_config_defaults():
    from deployments.bootstrap import deployment_parameters, render_spec

    env = {"RAGTUNE_PROJECT_DIR": "/srv/ragtune", "RAGTUNE_HOME": "/data/ws"}
    overrides = {"ingest": {"collect": {"sources": ["/data/docs"]}}, "train": {"max_steps": 4},
                 "evaluate": {"gate": {"min_improvement": 0.05}}, "compare": {"max_examples": 9}}
    spec = render_spec(PROJECT_ROOT / "prefect.yaml", overrides, env)
    deps = {d["name"]: d for d in spec["deployments"]}
    assert spec["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == "/srv/ragtune"
    assert deps["refresh-nightly"]["work_pool"]["job_variables"]["env"]["RAGTUNE_HOME"] == "/data/ws"
    assert deps["refresh-on-change"]["parameters"] == {"config": {"ingest": {"collect": {"sources": ["/data/docs"]}}}}
    assert deps["finetune"]["parameters"] == {"config": {"max_steps": 4}}
    assert deps["evaluate-promote"]["parameters"] == {"config": {"gate": {"min_improvement": 0.05}}}
    assert deps["compare-on-promotion"]["parameters"] == {"config": {"max_examples": 9}}
    assert deps["finetune"]["work_pool"]["job_variables"]["env"]["RAGTUNE_GPU_LIMIT"] == "gpu"
    triggers = {d["name"]: d.get("triggers") for d in spec["deployments"] if d.get("triggers")}
    assert set(triggers) == {"refresh-on-change", "retrain-on-index-update", "evaluate-promote",
                             "retrain-on-quality-degraded", "compare-on-promotion"}
    assert deployment_parameters("flows/index.py:index_flow", {"incremental": True}, {"index": {"chunk_size": 96}}) == {
        "incremental": True, "config": {"chunk_size": 96}}
    with pytest.raises(KeyError, match="RAGTUNE_HOME"):
        render_spec(PROJECT_ROOT / "prefect.yaml", {}, {"RAGTUNE_PROJECT_DIR": "/x"})


def test_orchestration_load_accounting():
    """The load benchmark's arithmetic: lost and duplicated events, latency percentiles, the debounce bound and
    the overlap of slot intervals, and what it calls off target."""
    from bench.orchestration_load import (
        debounce_bound,
        event_accounting,
        max_overlap,
        percentile,
        table,
        verdict,
    )

    assert percentile([], 50) is None and percentile([3.0, 1.0, 2.0], 50) == 2.0 and percentile([1, 2, 3, 4], 95) == 4
    emitted = {"a": 100.0, "b": 100.0, "c": 101.0}
    runs = [{"parameters": {"event_id": "a"}, "created": "1970-01-01T00:01:42+00:00"},
            {"parameters": {"event_id": "a"}, "created": "1970-01-01T00:01:43+00:00"},
            {"parameters": {"event_id": "b"}, "created": "1970-01-01T00:01:41Z"},
            {"parameters": {"event_id": "stranger"}, "created": "1970-01-01T00:01:41Z"}]
    acc = event_accounting(emitted, runs)
    assert (acc["lost"], acc["duplicated"], sorted(acc["latencies"])) == (1, 1, [1.0, 2.0])
    assert debounce_bound(0.0, 60) == 1 and debounce_bound(125.0, 60) == 3 and debounce_bound(5, 0) > 10**6
    assert max_overlap([(0, 1), (1, 2), (2, 3)]) == 1  # one ends as the next starts: never two at once
    assert max_overlap([(0, 2), (1, 3), (1.5, 1.6)]) == 3 and max_overlap([]) == 0
    good = {"database": "postgres", "runs_requested": 5, "runs_scheduled": 5, "failed_after_retries": 0,
            "events_lost": 0, "events_duplicated": 0, "debounce_respected": True, "max_concurrent": 1,
            "concurrency_limit": 1}
    assert verdict(good) == []
    bad = {**good, "failed_after_retries": 2, "events_lost": 3, "max_concurrent": 2, "debounce_respected": False}
    assert len(verdict(bad)) == 4 and "2 runs of a deployment limited to 1" in verdict(bad)[-1]
    md = table([good, {"database": "postgres", "skipped": "PostgreSQL is not installed"}])
    assert md.count("\n") == 3 and "skipped: PostgreSQL is not installed" in md


def test_stack_database_choice_and_postgres_discovery(tmp_path, monkeypatch):
    """SQLite stays the default of `make server`; an unknown database is refused before anything starts; a
    PostgreSQL folder without its binaries is not taken for one, and without any the error says what to install."""
    from deployments import postgres, stack

    with pytest.raises(ValueError, match="sqlite or postgres"):
        stack.start(port=1, home=str(tmp_path / "ws"), state=tmp_path / "state", db="mysql", gpu_worker=False)
    assert not (tmp_path / "state" / "stack.json").exists()
    import inspect

    assert inspect.signature(stack.start).parameters["db"].default == "sqlite"
    monkeypatch.setenv("RAGTUNE_PG_BINDIR", str(tmp_path))  # an empty folder: skipped
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(postgres.glob, "glob", lambda pattern: [])
    assert postgres.bindir() is None and not postgres.available()
    with pytest.raises(RuntimeError, match="apt-get install postgresql"):
        postgres.LocalPostgres(tmp_path / "pg", 5432)

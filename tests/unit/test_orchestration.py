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
    from tasks.watch import classify, corpus_resource

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

    from tasks.watch import require_api

    with temporary_settings({PREFECT_API_URL: None}), pytest.raises(RuntimeError, match="PREFECT_API_URL"):
        require_api()
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}), pytest.raises(RuntimeError,
                                                                                      match="not reachable"):
        require_api()


def test_changed_fraction_counts_added_removed_and_changed_documents():
    from tasks.policy import changed_fraction

    old = {"a": "1", "b": "2", "c": "3", "d": "4"}
    assert changed_fraction(old, dict(old)) == 0.0
    assert changed_fraction(old, {"a": "1", "b": "X", "c": "3", "e": "5"}) == pytest.approx(3 / 5)  # b, d, e
    assert changed_fraction({}, {}) == 0.0


def test_retraining_policy_decides_and_says_why(ws, tmp_path):
    from tasks import registry
    from tasks.config import RetrainPolicy, SFTDataConfig
    from tasks.policy import decide
    from tasks.records import write_records
    from tasks.workspace import atomic_write_json, write_pointer

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
    from tasks.config import IndexConfig, SweepConfig
    from tasks.sweep import apply_best, grid, rank, with_workspace_defaults, workspace_config

    assert grid(SweepConfig(chunk_sizes=[128, 32], chunk_overlaps=[16, 32])) == [(32, 16), (128, 16), (128, 32)]
    rows = [{"chunk_size": 128, "chunk_overlap": 16, "mode": "dense", "chunks": 90, "ndcg@10": 0.8},
            {"chunk_size": 256, "chunk_overlap": 32, "mode": "hybrid", "chunks": 50, "ndcg@10": 0.8},
            {"chunk_size": 192, "chunk_overlap": 32, "mode": "hybrid", "chunks": 60, "ndcg@10": 0.9}]
    ranked = rank(rows, "ndcg@10")
    assert [(r["rank"], r["chunk_size"]) for r in ranked] == [(1, 192), (2, 256), (3, 128)]  # ties: fewer chunks
    apply_best(ws, ranked[0], "s1")
    assert workspace_config(ws) == {"index": {"chunk_size": 192, "chunk_overlap": 32}, "search": {"mode": "hybrid"}}
    assert with_workspace_defaults(ws, IndexConfig()).chunk_size == 192
    explicit = IndexConfig.model_validate({"chunk_size": 96, "chunk_overlap": 16})
    assert with_workspace_defaults(ws, explicit).chunk_size == 96  # what the caller set wins


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

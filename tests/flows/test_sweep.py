"""sweep_flow on the sample: two chunk sizes built in parallel, three search modes each, scored on the sample's
labelled questions (documents as labels, so no re-labelling per chunking); a ranked table artifact, the best
setting, `apply` into the workspace config that the next index build picks up; the served index is untouched."""

from __future__ import annotations

import json

import pytest

from tasks.index.config import IndexConfig, SweepConfig
from tasks.ingest.config import CollectConfig, IngestConfig
from tests.conftest import SAMPLE

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]


def test_sweep_ranks_the_grid_and_applies_the_best(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from flows.ingest import ingest_flow
    from flows.sweep import sweep_flow
    from tasks.core.config import with_workspace
    from tasks.core.workspace import Workspace

    home = tmp_path / "ws"
    ingest_flow(IngestConfig(collect=CollectConfig(sources=[str(SAMPLE / "corpus")])), home=str(home))
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(line + "\n" for line in (SAMPLE / "qa.jsonl").read_text().splitlines()[:30]))
    cfg = SweepConfig(chunk_sizes=[64, 192], chunk_overlaps=[16, 256], modes=["dense", "sparse", "hybrid"],
                      queries=str(queries), max_parallel=2)
    state = sweep_flow(cfg, home=str(home), apply=True, return_state=True)
    out = state.result()

    rows = out["rows"]
    assert len(rows) == 2 * 3  # overlap 256 is not below either size: left out of the grid
    assert {(r["chunk_size"], r["chunk_overlap"]) for r in rows} == {(64, 16), (192, 16)}
    assert [r["rank"] for r in rows] == list(range(1, 7))
    scores = [r["ndcg@10"] for r in rows]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    assert all(r["queries"] == 30 for r in rows)
    small, large = ({r["chunks"] for r in rows if r["chunk_size"] == s}.pop() for s in (64, 192))
    assert small > large  # each setting built its own collection
    best = out["best"]
    assert best == rows[0] and best["ndcg@10"] >= 0.5  # the sample's questions are answerable from their documents

    ws = Workspace(home)
    applied = (home / "config.yaml").read_text()
    assert out["applied"] == str(home / "config.yaml") and f"chunk_size: {best['chunk_size']}" in applied
    picked = with_workspace(ws, "index", IndexConfig())
    assert (picked.chunk_size, picked.chunk_overlap) == (best["chunk_size"], best["chunk_overlap"])
    assert with_workspace(ws, "index", IndexConfig(chunk_size=96)).chunk_size == 96  # explicit settings win
    saved = json.loads((home / "reports" / "sweeps" / f"{out['sweep_id']}.json").read_text())
    assert saved["rows"] == rows
    assert not (home / "indexes").exists() or not any((home / "indexes").iterdir())  # nothing served or built
    assert not any(p.name.startswith("sweep-") for p in (home / "runs").iterdir())  # scratch engines removed

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(  # this run's (other tests sweep too)
            key=ArtifactFilterKey(any_=["sweep-ranking", "sweep-best"]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    assert {a.key for a in arts} == {"sweep-ranking", "sweep-best"}
    best_md = next(str(a.data) for a in arts if a.key == "sweep-best")
    assert out["dataset_version"] in best_md and f"chunk {best['chunk_size']} / overlap" in best_md
    assert "Applied to" in best_md


def test_sweep_without_a_dataset_says_so(tmp_path):
    from flows.sweep import sweep_flow

    with pytest.raises(FileNotFoundError, match="run `ragtune ingest` first"):
        sweep_flow(SweepConfig(chunk_sizes=[128], chunk_overlaps=[16], modes=["sparse"]), home=str(tmp_path / "ws"))

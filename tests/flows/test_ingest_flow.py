"""ingest_flow end to end under a real Prefect API: fates, idempotence, changes, the quarantine limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.core.workspace import read_jsonl
from tasks.ingest.config import CollectConfig, IngestConfig, ValidateConfig
from tests.conftest import GOOD_TEXT, SAMPLE, make_bad_inputs

pytestmark = pytest.mark.usefixtures("prefect_harness")


def ingest(home: Path, sources: list[str], **validation) -> dict:
    from flows.ingest import ingest_flow

    cfg = IngestConfig(collect=CollectConfig(sources=sources), validation=ValidateConfig(**validation))
    return ingest_flow(cfg, home=str(home))


def snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")}


def test_sample_ingest_accounts_for_every_unit_and_reruns_as_a_no_op(home):
    out = ingest(home, [str(SAMPLE / "corpus"), str(SAMPLE / "messy")])
    c = out["counts"]
    assert c["seen"] == c["accepted"] + c["duplicate"] + c["filtered"] + c["quarantined"]
    assert c["accepted"] >= 50 and c["duplicate"] >= 1 and c["filtered"] >= 3 and c["quarantined"] >= 3
    manifest = read_jsonl(Path(out["manifest"]))
    assert len(manifest) == c["seen"] == len({m["unit"] for m in manifest})
    assert all(m["reason"] for m in manifest)
    accepted = {m["doc_id"] for m in manifest if m["fate"] == "accepted"}
    qa_docs = {json.loads(line)["doc_id"] for line in (SAMPLE / "qa.jsonl").read_text().splitlines() if line.strip()}
    assert qa_docs <= accepted, qa_docs - accepted  # every Q/A pair's supporting document is in the dataset
    assert {d for d in accepted if d.startswith("seoul/")}  # Korean documents pass every filter
    assert Path(out["data_docs"]).exists() and (home / "datasets" / "docs" / "latest").read_text().strip() == out["dataset_version"]

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ingest-summary", "ingest-fates"])))
    assert {"ingest-summary", "ingest-fates"} <= {a.key for a in arts}
    # other tests' runs leave artifacts under the same keys: this run's summary names its version
    assert any(out["dataset_version"] in str(a.data) for a in arts if a.key == "ingest-summary")

    before = snapshot(home)
    again = ingest(home, [str(SAMPLE / "corpus"), str(SAMPLE / "messy")])
    assert again["reused"] and again["dataset_version"] == out["dataset_version"] and again["counts"] == c
    assert snapshot(home) == before  # an unchanged re-run writes nothing


def test_bad_inputs_each_end_with_the_expected_fate(home, tmp_path):
    src = tmp_path / "bad"
    expected = make_bad_inputs(src)
    out = ingest(home, [str(src)], max_quarantine_fraction=1.0)
    fates = {m["unit"].removeprefix(f"{src}/"): m for m in read_jsonl(Path(out["manifest"]))}
    assert set(fates) == set(expected)
    for unit, (fate, code) in expected.items():
        assert fates[unit]["fate"] == fate, (unit, fates[unit])
        if code:
            assert fates[unit]["reason"].startswith(code), (unit, fates[unit])
    quarantine = read_jsonl(Path(out["quarantine_dir"]) / "quarantine.jsonl")
    assert {q["unit"].removeprefix(f"{src}/") for q in quarantine} == {u for u, (f, _) in expected.items() if f == "quarantined"}


def test_over_the_quarantine_limit_nothing_is_published(home, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    (good / "a.md").write_text("# A\n\n" + GOOD_TEXT)
    first = ingest(home, [str(good)])
    state_before = {p.name: p.read_text() for p in (home / "sources").iterdir()}
    versions_before = sorted(p.name for p in (home / "datasets" / "docs").iterdir())

    for i in range(3):
        (good / f"broken-{i}.json").write_text("{not json")
    from tasks.ingest.validate import QuarantineLimitExceeded

    with pytest.raises(QuarantineLimitExceeded, match="3 of 4 input units quarantined"):
        ingest(home, [str(good)])
    assert (home / "datasets" / "docs" / "latest").read_text().strip() == first["dataset_version"]
    assert sorted(p.name for p in (home / "datasets" / "docs").iterdir()) == versions_before
    assert {p.name: p.read_text() for p in (home / "sources").iterdir()} == state_before
    rejected = sorted((home / "quarantine").iterdir())[-1]
    assert (rejected / "manifest.jsonl").exists() and "rejected" in (rejected / "stats.json").read_text()
    assert not list((home / "runs").iterdir())  # staging is cleaned up after a failure too


def test_added_changed_and_deleted_files_are_reported(home, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b", "c"):
        (src / f"{name}.md").write_text(f"# {name}\n\n{name} {GOOD_TEXT}")
    first = ingest(home, [str(src)])
    assert first["changes"]["counts"] == {"new": 3, "changed": 0, "unchanged": 0, "deleted": 0}
    (src / "a.md").write_text("# a\n\nA rewritten document about the Beacon alerting thresholds and their defaults.")
    (src / "c.md").unlink()
    (src / "d.md").write_text("# d\n\nA new document describing how Moorings store secrets for Harbor connections.")
    second = ingest(home, [str(src)])
    assert second["changes"]["counts"] == {"new": 1, "changed": 1, "unchanged": 1, "deleted": 1}
    assert second["dataset_version"] != first["dataset_version"]
    third = ingest(home, [str(src)])
    assert third["reused"] and third["changes"]["counts"]["changed"] == 0

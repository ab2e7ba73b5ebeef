"""The Great Expectations suite quarantines exactly the failing rows; publishing is content-addressed."""

from __future__ import annotations

import pytest

from tasks.core.records import Fate, read_fates, read_records, write_fates, write_records
from tasks.ingest.config import ValidateConfig
from tasks.ingest.publish import dataset_version, load_dataset_version, manifest_lines, publish_dataset
from tasks.ingest.validate import QuarantineLimitExceeded, check_quarantine_policy, validate_records
from tests.conftest import GOOD_TEXT


def rec(doc_id: str, text: str, **kw) -> dict:
    return {"doc_id": doc_id, "unit": f"src/{doc_id}", "source_uri": f"file:///src/{doc_id}", "title": doc_id,
            "text": text, "metadata": {}, "content_hash": f"h-{doc_id}", "raw_hash": "r", "format": "txt",
            "collected_at": "2026-11-21T00:00:00Z", **kw}


def test_suite_quarantines_exactly_the_failing_rows(ws, tmp_path):
    secret_doc = GOOD_TEXT + " Contact ops@marrowfield.example for access."
    records = [
        rec("ok1", GOOD_TEXT), rec("ok2", "서울 사무소는 평일 오전 9시부터 운영합니다. " * 3),
        rec("html", "<div>" + GOOD_TEXT + "</div>", format="html"), rec("nul", GOOD_TEXT + "\x00"),
        rec("snippet", GOOD_TEXT + "\n\n```html\n<div class='card'>Hi</div>\n```", format="md"),  # an example
        rec("long", "x " * 600), rec("pii", secret_doc), rec("ok3", GOOD_TEXT + " three"),
    ]
    write_records(tmp_path / "in.parquet", records)
    cfg = ValidateConfig(max_text_chars=1000)
    res = validate_records(tmp_path / "in.parquet", cfg, ws, "run-1", tmp_path / "out", check_pii=True)
    fates = {f.doc_id: f.reason for f in read_fates(tmp_path / "out" / "fates.jsonl")}
    assert set(fates) == {"html", "nul", "long", "pii"}
    assert "no_html" in fates["html"] and "no_control_chars" in fates["nul"]
    assert "text_length" in fates["long"] and "max_text_chars 1,000)" in fates["long"] and "no_pii_email" in fates["pii"]
    assert {r["doc_id"] for r in read_records(tmp_path / "out" / "records.parquet")} == {"ok1", "ok2", "ok3", "snippet"}
    assert res.quarantined == 4 and res.passed == 4 and not res.table_failures
    q = (ws.quarantine / "run-1" / "quarantine.jsonl").read_text()
    assert q.count("\n") == 4 and '"checks"' in q
    # Data Docs exist and never carry document bodies or the personal data that failed the check
    docs = ws.reports / "data_docs" / "index.html"
    assert docs.exists()
    blob = b"".join(p.read_bytes() for p in (ws.reports).rglob("*") if p.is_file() and p.suffix in (".html", ".json"))
    assert b"ops@marrowfield.example" not in blob and GOOD_TEXT[:60].encode() not in blob


def test_pii_checks_only_when_redaction_is_on(ws, tmp_path):
    write_records(tmp_path / "in.parquet", [rec("a", GOOD_TEXT + " mail a@b.example")])
    res = validate_records(tmp_path / "in.parquet", ValidateConfig(data_docs=False), ws, "r", tmp_path / "o",
                           check_pii=False)
    assert res.quarantined == 0


def test_run_ids_that_read_as_dates_validate(ws, tmp_path):
    """GE parses a run name as a date when given no run time: `...Z-5266ad` reads as an offset of 52 h."""
    write_records(tmp_path / "in.parquet", [rec("a", GOOD_TEXT)])
    res = validate_records(tmp_path / "in.parquet", ValidateConfig(), ws, "20261202T220101Z-5266ad", tmp_path / "o")
    assert res.passed == 1


def test_table_level_failure_blocks_publishing(ws, tmp_path):
    write_records(tmp_path / "in.parquet", [rec("a", GOOD_TEXT)])
    res = validate_records(tmp_path / "in.parquet", ValidateConfig(min_rows=5, data_docs=False), ws, "r", tmp_path / "o")
    assert res.table_failures and res.table_failures[0].startswith("min_rows")
    with pytest.raises(QuarantineLimitExceeded, match="whole table"):
        check_quarantine_policy(1, 0, ValidateConfig(min_rows=5), res.table_failures, 1)


def test_quarantine_policy_threshold():
    cfg = ValidateConfig(max_quarantine_fraction=0.2)
    check_quarantine_policy(10, 2, cfg, [], 8)
    with pytest.raises(QuarantineLimitExceeded, match=r"3 of 10 input units quarantined \(30.0%\)"):
        check_quarantine_policy(10, 3, cfg, [], 7)


def test_version_is_content_addressed_and_ignores_first_seen_time():
    a = [rec("a", "x"), rec("b", "y")]
    lines = manifest_lines(a, [Fate("src/c", "filtered", "too_short: 1", "u", "c", "clean")])
    later = [{**r, "collected_at": "2030-01-01T00:00:00Z"} for r in reversed(a)]
    assert dataset_version(a, lines) == dataset_version(later, lines)
    assert dataset_version(a, lines) != dataset_version([rec("a", "x"), rec("b", "z")], lines)
    assert dataset_version(a, lines) != dataset_version(a, manifest_lines(a, []))


def test_publish_is_idempotent_and_loadable(ws, tmp_path):
    write_records(tmp_path / "r.parquet", [rec("a", GOOD_TEXT), rec("b", GOOD_TEXT + " b")])
    write_fates(tmp_path / "f.jsonl", [Fate("src/c", "duplicate", "exact_duplicate: same text as a", "u", "c", "clean")])
    first = publish_dataset(ws, "docs", "run-1", tmp_path / "r.parquet", [tmp_path / "f.jsonl"], {}, {}, "fp1")
    assert first.created and first.counts == {"seen": 3, "accepted": 2, "duplicate": 1, "filtered": 0, "quarantined": 0}
    snapshot = {p: p.stat().st_mtime_ns for p in ws.dataset_dir("docs").rglob("*") if p.is_file()}
    again = publish_dataset(ws, "docs", "run-2", tmp_path / "r.parquet", [tmp_path / "f.jsonl"], {}, {}, "fp1")
    assert again.dataset_version == first.dataset_version and not again.created
    assert {p: p.stat().st_mtime_ns for p in ws.dataset_dir("docs").rglob("*") if p.is_file()} == snapshot
    assert (ws.dataset_dir("docs") / "latest").read_text().strip() == first.dataset_version
    ds = load_dataset_version(ws)
    assert ds.num_rows == 2 and set(ds.column_names) >= {"doc_id", "source_uri", "title", "text", "metadata",
                                                         "content_hash", "collected_at"}
    meta = (ws.dataset_dir("docs") / first.dataset_version / "meta.json").read_text()
    assert '"packages"' in meta and '"git_commit"' in meta

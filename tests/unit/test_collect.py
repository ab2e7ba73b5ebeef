"""collect: folder scanning, every bad input, change detection, URLs against a local server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.core.records import read_fates, read_records
from tasks.ingest.collect import (
    SourceError,
    collect_sources,
    commit_source_states,
    resolve_sources,
    scan_sources,
)
from tasks.ingest.config import CollectConfig
from tasks.ingest.fetch import fetch_url, redact_url
from tasks.ingest.formats.base import UnitError
from tests.conftest import GOOD_TEXT, make_bad_inputs


def run_collect(ws, src: Path | str, tmp: Path, **cfg):
    config = CollectConfig(sources=[str(src)], **cfg)
    res = collect_sources(config, ws, tmp)
    return res, {r["unit"]: r for r in read_records(tmp / "records.parquet")}, {f.unit: f for f in read_fates(tmp / "fates.jsonl")}


def test_every_unit_gets_one_outcome(ws, tmp_path):
    src = tmp_path / "src"
    expected = make_bad_inputs(src)
    os.mkfifo(src / "pipe.txt")  # a FIFO must not block the run
    res, recs, fates = run_collect(ws, src, tmp_path / "out")
    units = set(recs) | set(fates)
    assert not set(recs) & set(fates)
    assert res.seen == len(units) == len(recs) + len(fates)
    assert f"{src}/pipe.txt" in fates and fates[f"{src}/pipe.txt"].fate == "filtered"
    assert not any(".hidden" in u for u in units)
    for rel, (fate, code) in expected.items():
        unit = f"{src}/{rel}"
        if unit in fates and fates[unit].stage == "collect":
            assert fates[unit].fate == fate and fates[unit].reason.startswith(code), (rel, fates[unit])
        else:
            assert unit in recs, rel  # the rest is judged by clean and validate


def test_source_errors_are_clear(tmp_path):
    with pytest.raises(SourceError, match="source not found"):
        resolve_sources([str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="scheme"):
        CollectConfig(sources=["ftp://example.invalid/x"])
    (tmp_path / "empty-ds").mkdir()
    with pytest.raises(SourceError, match="save_to_disk"):
        resolve_sources([f"hf:{tmp_path / 'empty-ds'}"])


def test_changes_new_changed_unchanged_deleted(ws, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b", "c"):
        (src / f"{name}.txt").write_text(f"{name} {GOOD_TEXT}")
    first, _, _ = run_collect(ws, src, tmp_path / "r1")
    assert first.changes["counts"] == {"new": 3, "changed": 0, "unchanged": 0, "deleted": 0}
    commit_source_states(ws, Path(first.state_path), "v1")
    (src / "a.txt").write_text("a changed " + GOOD_TEXT)
    (src / "c.txt").unlink()
    (src / "d.txt").write_text("d " + GOOD_TEXT)
    second, recs, _ = run_collect(ws, src, tmp_path / "r2")
    assert second.changes["counts"] == {"new": 1, "changed": 1, "unchanged": 1, "deleted": 1}
    assert second.changes["deleted"] == [f"{src}/c.txt"] and second.changes["changed"] == [f"{src}/a.txt"]
    # an unchanged document keeps the time it was first collected
    first_recs = {r["unit"]: r for r in read_records(tmp_path / "r1" / "records.parquet")}
    assert recs[f"{src}/b.txt"]["collected_at"] == first_recs[f"{src}/b.txt"]["collected_at"]


def test_fingerprint_follows_stat_data_and_config(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text(GOOD_TEXT)
    cfg = CollectConfig(sources=[str(src)])
    fp1 = scan_sources(resolve_sources(cfg.sources), cfg)[1]
    assert fp1 == scan_sources(resolve_sources(cfg.sources), cfg)[1]
    (src / "a.txt").write_text(GOOD_TEXT + " more")
    assert scan_sources(resolve_sources(cfg.sources), cfg)[1] != fp1
    cfg2 = CollectConfig(sources=[str(src)], max_file_bytes=10)
    assert scan_sources(resolve_sources(cfg2.sources), cfg2)[1] != scan_sources(resolve_sources(cfg.sources), cfg)[1]


def test_too_large_files_are_filtered_unread(ws, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.txt").write_text(GOOD_TEXT * 10)
    _, recs, fates = run_collect(ws, src, tmp_path / "o", max_file_bytes=100)
    assert fates[f"{src}/big.txt"].fate == "filtered" and fates[f"{src}/big.txt"].reason.startswith("too_large")


def test_hf_dataset_saved_to_disk(ws, tmp_path):
    import datasets

    ds = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"id": ["a", "b"], "text": [GOOD_TEXT, None], "lang": ["en", "en"]}),
        "test": datasets.Dataset.from_dict({"id": ["c", "d"], "text": [GOOD_TEXT + " c", GOOD_TEXT + " d"], "lang": ["en", "en"]}),
    })
    ds.save_to_disk(str(tmp_path / "hfds"))
    res, recs, fates = run_collect(ws, f"hf:{tmp_path / 'hfds'}", tmp_path / "o")
    assert set(recs) == {f"hf:{tmp_path / 'hfds'}/train#a", f"hf:{tmp_path / 'hfds'}/test#c", f"hf:{tmp_path / 'hfds'}/test#d"}
    assert fates[f"hf:{tmp_path / 'hfds'}/train#b"].reason == "record: 'text' is null"
    assert recs[f"hf:{tmp_path / 'hfds'}/train#a"]["metadata"]["lang"] == "en"


def test_hf_hub_name_offline_is_a_recorded_fate(ws, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res, recs, fates = run_collect(ws, "hf:some-org/some-dataset-that-is-not-cached", tmp_path / "o")
    (fate,) = fates.values()
    assert fate.fate == "quarantined" and fate.reason.startswith("hf: cannot load")


# --- URLs ----------------------------------------------------------------------------------------

def test_url_page_and_jsonl(ws, tmp_path, http_server):
    res, recs, fates = run_collect(ws, f"{http_server}/page.html", tmp_path / "o1")
    (rec,) = recs.values()
    assert rec["format"] == "html" and "Harbor connector" in rec["text"] and not fates
    res, recs, _ = run_collect(ws, f"{http_server}/records.jsonl", tmp_path / "o2")
    assert list(recs) == [f"{http_server}/records.jsonl#r1"]


@pytest.mark.parametrize("path, kwargs, needle", [
    ("/slow", {"timeout_s": 0.5}, "timed out"),
    ("/big", {"max_bytes": 1024 * 1024}, "too large"),
    ("/big-chunked", {"max_bytes": 1024 * 1024}, "too large"),
    ("/missing", {}, "HTTP 404"),
    ("/redirect-ftp", {}, "url:"),
])
def test_url_limits(http_server, path, kwargs, needle):
    args = {"timeout_s": 5.0, "max_bytes": 10 * 1024 * 1024, **kwargs}
    with pytest.raises(UnitError, match=needle):
        fetch_url(http_server + path, **args)


def test_unreachable_url_is_a_recorded_fate(ws, tmp_path):
    res, recs, fates = run_collect(ws, "http://127.0.0.1:9/nothing-listens-here", tmp_path / "o", url_retries=0,
                                   url_timeout_s=2)
    (fate,) = fates.values()
    assert fate.fate == "quarantined" and fate.reason.startswith("url:")


def test_url_credentials_never_reach_records(ws, tmp_path, http_server):
    url = http_server.replace("http://", "http://user:s3cret@") + "/page.html?token=abc123&lang=en"
    assert redact_url(url) == f"{http_server}/page.html?token=REDACTED&lang=en"
    res, recs, _ = run_collect(ws, url, tmp_path / "o")
    blob = (tmp_path / "o" / "records.parquet").read_bytes() + (tmp_path / "o" / "state.json").read_bytes()
    assert b"s3cret" not in blob and b"abc123" not in blob

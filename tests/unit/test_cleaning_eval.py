"""The labelled set in data/cleaning_eval/ through collect and clean: every shape of legitimate document is
kept by the knowledge profile, every kind of garbage is dropped with a reason that names what it is."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from tasks.core.records import read_fates, read_records
from tasks.ingest.clean import clean_records
from tasks.ingest.collect import collect_sources
from tasks.ingest.config import CleanConfig, CollectConfig
from tests.conftest import PROJECT_ROOT

EVAL = PROJECT_ROOT / "data" / "cleaning_eval"
# what each kind of garbage may be dropped as (collect's binary/decode/empty or clean's reason codes)
EXPECTED = {
    "decoded_random_bytes": {"misdecoded", "encoded_blob", "mostly_symbols", "keyboard_mash"},
    "raw_binary": {"binary", "decode"},
    "base64_blob": {"encoded_blob", "unsupported"},  # a .b64 file is not read at all
    "minified_js": {"minified_code"},
    "symbol_runs": {"mostly_symbols"},
    "cookie_banner": {"consent_banner", "html_no_text"},
    "keyboard_mash": {"keyboard_mash", "misdecoded"},
    "lorem_ipsum": {"placeholder"},
    "misdecoded_utf16": {"misdecoded", "binary"},
    "short_garbage": {"misdecoded", "keyboard_mash", "mostly_symbols", "placeholder", "encoded_blob"},
    "empty_whitespace": {"empty", "mostly_symbols"},
    "html_no_content": {"html_no_text", "placeholder"},
}


@pytest.fixture(scope="module")
def fates(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """{path under data/cleaning_eval: (fate, reason code)} under the default (knowledge) profile."""
    from tasks.core.workspace import Workspace

    tmp = tmp_path_factory.mktemp("eval")
    cfg = CollectConfig(sources=[str(EVAL / "legit"), str(EVAL / "garbage")])
    col = collect_sources(cfg, Workspace(tmp / "ws").ensure(), tmp / "collect")
    cln = clean_records(Path(col.records_path), CleanConfig(), tmp / "clean")

    def rel(unit: str) -> str:
        return str(Path(unit).resolve().relative_to(EVAL))

    out = {rel(r["unit"]): ("accepted", "") for r in read_records(Path(cln.records_path))}
    for path in (col.fates_path, cln.fates_path):
        out.update({rel(f.unit): (f.fate, f.reason.split(":", 1)[0]) for f in read_fates(Path(path))})
    return out


def labels() -> list[dict]:
    return [json.loads(line) for line in (EVAL / "labels.jsonl").read_text(encoding="utf-8").splitlines() if line]


def test_every_legitimate_document_is_kept(fates):
    legit = [x for x in labels() if x["label"] == "legit"]
    assert len(legit) >= 150 and len({x["shape"] for x in legit}) >= 15
    lost = {x["path"]: fates[x["path"]] for x in legit if fates[x["path"]][0] != "accepted"}
    assert not lost


def test_garbage_is_dropped_as_what_it_is(fates):
    garbage = [x for x in labels() if x["label"] == "garbage"]
    by_kind: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for x in garbage:
        by_kind[x["shape"]].append((x["path"], *fates[x["path"]]))
    kept = [p for rows in by_kind.values() for p, fate, _ in rows if fate == "accepted"]
    assert len(kept) / len(garbage) <= 0.05, kept  # the knowledge target: at least 95% dropped
    for kind, rows in by_kind.items():
        wrong = [(p, code) for p, fate, code in rows if fate != "accepted" and code not in EXPECTED[kind]]
        assert not wrong, (kind, wrong)
        assert sum(fate != "accepted" for _, fate, _ in rows) >= len(rows) - 1, kind  # at most one miss per kind

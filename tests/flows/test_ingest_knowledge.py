"""A company knowledge base end to end: every format read, every legitimate document published, drops said
loudly, and a filtered document rescued with `keep`."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tasks.core.workspace import read_jsonl
from tasks.ingest.config import CleanConfig, CollectConfig, IngestConfig, ValidateConfig
from tests.unit.test_content import CHANGELOG, FAQ, KOREAN_FAQ, PRICING
from tests.unit.test_formats import make_docx, make_pptx, make_xlsx

pytestmark = pytest.mark.usefixtures("prefect_harness")

KB = {  # the eight documents that published nothing before the knowledge profile
    "pricing.md": PRICING, "changelog.md": CHANGELOG, "faq.md": FAQ, "office-hours.txt": "Office hours: 9-5",
    "relay.log": "\n".join(f"2026-01-14T09:{m:02d}:00Z INFO relay.sync harbor=pg-main rows=1000 status=ok"
                           for m in range(20)),
    "checklist.md": "# Laptop checklist\n\n" + "\n".join(f"- [ ] Return the {x}" for x in ("laptop", "charger",
                                                                                           "badge", "token")),
    "settings.md": "# Relay settings\n\n| setting | default | description |\n|---|---|---|\n"
                   + "\n".join(f"| relay.{k} | {v} | {d} |" for k, v, d in (
                       ("queue_size", 10000, "events kept while offline"), ("retry_s", 30, "seconds between retries"),
                       ("tls", "on", "encrypt the connection"))),
    "faq-ko.md": KOREAN_FAQ,
}


def ingest(home: Path, sources: list[str], clean: CleanConfig | None = None, **validation) -> dict:
    from flows.ingest import ingest_flow

    cfg = IngestConfig(collect=CollectConfig(sources=sources), clean=clean or CleanConfig(),
                       validation=ValidateConfig(**validation))
    return ingest_flow(cfg, home=str(home))


def write(folder: Path, files: dict[str, str | bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (folder / name).write_bytes(body if isinstance(body, bytes) else body.encode())
    return folder


def test_an_ordinary_knowledge_base_is_published_whole_and_the_web_profile_says_what_it_drops(home, tmp_path):
    src = write(tmp_path / "kb", KB)
    out = ingest(home, [str(src)])
    assert out["counts"] == {"seen": 8, "accepted": 8, "duplicate": 0, "filtered": 0, "quarantined": 0}
    assert out["warnings"] == [] and out["profiles"] == {"knowledge": 8}

    web = ingest(tmp_path / "ws-web", [str(src)], CleanConfig(profile="web"), max_quarantine_fraction=1.0)
    assert web["counts"]["filtered"] >= 4 and web["profiles"] == {"web": 8}
    assert web["warnings"][0].startswith("WARNING: ") and "more than 5%" in web["warnings"][0]
    assert any(w.startswith("warning: 1 filtered as too_short: ") and "office-hours.txt" in w and "--keep" in w
               for w in web["warnings"])


def test_every_format_in_one_folder_and_broken_office_files_do_not_stop_the_others(home, tmp_path):
    from email.message import EmailMessage

    import msoffcrypto.format.ooxml

    mail = EmailMessage()
    mail["From"], mail["Subject"] = "ops@marrowfield.example", "Relay maintenance window"
    mail.set_content("Relay is upgraded on Friday between 18:00 and 19:00.\n\n-- \nOps team")
    locked = io.BytesIO()
    msoffcrypto.format.ooxml.OOXMLFile(io.BytesIO(make_docx())).encrypt("pw", locked)
    src = write(tmp_path / "kb", {
        "handbook.docx": make_docx(), "release.pptx": make_pptx(), "prices.xlsx": make_xlsx(),
        "rooms.csv": "room,seats,floor\nHarbor,8,3\nLighthouse,12,4\n", "rota.tsv": "week\towner\n1\tJane\n",
        "guide.rst": "Guide\n=====\n\nRelay needs outbound port 443.\n", "relay.yaml": "relay:\n  port: 8443\n",
        "pyproject.toml": "[tool.relay]\nretries = 3\n", "relay.ini": "[relay]\nqueue = 10000\n",
        "sync.py": "# keep the queue bounded\nMAX = 10_000\n", "mail.eml": mail.as_bytes(),
        "relay.log": "2026-01-14 INFO started\n", "settings.json": '{"timeout_s": 30, "tls": true}',
        "locked.docx": locked.getvalue(), "broken.xlsx": make_xlsx()[:300],
    })
    out = ingest(home, [str(src)], max_quarantine_fraction=0.2)
    fates = {Path(m["unit"]).name: m for m in read_jsonl(Path(out["manifest"]))}
    assert fates["locked.docx"]["fate"] == "quarantined" and "password-protected" in fates["locked.docx"]["reason"]
    assert fates["broken.xlsx"]["fate"] == "quarantined" and "not a valid Office file" in fates["broken.xlsx"]["reason"]
    assert {n for n, m in fates.items() if m["fate"] == "accepted"} == set(fates) - {"locked.docx", "broken.xlsx"}
    from tasks.core.workspace import Workspace
    from tasks.ingest.publish import load_dataset_version

    ds = load_dataset_version(Workspace(home), version=out["dataset_version"])
    by_id = {r["doc_id"]: r for r in ds}
    assert "| Cutter | $29 | a\\|b |" in by_id["handbook.docx"]["text"] and by_id["handbook.docx"]["format"] == "docx"
    assert by_id["rooms.csv"]["text"].startswith("| room | seats | floor |")
    assert "[EMAIL]" in by_id["mail.eml"]["text"]  # headers pass PII redaction like any text


def test_keep_rescues_a_filtered_document_and_the_manifest_says_so(home, tmp_path):
    src = write(tmp_path / "kb", {"todo.md": "TODO", "real.md": "Office hours: 9-5"})
    first = ingest(home, [str(src)])
    assert first["counts"]["filtered"] == 1
    assert first["warnings"][0].startswith("WARNING: 1 of 2 inputs (50%) were filtered")
    assert "warning: 1 filtered as placeholder: " in first["warnings"][1]
    kept = ingest(home, [str(src)], CleanConfig(keep=["todo.*"]))
    assert kept["counts"]["accepted"] == 2 and kept["warnings"] == []
    line = next(m for m in read_jsonl(Path(kept["manifest"])) if m["unit"].endswith("todo.md"))
    assert line["fate"] == "accepted" and line["reason"] == ("kept: matches keep pattern 'todo.*' (would be filtered "
                                                            "as placeholder: the whole text is 'todo')")

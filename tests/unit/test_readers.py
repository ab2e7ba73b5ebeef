"""Readers: every format, and every way a unit can be bad, ends in a record or a named error."""

from __future__ import annotations

import io
import json

import pytest

from tasks.ingest.formats.base import UnitError, decode_text
from tasks.ingest.readers import FieldNames, format_for, parse_unit, split_front_matter

F = FieldNames()


def parse(data: bytes, fmt: str, unit: str = "src/x", doc_id: str = "x"):
    return list(parse_unit(data, fmt, unit, doc_id, F))


def test_decode_utf8_with_bom_and_latin1_fallback():
    assert decode_text("héllo".encode("utf-8-sig")) == ("héllo", "utf-8")
    text, enc = decode_text("Le café est ouvert à midi, près de la gare de Lisbonne.".encode("latin-1"))
    assert "café" in text and enc != "utf-8"


@pytest.mark.parametrize("data, needle", [
    (bytes(range(256)) * 4, "not a text file"),
    (b"good text\x00with a NUL byte in the middle of it", "NUL"),
    (b"x" * 9000 + b"\x00", "NUL"),
])
def test_decode_rejects_binary_and_nul(data, needle):
    with pytest.raises(UnitError, match=needle):
        decode_text(data)


def test_markdown_front_matter_and_heading_title():
    meta, body = split_front_matter("---\ntitle: T\ntags: [a, b]\n---\n# H\nbody")
    assert meta == {"title": "T", "tags": ["a", "b"]} and body.startswith("# H")
    (p,) = parse(b"---\ntags: [x]\n---\n# Leave policy\n\nText.", "md")
    assert p.title == "Leave policy" and p.metadata["tags"] == ["x"] and p.error is None
    (p,) = parse(b"plain words", "txt", doc_id="notes/office-hours.txt")
    assert p.title == "Office hours"


def test_empty_and_whitespace_files_are_filtered():
    for data in (b"", b"  \n\t\n"):
        (p,) = parse(data, "txt")
        assert p.error.fate == "filtered" and p.error.reason.startswith("empty")


def test_jsonl_good_bad_and_duplicate_ids():
    lines = [
        json.dumps({"id": "a", "title": "A", "text": "alpha", "lang": "en"}),
        "{not json",
        json.dumps({"id": "b", "text": None}),
        json.dumps({"id": "c", "text": 42}),
        json.dumps({"id": "d", "body": "uses the body field"}),
        json.dumps({"text": "no id here"}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"id": "a", "text": "same id again"}),
        json.dumps({"id": "e", "title": "missing text"}),
        "",
    ]
    out = {p.unit: p for p in parse("\n".join(lines).encode(), "jsonl", unit="f.jsonl", doc_id="f.jsonl")}
    assert out["f.jsonl#a"].error is None and out["f.jsonl#a"].metadata == {"lang": "en"}
    assert "invalid JSON on line 2" in out["f.jsonl#line-2"].error.reason
    assert out["f.jsonl#b"].error.reason == "record: 'text' is null"
    assert "'text' is int" in out["f.jsonl#c"].error.reason
    assert out["f.jsonl#d"].text == "uses the body field"
    assert out["f.jsonl#line-6"].text == "no id here"
    assert "expected a JSON object, got list" in out["f.jsonl#line-7"].error.reason
    assert "already used on line 1" in out["f.jsonl#line-8"].error.reason
    assert "no text field" in out["f.jsonl#e"].error.reason
    assert all(p.error.fate == "quarantined" for p in out.values() if p.error)
    assert len(out) == 9  # the blank line is not a unit


@pytest.mark.parametrize("payload, needle", [
    (b"42", "top level is int"),
    (b'"just a string"', "top level is str"),
    (b"{broken", "invalid JSON"),
])
def test_json_that_is_not_an_object(payload, needle):
    (p,) = parse(payload, "json")
    assert p.error.fate == "quarantined" and needle in p.error.reason


def test_json_object_and_array():
    (p,) = parse(json.dumps({"title": "T", "text": "one document"}).encode(), "json")
    assert p.error is None and p.title == "T"
    ps = parse(json.dumps([{"id": 1, "text": "a"}, {"text": "b"}, 7]).encode(), "json", unit="a.json", doc_id="a.json")
    assert [p.unit for p in ps] == ["a.json#1", "a.json#row-1", "a.json#row-2"]
    assert ps[2].error is not None


def test_fake_pdf_and_real_pdf(tmp_path):
    (p,) = parse(b"this is not a pdf at all", "pdf")
    assert p.error.fate == "quarantined" and "not a PDF" in p.error.reason
    (p,) = parse(b"%PDF-1.7\n garbage garbage", "pdf")
    assert p.error.fate == "quarantined" and p.error.reason.startswith("pdf:")
    from tests.conftest import SAMPLE

    pdf = next((SAMPLE / "corpus").rglob("*.pdf"))
    (p,) = parse(pdf.read_bytes(), "pdf")
    assert p.error is None and len(p.text) > 500 and p.metadata["pages"] >= 1


def test_parquet_rows_and_broken_parquet():
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ["p1", "p2"], "text": ["first", None]}), buf)
    ps = parse(buf.getvalue(), "parquet", unit="t.parquet", doc_id="t.parquet")
    assert ps[0].error is None and ps[1].error.reason == "record: 'text' is null"
    (p,) = parse(b"PAR1 not really", "parquet")
    assert p.error.reason.startswith("parquet: unreadable")


def test_format_for_names_and_content_types():
    assert format_for("a/b.HTM") == "html" and format_for("x.ndjson") == "jsonl"
    assert format_for("x.gz") is None and format_for("/path", "application/pdf; q=1") == "pdf"

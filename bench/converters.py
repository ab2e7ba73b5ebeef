"""Office-to-Markdown converters compared: markitdown, docling, unstructured, and ragtune's own reader.

For each importable converter: import + construction time; per test file the warm-up and the median of 5
conversion times, and fidelity (headings at the right Markdown level, table cells in a pipe table, header
rows, list items with the right marker, texts that must survive: Korean, title, notes, sheet names); the time
for 50 distinct .docx; and the outcome for a truncated .docx, random bytes named .docx and an encrypted .docx
(exception, empty text, or a hang past 60 s). Converters that are not installed are skipped with one line.
Files come from python-docx, python-pptx, openpyxl and msoffcrypto-tool: generate them once, then run the
script with each scratch venv (python3 -m venv; markitdown[docx,pptx,xlsx]; torch==2.13.0 then docling,
pinned together; unstructured[docx,pptx,xlsx]; the project's .venv for ragtune's reader on python-docx,
python-pptx and openpyxl):

    /tmp/convcmp/tools/bin/python bench/converters.py --gen-only --files /tmp/convcmp/files
    /tmp/convcmp/<venv>/bin/python bench/converters.py --files /tmp/convcmp/files [--out /tmp/convcmp/out]

HF_HUB_OFFLINE=1 and DO_NOT_TRACK=true are set unless set already; --out keeps each converter's Markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import importlib.util
import os
import random
import re
import signal
import statistics
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

KO = "한국어 문서 변환 테스트입니다."
DOCX_TABLE = [["Item", "Price", "Note", "Region"], ["Widget", "9.99", "a|b", "EU"],
              ["Gadget", "19.5", "line one<br>line two", "US"], ["Gizmo", "4.25", "plain", "APAC"],
              ["Doohickey", "100", "last", "EU"]]
PPTX_TABLE = [["Plan", "Price", "Seats"], ["Basic", "10", "1"], ["Pro", "30", "5"]]
PRICES = [["Date", "Product", "Qty", "Unit Price", "Total"]] + [
    [dt.date(2024, 1, i).isoformat(), f"P{i}", str(i), str(2.5 * i), str(2.5 * i * i)] for i in range(1, 11)]
SUMMARY = [["Metric", "Value"], ["Rows", "10"], ["Grand total", str(sum(2.5 * i * i for i in range(1, 11)))]]
BULLETS, NUMBERED = ["Apples", "Bananas", "Cherries"], ["First step", "Second step", "Third step"]
SLIDES = ["ragtune Overview", "Key Points", "Pricing Table", "Speaker Notes Slide"]
# headings: (level, or None for any level, text); lists: ("-" for a bullet or "1" for a number, text)
EXPECT: dict[str, dict] = {
    "sample.docx": {"headings": [(1, "Introduction"), (2, "Scope"), (1, "Lists"), (1, "Data"),
                                 (2, "Price table"), (1, "Korean section")], "tables": [DOCX_TABLE],
                    "lists": [("-", t) for t in BULLETS] + [("1", t) for t in NUMBERED],
                    "texts": [KO, "Quarterly Report"]},
    "sample.pptx": {"headings": [(None, t) for t in SLIDES], "tables": [PPTX_TABLE],
                    "lists": [("-", "Fast ingest"), ("-", "Accurate tables"), ("-", "Nested detail")],
                    "texts": ["These are the speaker notes.", "Converter benchmark deck"]},
    # the third sheet is empty: naming it or not is both fine, a broken table under it is not (not scored)
    "sample.xlsx": {"headings": [(None, "Prices"), (None, "Summary")], "tables": [PRICES, SUMMARY],
                    "lists": [], "texts": []},
}


def make_docx(path: Path, n: int = 0) -> None:
    import docx
    d = docx.Document()
    d.add_paragraph("Quarterly Report", style="Title")
    for kind, arg in [(1, "Introduction"), (0, f"Document {n}: this report covers the quarter. " * 3),
                      (2, "Scope"), (0, "Only office formats are in scope."), (1, "Lists")]:
        d.add_heading(arg, kind) if kind else d.add_paragraph(arg)
    for t in BULLETS + NUMBERED:
        d.add_paragraph(t, style="List Bullet" if t in BULLETS else "List Number")
    d.add_heading("Data", 1)
    d.add_heading("Price table", 2)
    tbl = d.add_table(rows=5, cols=4, style="Table Grid")
    for r, row in enumerate(DOCX_TABLE):
        for c, val in enumerate(row):
            run = tbl.cell(r, c).paragraphs[0].add_run(val.split("<br>")[0])
            if "<br>" in val:  # a line break inside the cell
                run.add_break()
                run.add_text(val.split("<br>")[1])
    d.add_heading("Korean section", 1)
    d.add_paragraph(KO)
    d.save(path)


def make_pptx(path: Path) -> None:
    from pptx import Presentation
    from pptx.util import Inches
    p = Presentation()
    slides = [p.slides.add_slide(p.slide_layouts[i]) for i in (0, 1, 5, 1)]
    for s, title in zip(slides, SLIDES, strict=True):
        s.shapes.title.text = title
    slides[0].placeholders[1].text = "Converter benchmark deck"
    tf = slides[1].placeholders[1].text_frame
    tf.text = "Fast ingest"
    for text, level in (("Accurate tables", 0), ("Nested detail", 1)):
        para = tf.add_paragraph()
        para.text, para.level = text, level
    table = slides[2].shapes.add_table(3, 3, Inches(1), Inches(2), Inches(6), Inches(2)).table
    for r, row in enumerate(PPTX_TABLE):
        for c, val in enumerate(row):
            table.cell(r, c).text = val
    slides[3].placeholders[1].text = "See the notes."
    slides[3].notes_slide.notes_text_frame.text = "These are the speaker notes."
    p.save(path)


def make_xlsx(path: Path) -> None:
    import openpyxl
    wb = openpyxl.Workbook()
    ws, summary = wb.active, wb.create_sheet("Summary")
    ws.title = "Prices"
    ws.append(PRICES[0])
    for i in range(1, 11):
        ws.append([dt.date(2024, 1, i), f"P{i}", i, 2.5 * i, f"=C{i + 1}*D{i + 1}"])
        ws.cell(i + 1, 1).number_format = "yyyy-mm-dd"
    for row in (["Metric", "Value"], ["Rows", 10], ["Grand total", "=SUM(Prices!E2:E11)"]):
        summary.append(row)
    wb.create_sheet("Empty")
    wb.save(path)
    # openpyxl writes formulas without a cached value; put them in, as Excel saves them
    cached = {f"E{i + 1}": PRICES[i][4] for i in range(1, 11)} | {"B3": SUMMARY[2][1]}
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    for name in ("xl/worksheets/sheet1.xml", "xl/worksheets/sheet2.xml"):
        parts[name] = re.sub(rb'<c r="([A-Z]+\d+)"><f>([^<]*)</f><v></v>', lambda m: b'<c r="%s"><f>%s</f>'
                             b"<v>%s</v>" % (m[1], m[2], cached[m[1].decode()].encode()), parts[name])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, b in parts.items():
            z.writestr(n, b)


def make_files(d: Path) -> None:
    (d / "many").mkdir(parents=True, exist_ok=True)
    make_docx(d / "sample.docx")
    make_pptx(d / "sample.pptx")
    make_xlsx(d / "sample.xlsx")
    data = (d / "sample.docx").read_bytes()
    (d / "bad_truncated.docx").write_bytes(data[: len(data) // 2])  # PK header, no central directory
    (d / "bad_random.docx").write_bytes(random.Random(0).randbytes(20_000))
    if importlib.util.find_spec("msoffcrypto"):
        from msoffcrypto.format.ooxml import OOXMLFile
        with open(d / "sample.docx", "rb") as f, open(d / "bad_encrypted.docx", "wb") as out:
            OOXMLFile(f).encrypt("secret", out)
    for i in range(50):  # 50 distinct files: the text differs in each
        make_docx(d / "many" / f"doc{i:02d}.docx", i)


def load(name: str) -> Callable[[Path], str]:
    """The converter's own path to Markdown, with its defaults."""
    if name == "markitdown":
        from markitdown import MarkItDown
        md = MarkItDown(enable_plugins=False)
        return lambda p: md.convert(str(p)).text_content
    if name == "docling":
        from docling.datamodel.base_models import InputFormat
        from docling.document_converter import DocumentConverter
        dc = DocumentConverter(allowed_formats=[InputFormat.DOCX, InputFormat.PPTX, InputFormat.XLSX])
        return lambda p: dc.convert(p).document.export_to_markdown()
    if name == "unstructured":
        from unstructured.partition.auto import partition
        from unstructured.staging.base import elements_to_md
        return lambda p: elements_to_md(partition(filename=str(p)))
    return ragtune()


def ragtune() -> Callable[[Path], str]:
    """What ragtune ships: tasks/ingest/formats/office.py on python-docx, python-pptx and openpyxl."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tasks.ingest.formats import convert

    def run(p: Path) -> str:
        try:
            return convert(p.read_bytes(), p.suffix.lstrip("."), p.name).text
        except Exception as exc:  # UnitError: report it like the libraries' own exceptions
            raise RuntimeError(getattr(exc, "reason", str(exc))) from None

    return run


NAMES = ("markitdown", "docling", "unstructured", "ragtune")


def norm(s: str) -> str:
    s = re.sub(r"<br\s*/?>|\\n", " ", html.unescape(s.replace("\\|", "|").replace("**", "")))
    return re.sub(r"\s+", " ", s).strip()


def same(a: str, b: str) -> bool:
    a, b = norm(a), norm(b)
    if a == b or (re.fullmatch(r"\d{4}-\d\d-\d\d", b) and a.startswith(b)):
        return True
    try:
        return abs(float(a) - float(b)) < 1e-9
    except ValueError:
        return False


def md_tables(md: str) -> list[list[list[str]]]:
    tables, cur = [], []
    for line in md.splitlines() + [""]:
        if line.strip().startswith("|"):
            if not re.fullmatch(r"[\s|:\-]+", line):  # skip the |---| row
                cur.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        elif cur:
            tables, cur = tables + [cur], []
    return tables


def score(md: str, exp: dict) -> dict[str, str]:
    lines = [norm(x) for x in md.splitlines()]
    heads = sum(any(re.fullmatch(("#+" if lvl is None else "#" * lvl) + r" (.*\W)?" + re.escape(t), x)
                    for x in lines) for lvl, t in exp["headings"])
    lists = sum(any(re.fullmatch((r"[-*+•]" if k == "-" else r"\d+[.)]") + r"\s+" + re.escape(t), x.strip())
                    for x in lines) for k, t in exp["lists"])
    cells, total, hdr, found = 0, 0, 0, md_tables(md)
    for want in exp["tables"]:  # per expected row: best row of the best table, columns shifted by 0 or 1
        total += sum(map(len, want))
        hdr += any(len(t[0]) == len(want[0]) and all(map(same, t[0], want[0])) for t in found)
        cells += max([sum(max(sum(same(g, w) for g, w in zip(got[sh:], row, strict=False))
                              for got in tab for sh in (0, 1)) for row in want)
                      for tab in found], default=0)
    texts = sum(norm(t) in norm(md) for t in exp["texts"])
    return {"headings": f"{heads}/{len(exp['headings'])}", "table cells": f"{cells}/{total}",
            "header rows": f"{hdr}/{len(exp['tables'])}", "lists": f"{lists}/{len(exp['lists'])}",
            "texts": f"{texts}/{len(exp['texts'])}"}


def attempt(fn: Callable[[Path], str], p: Path, limit: int = 60) -> str:
    def hang(*_: object) -> None:
        raise TimeoutError(f"no result after {limit} s")

    signal.signal(signal.SIGALRM, hang)
    signal.alarm(limit)
    try:
        text = fn(p).strip()
        return f"no error, {len(text)} chars: {text[:60]!r}"
    except Exception as e:  # report whatever the converter raises
        return f"{type(e).__module__}.{type(e).__name__}: {str(e)[:200]!r}"
    finally:
        signal.alarm(0)


def secs(fn: Callable[[Path], str], p: Path) -> float:
    t = time.perf_counter()
    fn(p)
    return time.perf_counter() - t


def bench(name: str, files: Path, out: Path | None) -> None:
    t = time.perf_counter()
    try:
        fn = load(name)
    except ImportError as e:
        print(f"-- {name}: skipped, not importable here ({e})")
        return
    print(f"\n== {name}: import + construct {time.perf_counter() - t:.2f} s")
    cols = ("headings", "table cells", "header rows", "lists", "texts")
    print(f"{'file':<12} {'first s':>8} {'median s':>9} {'chars':>6}  " + "  ".join(f"{k:>11}" for k in cols))
    for fname, exp in EXPECT.items():
        t = time.perf_counter()
        try:
            md = fn(files / fname)
        except Exception as e:
            print(f"{fname:<12} FAILED {type(e).__module__}.{type(e).__name__}: {str(e)[:150]!r}")
            continue
        first = time.perf_counter() - t
        runs = [secs(fn, files / fname) for _ in range(5)]  # a plain loop: timeit would turn the GC off
        if out:
            (out / name).mkdir(parents=True, exist_ok=True)
            (out / name / (fname + ".md")).write_text(md, encoding="utf-8")
        print(f"{fname:<12} {first:>8.3f} {statistics.median(runs):>9.4f} {len(md):>6}  "
              + "  ".join(f"{v:>11}" for v in score(md, exp).values()))
    many = sorted((files / "many").glob("*.docx"))
    t = time.perf_counter()
    ok = sum(attempt(fn, p).startswith("no error") for p in many)
    print(f"{len(many)} docx: {time.perf_counter() - t:.2f} s, {ok} converted")
    for bad in sorted(files.glob("bad_*.docx")):
        print(f"{bad.name}: {attempt(fn, bad)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=Path, help="reuse (or, with --gen-only, write) the test files here")
    ap.add_argument("--gen-only", action="store_true", help="only generate the test files")
    ap.add_argument("--out", type=Path, help="write each converter's Markdown to OUT/<converter>/")
    ap.add_argument("--only", nargs="*", choices=NAMES, help="run only these converters")
    a = ap.parse_args()
    files = a.files or Path(tempfile.mkdtemp(prefix="convbench-"))
    if a.gen_only or not (files / "sample.docx").exists():
        make_files(files)
        print(f"test files in {files}")
    if a.gen_only:
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing from a model hub at run time
    os.environ.setdefault("DO_NOT_TRACK", "true")  # unstructured pings its telemetry endpoint otherwise
    for name in a.only or NAMES:
        bench(name, files, a.out)


if __name__ == "__main__":
    main()

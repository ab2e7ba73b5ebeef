"""Word, PowerPoint and Excel (OOXML) to Markdown on python-docx, python-pptx and openpyxl: headings stay
headings, lists keep their markers and levels, tables become pipe tables, slides and sheets become sections.

Why these and not a converter library: measured by bench/converters.py on generated files, markitdown
(295 MB with onnxruntime) broke table rows holding a "|", added an empty header row to Word tables, dropped
slide bullet markers and printed integers as floats, and took ~165 ms per .docx; docling (1.1-1.8 GB with
torch) shifted every Word heading one level down and dropped sheet names and notes; unstructured wrote HTML
tables and downloads a spaCy model at run time. These three libraries are what those converters build on
(44 MB, ~12 ms per .docx) and gave every heading, cell, bullet, note and sheet name in that comparison."""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
from typing import Any

from tasks.ingest.formats.base import Converted, UnitError
from tasks.ingest.formats.text import md_cell, md_table

_CFB = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # OLE compound file: encrypted OOXML, or a legacy .doc/.xls/.ppt
MAX_EXPANDED = 1 << 30  # a zip that inflates past 1 GiB is refused before any XML is parsed (zip bombs)
MAX_CELLS = 2_000_000


def check_package(data: bytes, fmt: str) -> None:
    """Refuse, with the reason, what is not a readable OOXML package: password-protected files (an encrypted
    package inside an OLE container), legacy binary files under a new name, broken or bomb-like zips."""
    if data.startswith(_CFB):
        if "EncryptedPackage".encode("utf-16-le") in data:
            raise UnitError(f"{fmt}: password-protected (encrypted); save an unprotected copy to ingest it")
        raise UnitError(f"{fmt}: a legacy binary Office file (.doc/.xls/.ppt) named .{fmt}; save it as .{fmt}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = set(z.namelist())
            expanded = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise UnitError(f"{fmt}: not a valid Office file ({exc})") from None
    if "[Content_Types].xml" not in names:
        raise UnitError(f"{fmt}: not a valid Office file (a zip without [Content_Types].xml)")
    if expanded > MAX_EXPANDED:
        raise UnitError(f"{fmt}: expands to {expanded >> 20} MiB, more than {MAX_EXPANDED >> 20} MiB (zip bomb?)")


def _open(fmt: str, loader: Any, data: bytes) -> Any:
    """The parsed package; a parser's error on a broken part becomes UnitError in `formats.convert`."""
    check_package(data, fmt)
    return loader(io.BytesIO(data))


def _join(blocks: list[str]) -> str:
    return re.sub(r"\n{3,}", "\n\n", "\n".join(blocks)).strip()


# --- Word ----------------------------------------------------------------------------------------


def _numbering_formats(doc: Any) -> dict[tuple[str, str], str]:
    """(numId, level) -> numFmt ("bullet", "decimal", ...) from the document's numbering definitions."""
    try:
        root = doc.part.numbering_part.element
    except (KeyError, NotImplementedError, AttributeError):
        return {}
    w = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
    abstract = {a.get(f"{w}abstractNumId"): {lvl.get(f"{w}ilvl"): (lvl.find(f"{w}numFmt").get(f"{w}val")
                                                                    if lvl.find(f"{w}numFmt") is not None else "")
                                             for lvl in a.findall(f"{w}lvl")}
                for a in root.findall(f"{w}abstractNum")}
    out = {}
    for num in root.findall(f"{w}num"):
        ref = num.find(f"{w}abstractNumId")
        for lvl, fmt in abstract.get(ref.get(f"{w}val") if ref is not None else None, {}).items():
            out[(num.get(f"{w}numId"), lvl)] = fmt
    return out


def _paragraph(p: Any, numbering: dict[tuple[str, str], str]) -> str:
    text = p.text.strip()
    if not text:
        return ""
    style = (p.style.name if p.style is not None else "") or ""
    if m := re.fullmatch(r"(?i)heading (\d)", style):
        return "#" * min(int(m[1]), 6) + " " + " ".join(text.split())
    if style.lower() == "title":
        return "# " + " ".join(text.split())
    ppr = p._p.pPr
    num = ppr.numPr if ppr is not None else None
    if num is not None and num.numId is not None:
        level = num.ilvl.val if num.ilvl is not None else 0
        fmt = numbering.get((str(num.numId.val), str(level)), "bullet")
        return "  " * level + ("- " if fmt in ("bullet", "none", "") else "1. ") + text
    if "list" in style.lower():
        return ("1. " if "number" in style.lower() else "- ") + text
    return text


def convert_docx(data: bytes) -> Converted:
    import docx
    from docx.table import Table

    doc = _open("docx", docx.Document, data)
    numbering = _numbering_formats(doc)
    blocks: list[str] = []
    tables = 0
    for block in doc.iter_inner_content():
        if isinstance(block, Table):
            rows = [[c.text for c in row.cells] for row in block.rows]
            if any(any(c.strip() for c in r) for r in rows):
                blocks += ["", md_table(rows), ""]
                tables += 1
            continue
        line = _paragraph(block, numbering)
        listy = line.lstrip().startswith(("- ", "1. "))
        blocks += [line] if listy else ["", line, ""]
    title = (doc.core_properties.title or "").strip()
    heading = next((b[2:] for b in blocks if b.startswith("# ")), "")
    return Converted(_join(blocks), title or heading, {"tables": tables} if tables else {})


# --- PowerPoint ----------------------------------------------------------------------------------


def _shape_blocks(shape: Any, title_id: int | None) -> list[str]:
    from pptx.enum.shapes import MSO_SHAPE_TYPE, PP_PLACEHOLDER

    if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
        return [b for s in _reading_order(shape.shapes) for b in _shape_blocks(s, title_id)]
    if getattr(shape, "has_table", False) and shape.has_table:
        return ["", md_table([[c.text for c in row.cells] for row in shape.table.rows]), ""]
    if not shape.has_text_frame or shape.shape_id == title_id:
        return []
    bullets = shape.is_placeholder and shape.placeholder_format.type in (PP_PLACEHOLDER.BODY, PP_PLACEHOLDER.OBJECT)
    out = []
    for para in shape.text_frame.paragraphs:
        text = "".join(r.text for r in para.runs).strip() or para.text.strip()
        if text:
            out.append("  " * para.level + "- " + text if bullets else text)
    return out + [""]


def _reading_order(shapes: Any) -> list[Any]:
    return sorted(shapes, key=lambda s: ((s.top or 0) // 50_000, s.left or 0))  # rows of ~0.05", then left


def convert_pptx(data: bytes) -> Converted:
    from pptx import Presentation

    prs = _open("pptx", Presentation, data)
    blocks: list[str] = []
    first = ""
    for i, slide in enumerate(prs.slides, 1):
        title_shape = slide.shapes.title
        title = " ".join((title_shape.text_frame.text if title_shape is not None else "").split())
        first = first or title
        blocks += ["", f"## Slide {i}" + (f": {title}" if title else ""), ""]
        for shape in _reading_order(slide.shapes):
            blocks += _shape_blocks(shape, title_shape.shape_id if title_shape is not None else None)
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame
            if notes is not None and notes.text.strip():
                blocks += ["", f"### Notes (slide {i})", "", notes.text.strip(), ""]
    title = (prs.core_properties.title or "").strip() or first
    return Converted(_join(blocks), title, {"slides": len(prs.slides)})


# --- Excel ---------------------------------------------------------------------------------------


def cell_text(v: Any) -> str:
    """A cell value as a person reads it: 10 not 10.0, dates without a midnight time."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.15g}"
    if isinstance(v, dt.datetime):
        return v.date().isoformat() if v.time() == dt.time(0) else v.isoformat(sep=" ", timespec="minutes")
    if isinstance(v, dt.date | dt.time):
        return v.isoformat()
    return str(v)


def convert_xlsx(data: bytes) -> Converted:
    import openpyxl

    wb = _open("xlsx", lambda f: openpyxl.load_workbook(f, read_only=True, data_only=True), data)
    blocks: list[str] = []
    cells = sheets = 0
    try:
        for ws in wb.worksheets:
            rows = []
            for r in ws.iter_rows(values_only=True):
                cells += len(r)
                if cells > MAX_CELLS:
                    raise UnitError(f"xlsx: more than {MAX_CELLS:,} cells; export the large sheets as CSV")
                if any(v is not None and str(v).strip() for v in r):
                    rows.append([cell_text(v) for v in r])
            if not rows:
                continue  # an empty sheet says nothing
            width = max(max((i + 1 for i, c in enumerate(r) if c.strip()), default=0) for r in rows)
            blocks += ["", f"## {md_cell(ws.title)}", "", md_table([r[:width] for r in rows]), ""]
            sheets += 1
    finally:  # broken sheet XML surfaces while iterating in read-only mode: close the file either way
        wb.close()
    title = (wb.properties.title or "").strip() if wb.properties is not None else ""
    return Converted(_join(blocks), title, {"sheets": sheets})

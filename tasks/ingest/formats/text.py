"""Plain-text formats with structure: CSV/TSV exports as Markdown tables, reStructuredText headings as
Markdown headings, logs as they are, code and config files inside a fenced block."""

from __future__ import annotations

import csv
import io
import re

from tasks.ingest.formats.base import Converted, UnitError, decode_text

_SNIFF = 16_384


def md_cell(value: object) -> str:
    """One Markdown table cell: no line breaks, pipes escaped, surrounding space trimmed."""
    text = "" if value is None else str(value)
    return re.sub(r"\s*\n\s*", " ", text).replace("|", "\\|").strip()


def md_table(rows: list[list[str]]) -> str:
    """Rows (the first is the header) as a Markdown pipe table; ragged rows are padded."""
    width = max(len(r) for r in rows)
    header = [md_cell(c) or f"column {i + 1}" for i, c in enumerate(rows[0] + [""] * (width - len(rows[0])))]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * width]
    for r in rows[1:]:
        cells = [md_cell(c) for c in r] + [""] * (width - len(r))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def convert_delimited(data: bytes, delimiter: str | None) -> Converted:
    """A CSV or TSV export as one Markdown table (header row first); the dialect is sniffed for CSV."""
    text, encoding = decode_text(data)
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:_SNIFF], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if any(c.strip() for c in r)]
    except csv.Error as exc:
        raise UnitError(f"csv: unreadable ({exc})") from None
    if not rows:
        raise UnitError("empty: no rows", "filtered")
    meta = {"rows": len(rows) - 1, "columns": max(len(r) for r in rows)}
    if encoding != "utf-8":
        meta["encoding"] = encoding
    return Converted(md_table(rows), "", meta)


_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}\s*$")


def rst_to_markdown(text: str) -> tuple[str, str]:
    """reStructuredText section titles (underlined, optionally overlined) as Markdown headings; levels follow
    the order in which adornment styles first appear, as docutils assigns them. Returns (text, first title)."""
    lines = text.split("\n")
    styles: list[tuple[str, bool]] = []
    out: list[str] = []
    first = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        over = _ADORNMENT.match(line)
        # overline + title + underline
        if over and i + 2 < len(lines) and lines[i + 1].strip() and _ADORNMENT.match(lines[i + 2]) \
                and lines[i + 2].strip()[0] == over.group(1):
            title, style, i = lines[i + 1].strip(), (over.group(1), True), i + 3
        else:
            under = _ADORNMENT.match(lines[i + 1]) if i + 1 < len(lines) else None
            if not (under and line.strip() and not _ADORNMENT.match(line)
                    and len(lines[i + 1].strip()) >= min(len(line.strip()), 3) and not line.startswith(" ")):
                out.append(line)
                i += 1
                continue
            title, style, i = line.strip(), (under.group(1), False), i + 2
        if style not in styles:
            styles.append(style)
        level = min(styles.index(style) + 1, 6)
        first = first or title
        out.append(f"{'#' * level} {title}")
    return "\n".join(out), first


def convert_rst(data: bytes) -> Converted:
    text, encoding = decode_text(data)
    body, title = rst_to_markdown(text)
    return Converted(body, title, {} if encoding == "utf-8" else {"encoding": encoding})


def convert_plain(data: bytes) -> Converted:
    text, encoding = decode_text(data)
    return Converted(text, "", {} if encoding == "utf-8" else {"encoding": encoding})


def fence(text: str, language: str) -> str:
    """`text` in a fenced block longer than any backtick run inside it (CommonMark), so the chunker reads
    '#' comments as code, not headings."""
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=2)
    ticks = "`" * (longest + 1)
    return f"{ticks}{language}\n{text.rstrip()}\n{ticks}"


def convert_code(data: bytes, language: str) -> Converted:
    text, encoding = decode_text(data)
    meta = {"language": language} if language else {}
    if encoding != "utf-8":
        meta["encoding"] = encoding
    return Converted(fence(text, language), "", meta)

"""File formats to document records: each reader turns one unit's bytes into records or fates."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml

from tasks.core.records import sha256_bytes, sha256_text
from tasks.ingest import formats
from tasks.ingest.formats.base import UnitError, decode_text, humanize_stem
from tasks.ingest.formats.text import fence

SUPPORTED_SUFFIXES = {
    ".txt": "txt", ".text": "txt", ".md": "md", ".markdown": "md", ".html": "html", ".htm": "html",
    ".pdf": "pdf", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
    **formats.SUFFIXES,
}
CONTENT_TYPES = {
    "text/html": "html", "application/xhtml+xml": "html", "application/pdf": "pdf",
    "application/json": "json", "application/x-ndjson": "jsonl", "application/jsonl": "jsonl",
    "text/markdown": "md", "text/x-markdown": "md", "text/plain": "txt",
    "application/vnd.apache.parquet": "parquet", **formats.CONTENT_TYPES,
}
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)
_MD_HEADING = re.compile(r"^#{1,2}[ \t]+(.+?)[ \t#]*$", re.M)


@dataclass
class Parsed:
    """One record read from a unit, or the error that unit ended in."""

    unit: str
    doc_id: str
    raw_hash: str
    title: str = ""
    text: str | None = None
    fmt: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    error: UnitError | None = None


@dataclass(frozen=True)
class FieldNames:
    """Which record fields hold the text, the id and the title."""

    text: tuple[str, ...] = ("text", "content", "body")
    ids: tuple[str, ...] = ("id", "_id", "doc_id")
    title: tuple[str, ...] = ("title", "name")


def format_for(name: str, content_type: str | None = None) -> str | None:
    """The reader for a file name or (for URLs) a Content-Type; None when unsupported."""
    if content_type:
        fmt = CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
        if fmt:
            return fmt
    path = PurePosixPath(name)
    return SUPPORTED_SUFFIXES.get(path.suffix.lower()) or (formats.format_for_name(path.name) if not path.suffix else None)


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """YAML front matter of a markdown file as metadata, and the body without it."""
    m = _FRONT_MATTER.match(text)
    if not m:
        return {}, text

    try:
        meta = yaml.safe_load(m.group(1))
    except yaml.YAMLError:
        return {}, text
    if not isinstance(meta, dict):
        return {}, text
    return {str(k): v for k, v in meta.items()}, text[m.end():]


def parse_unit(data: bytes, fmt: str, unit: str, doc_id: str, fields: FieldNames) -> Iterator[Parsed]:
    """Records of one unit's bytes in format `fmt`; errors come back as `Parsed.error`, never raised."""
    raw_hash = sha256_bytes(data)
    if not data.strip():
        yield Parsed(unit, doc_id, raw_hash, fmt=fmt, error=UnitError("empty: no content", "filtered"))
        return
    try:
        if fmt in ("txt", "md", "html"):
            yield _parse_text(data, fmt, unit, doc_id, raw_hash)
        elif fmt == "pdf":
            yield _parse_pdf(data, unit, doc_id, raw_hash)
        elif fmt == "jsonl":
            yield from _parse_jsonl(data, unit, doc_id, fields)
        elif fmt == "json":
            yield from _parse_json(data, unit, doc_id, raw_hash, fields)
        elif fmt == "parquet":
            yield from _parse_parquet(data, unit, doc_id, fields)
        elif fmt in formats.FORMATS:
            conv = formats.convert(data, fmt, doc_id)
            meta = {k: v for k, v in conv.metadata.items() if k != "title"}
            yield Parsed(unit, doc_id, raw_hash, title=conv.title or humanize_stem(doc_id), text=conv.text, fmt=fmt,
                         metadata=meta)
        else:
            raise UnitError(f"unsupported: no reader for format {fmt!r}", "filtered")
    except UnitError as exc:
        yield Parsed(unit, doc_id, raw_hash, fmt=fmt, error=exc)


_HTML_START = re.compile(r"\A\s*<(?:!doctype\s+html|html|head|body|div|p|table|section|article|main)\b", re.I)


def _parse_text(data: bytes, fmt: str, unit: str, doc_id: str, raw_hash: str) -> Parsed:
    text, encoding = decode_text(data)
    if fmt == "txt" and _HTML_START.match(text) and text.count("</") >= 2:
        fmt = "html"  # a page or fragment saved as .txt: its text is extracted like any page's
    meta: dict[str, Any] = {} if encoding == "utf-8" else {"encoding": encoding}
    title = ""
    if fmt == "md":
        front, text = split_front_matter(text)
        meta.update(front)
        title = str(front.pop("title", "") or "")
        meta.pop("title", None)
        if not title:
            m = _MD_HEADING.search(text)
            title = m.group(1).strip() if m else ""
    if not title and fmt != "html":  # HTML titles come from <title> when the page is cleaned
        title = humanize_stem(doc_id)
    return Parsed(unit, doc_id, raw_hash, title=title, text=text, fmt=fmt, metadata=meta)


def _parse_pdf(data: bytes, unit: str, doc_id: str, raw_hash: str) -> Parsed:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    if not data.lstrip()[:5] == b"%PDF-":
        raise UnitError("pdf: not a PDF file (no %PDF- header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise UnitError("pdf: encrypted")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        info = reader.metadata or {}
        title = str(info.get("/Title") or "").strip()
    except UnitError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
        raise UnitError(f"pdf: unreadable ({type(exc).__name__}: {str(exc)[:120]})") from None
    text = "\n\n".join(p for p in pages if p)
    return Parsed(
        unit, doc_id, raw_hash, title=title or humanize_stem(doc_id), text=text, fmt="pdf",
        metadata={"pages": len(pages)},
    )


def _record_to_parsed(obj: Any, unit: str, doc_id: str, raw_hash: str, fmt: str, f: FieldNames) -> Parsed:
    """A JSON-like record to a Parsed; a record without usable text is quarantined with the reason."""
    if not isinstance(obj, dict):
        err = UnitError(f"record: expected a JSON object, got {type(obj).__name__}")
        return Parsed(unit, doc_id, raw_hash, fmt=fmt, error=err)
    key = next((k for k in f.text if k in obj), None)
    if key is None:
        err = UnitError(f"record: no text field (tried {', '.join(f.text)})")
        return Parsed(unit, doc_id, raw_hash, fmt=fmt, error=err)
    text = obj[key]
    if text is None:
        return Parsed(unit, doc_id, raw_hash, fmt=fmt, error=UnitError(f"record: '{key}' is null"))
    if not isinstance(text, str):
        err = UnitError(f"record: '{key}' is {type(text).__name__}, expected a string")
        return Parsed(unit, doc_id, raw_hash, fmt=fmt, error=err)
    title_key = next((k for k in f.title if isinstance(obj.get(k), str) and obj[k].strip()), None)
    title = obj[title_key].strip() if title_key else ""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    skip = {key, "metadata", *(f.ids), *(f.title)}
    meta = {**meta, **{k: v for k, v in obj.items() if k not in skip}}
    return Parsed(unit, doc_id, raw_hash, title=title, text=text, fmt=fmt, metadata=meta)


def _record_id(obj: Any, f: FieldNames) -> str | None:
    if not isinstance(obj, dict):
        return None
    for k in f.ids:
        v = obj.get(k)
        if isinstance(v, str | int) and not isinstance(v, bool) and str(v).strip():
            rid = str(v).strip()
            if len(rid) <= 200 and "#" not in rid and not any(ch in rid for ch in "\n\r\x00"):
                return rid
    return None


def _parse_jsonl(data: bytes, unit: str, doc_id: str, f: FieldNames) -> Iterator[Parsed]:
    text, _ = decode_text(data)
    seen: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        raw_hash = sha256_text(line)
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Parsed(f"{unit}#line-{n}", f"{doc_id}#line-{n}", raw_hash, fmt="jsonl",
                         error=UnitError(f"json: invalid JSON on line {n} ({exc.msg} at column {exc.colno})"))
            continue
        rid = _record_id(obj, f)
        if rid is not None and rid in seen:
            yield Parsed(f"{unit}#line-{n}", f"{doc_id}#line-{n}", raw_hash, fmt="jsonl",
                         error=UnitError(f"record: id {rid!r} already used on line {seen[rid]}"))
            continue
        if rid is not None:
            seen[rid] = n
        suffix = rid if rid is not None else f"line-{n}"
        yield _record_to_parsed(obj, f"{unit}#{suffix}", f"{doc_id}#{suffix}", raw_hash, "jsonl", f)


def _parse_json(data: bytes, unit: str, doc_id: str, raw_hash: str, f: FieldNames) -> Iterator[Parsed]:
    text, _ = decode_text(data)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnitError(f"json: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if _is_config(obj, f):  # settings, not records: the file is one document
        yield Parsed(unit, doc_id, raw_hash, title=humanize_stem(doc_id), fmt="json", metadata={"language": "json"},
                     text=fence(json.dumps(obj, indent=2, ensure_ascii=False), "json"))
    elif isinstance(obj, dict):
        yield _record_to_parsed(obj, unit, doc_id, raw_hash, "json", f)
    elif isinstance(obj, list):
        if not obj:
            raise UnitError("empty: JSON array has no records", "filtered")
        yield from rows_to_parsed(obj, unit, doc_id, "json", f)
    else:
        raise UnitError(f"json: top level is {type(obj).__name__}, expected an object or an array of objects")


def _is_config(obj: Any, f: FieldNames) -> bool:
    """A JSON file none of whose objects has a text field is a config or data file, not a set of records."""
    rows = obj if isinstance(obj, list) else [obj]
    if not rows or not all(isinstance(r, dict) for r in rows):
        return isinstance(obj, dict)
    return not any(k in r for r in rows for k in f.text)


def rows_to_parsed(
    rows: list[Any], unit: str, doc_id: str, fmt: str, f: FieldNames, start: int = 0,
    seen: dict[str, int] | None = None,
) -> Iterator[Parsed]:
    """Records of a list of row objects; `start` and `seen` carry numbering and ids across batches."""
    seen = {} if seen is None else seen
    for n, obj in enumerate(rows, start=start):
        rid = _record_id(obj, f)
        raw_hash = sha256_text(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str))
        if rid is not None and rid in seen:
            yield Parsed(f"{unit}#row-{n}", f"{doc_id}#row-{n}", raw_hash, fmt=fmt,
                         error=UnitError(f"record: id {rid!r} already used in row {seen[rid]}"))
            continue
        if rid is not None:
            seen[rid] = n
        suffix = rid if rid is not None else f"row-{n}"
        yield _record_to_parsed(obj, f"{unit}#{suffix}", f"{doc_id}#{suffix}", raw_hash, fmt, f)


def _parse_parquet(data: bytes, unit: str, doc_id: str, f: FieldNames) -> Iterator[Parsed]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise UnitError(f"parquet: unreadable ({str(exc)[:120]})") from None
    if table.num_rows == 0:
        raise UnitError("empty: parquet file has no rows", "filtered")
    yield from rows_to_parsed(table.to_pylist(), unit, doc_id, "parquet", f)

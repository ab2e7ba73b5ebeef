"""collect: read folder, URL and Hugging Face sources into raw records, and report what changed."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tasks.core.config import resolve_local_source
from tasks.core.records import Fate, sha256_text, write_fates, write_records
from tasks.core.workspace import Workspace, atomic_write_json, read_json, utc_now
from tasks.ingest.config import CollectConfig
from tasks.ingest.fetch import fetch_url, redact_url
from tasks.ingest.formats.base import UnitError
from tasks.ingest.readers import FieldNames, Parsed, format_for, parse_unit, rows_to_parsed

log = logging.getLogger("ragtune.collect")
COMPRESSED = {".gz", ".bz2", ".xz", ".zst", ".zip", ".tar", ".tgz", ".7z", ".rar"}
Progress = Callable[[int, int], None]


class SourceError(ValueError):
    """A source that cannot be read at all (a missing folder, say): the run stops with this message."""


@dataclass(frozen=True)
class Source:
    spec: str            # as given by the user (credentials redacted for URLs)
    kind: str            # folder | file | url | hf_disk | hf_hub
    location: str        # absolute path, full URL, or hub name
    key: str             # file name of its state under sources/

    @property
    def is_local(self) -> bool:
        return self.kind in ("folder", "file", "hf_disk")


@dataclass
class FileEntry:
    path: Path
    rel: str
    size: int
    mtime_ns: int
    error: UnitError | None = None


@dataclass
class CollectResult:
    """What collect wrote to the run's staging folder, and the change report."""

    records_path: str
    fates_path: str
    state_path: str
    seen: int
    records: int
    changes: dict[str, Any] = field(default_factory=dict)


def _source_key(kind: str, location: str) -> str:
    base = re.sub(r"[^A-Za-z0-9]+", "-", Path(location.rstrip("/")).name or location).strip("-")[:40]
    return f"{base or kind}-{hashlib.sha1(f'{kind}:{location}'.encode()).hexdigest()[:8]}"


def resolve_sources(specs: list[str]) -> list[Source]:
    """Classify each source spec; a missing local path is a `SourceError` (a typo, not bad data)."""
    out: dict[str, Source] = {}
    for spec in specs:
        if spec.lower().startswith(("http://", "https://")):
            src = Source(redact_url(spec), "url", spec, _source_key("url", redact_url(spec)))
        elif spec.startswith("hf:"):
            name = spec[3:].strip()
            if not name:
                raise SourceError("hf: source needs a dataset name or path, e.g. hf:./my_dataset")
            local = resolve_local_source(name)
            if local.is_dir():
                if not any((local / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
                    raise SourceError(f"{spec}: folder is not a dataset written by save_to_disk")
                src = Source(spec, "hf_disk", str(local), _source_key("hf", str(local)))
            elif local.is_file():
                src = Source(spec, "file", str(local), _source_key("file", str(local)))
            else:
                src = Source(spec, "hf_hub", name, _source_key("hf", name))
        else:
            p = resolve_local_source(spec)
            if p.is_dir():
                src = Source(spec, "folder", str(p), _source_key("folder", str(p)))
            elif p.is_file():
                src = Source(spec, "file", str(p), _source_key("file", str(p)))
            elif p.is_symlink():
                raise SourceError(f"source {spec!r} is a broken symbolic link")
            else:
                raise SourceError(f"source not found: {spec} (looked at {p})")
        out.setdefault(src.key, src)
    return list(out.values())


def scan_folder(root: Path, include_hidden: bool = False) -> list[FileEntry]:
    """Every file under `root` (sorted, symlinked folders not followed), with size and mtime."""
    entries: list[FileEntry] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=None, followlinks=False):
        if not include_hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        dirnames.sort()
        for name in sorted(filenames):
            if not include_hidden and name.startswith("."):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            entries.append(_stat_entry(path, rel))
    return entries


def _stat_entry(path: Path, rel: str) -> FileEntry:
    try:
        st = path.stat()
    except OSError as exc:
        reason = "broken symbolic link" if path.is_symlink() else (exc.strerror or type(exc).__name__)
        return FileEntry(path, rel, 0, 0, UnitError(f"unreadable: {reason}"))
    if not stat.S_ISREG(st.st_mode):
        return FileEntry(path, rel, 0, 0, UnitError("unsupported: not a regular file", "filtered"))
    return FileEntry(path, rel, st.st_size, st.st_mtime_ns)


def scan_sources(sources: list[Source], config: CollectConfig) -> tuple[dict[str, list[FileEntry]], str | None]:
    """Files of every local source, and a fingerprint of their stat data (None when a source is remote)."""
    files: dict[str, list[FileEntry]] = {}
    h = hashlib.sha256(config.fingerprint().encode())
    remote = False
    for src in sources:
        if src.kind == "folder":
            entries = scan_folder(Path(src.location), config.include_hidden)
        elif src.kind == "file":
            p = Path(src.location)
            entries = [_stat_entry(p, p.name)]
        elif src.kind == "hf_disk":
            root = Path(src.location)
            entries = [e for e in scan_folder(root, include_hidden=False) if e.error is None]
        else:
            remote = True
            entries = []
        files[src.key] = entries
        h.update(f"\x00{src.kind}\x00{src.location}\x00".encode())
        for e in entries:
            h.update(f"{e.rel}\x01{e.size}\x01{e.mtime_ns}\x02".encode())
    return files, (None if remote else h.hexdigest()[:32])


def _unit_path(src: Source, rel: str) -> str:
    """The unit name users see: the source as given, joined with the path inside it."""
    if src.kind == "file":
        return src.spec
    return f"{src.spec.rstrip('/')}/{rel}"


def _iter_source(src: Source, entries: list[FileEntry], config: CollectConfig, fields: FieldNames) -> Iterator[Parsed]:
    if src.kind in ("folder", "file"):
        for e in entries:
            unit = _unit_path(src, e.rel)
            yield from _read_file(e, unit, config, fields)
    elif src.kind == "url":
        try:
            got = fetch_url(src.location, timeout_s=config.url_timeout_s, max_bytes=config.url_max_bytes,
                            retries=config.url_retries)
        except UnitError as exc:
            yield Parsed(src.spec, src.spec, "", error=exc)
            return
        fmt = format_for(urlpath(got.final_url), got.content_type) or "txt"
        yield from parse_unit(got.data, fmt, src.spec, src.spec, fields)
    else:
        yield from _iter_hf(src, config, fields)


def urlpath(url: str) -> str:
    return urlsplit(url).path or "/"


def _read_file(e: FileEntry, unit: str, config: CollectConfig, fields: FieldNames) -> Iterator[Parsed]:
    suffix = Path(e.rel).suffix.lower()
    if e.error is not None:
        yield Parsed(unit, e.rel, "", error=e.error)
        return
    fmt = format_for(e.rel)
    if fmt is None:
        what = f"compressed file '{suffix}' (extract it first)" if suffix in COMPRESSED else (
            f"file type '{suffix}'" if suffix else "file without an extension")
        yield Parsed(unit, e.rel, "", error=UnitError(f"unsupported: {what}", "filtered"))
        return
    if e.size > config.max_file_bytes:
        err = UnitError(f"too_large: {e.size} bytes > max_file_bytes {config.max_file_bytes}", "filtered")
        yield Parsed(unit, e.rel, "", error=err)
        return
    try:
        data = e.path.read_bytes()
    except OSError as exc:
        yield Parsed(unit, e.rel, "", error=UnitError(f"unreadable: {exc.strerror or type(exc).__name__}"))
        return
    yield from parse_unit(data, fmt, unit, e.rel, fields)


def _iter_hf(src: Source, config: CollectConfig, fields: FieldNames) -> Iterator[Parsed]:
    import datasets

    try:
        if src.kind == "hf_disk":
            loaded = datasets.load_from_disk(src.location)
        else:
            loaded = datasets.load_dataset(src.location, split=config.hf_split)
    except Exception as exc:  # the hub, the network and the loaders raise many types; all end the same way
        msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        yield Parsed(src.spec, src.spec, "", error=UnitError(f"hf: cannot load {src.spec} ({msg})"))
        return
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {config.hf_split or "data": loaded}
    if config.hf_split and config.hf_split in splits:
        splits = {config.hf_split: splits[config.hf_split]}
    prefix = src.spec if src.spec.startswith("hf:") else f"hf:{src.spec}"
    for split, ds in splits.items():
        offset, seen = 0, {}
        for batch in ds.iter(batch_size=1000):
            rows = [dict(zip(batch, vals, strict=True)) for vals in zip(*batch.values(), strict=True)]
            unit, doc = f"{prefix}/{split}", f"{prefix[3:]}/{split}"
            yield from rows_to_parsed(rows, unit, doc, "hf", fields, start=offset, seen=seen)
            offset += len(rows)


def load_source_state(ws: Workspace, src: Source) -> dict[str, Any]:
    return read_json(ws.sources / f"{src.key}.json", default={}) or {}


def collect_sources(
    config: CollectConfig, ws: Workspace, out_dir: Path, progress: Progress | None = None,
    sources: list[Source] | None = None, files: dict[str, list[FileEntry]] | None = None,
) -> CollectResult:
    """Read every unit of every source; write records, fates and the next source state to `out_dir`."""
    sources = sources if sources is not None else resolve_sources(config.sources)
    if files is None:
        files, _ = scan_sources(sources, config)
    fields = FieldNames(tuple(config.text_fields), tuple(config.id_fields), tuple(config.title_fields))
    total = sum(len(v) for v in files.values()) + sum(1 for s in sources if not s.is_local or s.kind == "hf_disk")
    records: list[dict[str, Any]] = []
    fates: list[Fate] = []
    states: dict[str, Any] = {}
    changes: dict[str, list[str]] = {"new": [], "changed": [], "unchanged": [], "deleted": []}
    owner: dict[str, str] = {}
    now = utc_now()
    done = 0
    for src in sources:
        prev = load_source_state(ws, src).get("units", {})
        units: dict[str, list[str]] = {}
        source_uri = src.spec if src.kind in ("url", "hf_hub") else Path(src.location).as_uri()
        last_file = None
        for p in _iter_source(src, files.get(src.key, []), config, fields):
            file_part = p.unit.split("#", 1)[0]
            if file_part != last_file:
                last_file = file_part
                done += 1
                if progress and (done % 200 == 0):
                    progress(done, total)
            uri = source_uri if src.kind != "folder" else Path(src.location, p.doc_id.split("#", 1)[0]).as_uri()
            first_seen = prev.get(p.unit, [None, None])
            collected_at = first_seen[1] if first_seen[0] == p.raw_hash and first_seen[1] else now
            units[p.unit] = [p.raw_hash, collected_at]
            _note_change(changes, p.unit, prev, p.raw_hash)
            if p.error is not None:
                fates.append(Fate(p.unit, p.error.fate, p.error.reason, uri, p.doc_id, "collect"))
                continue
            if p.doc_id in owner:
                reason = f"collision: doc_id {p.doc_id!r} also produced by {owner[p.doc_id]}"
                fates.append(Fate(p.unit, "quarantined", reason, uri, p.doc_id, "collect"))
                continue
            owner[p.doc_id] = p.unit
            records.append({
                "doc_id": p.doc_id, "unit": p.unit, "source_uri": uri, "title": p.title, "text": p.text,
                "metadata": {**p.metadata, "format": p.fmt}, "content_hash": sha256_text(p.text or ""),
                "raw_hash": p.raw_hash, "format": p.fmt, "collected_at": collected_at,
            })
        changes["deleted"].extend(u for u in prev if u not in units)
        states[src.key] = {"source": src.spec, "kind": src.kind, "location": _safe_location(src), "units": units}
    if progress:
        progress(total, total)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_records(out_dir / "records.parquet", records)
    write_fates(out_dir / "fates.jsonl", fates)
    atomic_write_json(out_dir / "state.json", states)
    seen = len(records) + len(fates)
    log.info("collected %d units from %d sources: %d records, %d rejected", seen, len(sources), len(records), len(fates))
    summary = {k: len(v) for k, v in changes.items()}
    return CollectResult(
        str(out_dir / "records.parquet"), str(out_dir / "fates.jsonl"), str(out_dir / "state.json"),
        seen, len(records), {"counts": summary, **{k: sorted(v) for k, v in changes.items() if k != "unchanged"}},
    )


def _safe_location(src: Source) -> str:
    return redact_url(src.location) if src.kind == "url" else src.location


def _note_change(changes: dict[str, list[str]], unit: str, prev: dict[str, Any], raw_hash: str) -> None:
    if unit not in prev:
        changes["new"].append(unit)
    elif prev[unit][0] != raw_hash:
        changes["changed"].append(unit)
    else:
        changes["unchanged"].append(unit)


def commit_source_states(ws: Workspace, state_path: Path, dataset_version: str) -> None:
    """Make the run's view of its sources the remembered one (called after a successful publish)."""
    states = read_json(state_path, default={}) or {}
    for key, state in states.items():
        atomic_write_json(ws.sources / f"{key}.json", {**state, "dataset_version": dataset_version,
                                                       "updated_at": utc_now()})

"""publish: a content-addressed dataset version with its manifest, stats and meta, then `latest`."""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from collections import Counter
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from tasks.core.provenance import provenance
from tasks.core.records import FATES, Fate, read_fates, read_records, reason_code, write_records
from tasks.core.workspace import (
    Workspace,
    atomic_write_json,
    publish_dir,
    read_json,
    read_pointer,
    utc_now,
    write_jsonl,
    write_pointer,
)
from tasks.ingest.filters import HARD_REASONS

log = logging.getLogger("ragtune.publish")


@dataclass
class PublishResult:
    dataset_version: str
    dataset_dir: str
    manifest: str
    counts: dict[str, int]
    created: bool


def manifest_lines(records: list[dict[str, Any]], fates: list[Fate]) -> list[dict[str, Any]]:
    """One line per input unit, sorted by unit: accepted records plus every other fate."""
    lines = [Fate(r["unit"], "accepted", accepted_reason(r), r["source_uri"], r["doc_id"], "publish").manifest_line()
             for r in records]
    lines += [f.manifest_line() for f in fates]
    return sorted(lines, key=lambda m: (m["unit"], m["fate"]))


def accepted_reason(record: dict[str, Any]) -> str:
    """Why an accepted record is in: it passed every check, or a `keep` pattern overruled a filter."""
    kept = (record.get("metadata") or {}).get("kept")
    if isinstance(kept, dict):
        return f"kept: matches keep pattern {kept.get('pattern')!r} (would be filtered as {kept.get('past')})"
    return "passed all checks"


def count_fates(lines: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(m["fate"] for m in lines)
    return {"seen": len(lines), **{f: counts.get(f, 0) for f in FATES}}


def dataset_version(records: list[dict[str, Any]], lines: list[dict[str, Any]]) -> str:
    """Content address of a dataset: the records (less their first-seen time) and the manifest."""
    h = hashlib.sha256()
    for r in sorted(records, key=lambda r: r["doc_id"]):
        body = {k: v for k, v in r.items() if k != "collected_at"}
        h.update(json.dumps(body, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\n")
    h.update(b"\x00manifest\x00")
    for m in lines:
        h.update(json.dumps(m, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def build_stats(records: list[dict[str, Any]], lines: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    lengths = [len(r["text"]) for r in records]
    reasons = Counter((m["fate"], reason_code(m["reason"])) for m in lines if m["fate"] != "accepted")
    examples = {(m["fate"], reason_code(m["reason"])): m["reason"] for m in reversed(lines) if m["fate"] != "accepted"}
    return {
        "counts": count_fates(lines),
        "top_reasons": [{"fate": f, "reason": c, "count": n, "example": examples[(f, c)]}
                        for (f, c), n in reasons.most_common(20)],
        "warnings": filtered_warnings(lines),
        "formats": dict(Counter(r.get("format") or "?" for r in records).most_common()),
        "text_chars": {
            "total": sum(lengths), "min": min(lengths, default=0), "max": max(lengths, default=0),
            "median": statistics.median(lengths) if lengths else 0,
        },
        **extra,
    }


LOUD_FILTERED_FRACTION = 0.05  # above this share of the input filtered, the warning says so in capitals


def filtered_warnings(lines: list[dict[str, Any]], max_units: int = 3) -> list[str]:
    """One warning per reason inputs were filtered for (with the first few units and how to find and rescue
    them), and a stronger one when more than 5% of the input was filtered. Empty when nothing was."""
    by_code: dict[str, list[str]] = {}
    for m in lines:
        if m["fate"] == "filtered":
            by_code.setdefault(reason_code(m["reason"]), []).append(m["unit"])
    out = []
    for code, units in sorted(by_code.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        shown = ", ".join(units[:max_units]) + (f" and {len(units) - max_units} more" if len(units) > max_units else "")
        hint = "not text, cannot be kept" if code in HARD_REASONS else "`--keep GLOB` accepts them"
        if code in ("unsupported", "too_large"):
            hint = "not read"
        out.append(f"warning: {len(units)} filtered as {code}: {shown} (`ragtune fates --reason {code}`; {hint})")
    filtered = sum(len(u) for u in by_code.values())
    if lines and filtered / len(lines) > LOUD_FILTERED_FRACTION:
        out.insert(0, f"WARNING: {filtered} of {len(lines)} inputs ({filtered / len(lines):.0%}) were filtered, more "
                   f"than {LOUD_FILTERED_FRACTION:.0%}: check that clean.profile suits this corpus (`knowledge` keeps "
                   "every document a person wrote) and rescue what is content with `--keep`")
    return out


def find_published(ws: Workspace, dataset: str, fingerprint: str | None) -> str | None:
    """The version an identical earlier run published (same sources, same stat data, same config)."""
    if not fingerprint:
        return None
    base = ws.dataset_dir(dataset)
    version = read_pointer(base / "fingerprints" / fingerprint)
    if version and (base / version / "manifest.jsonl").exists():
        return version
    return None


def publish_dataset(
    ws: Workspace, dataset: str, run_id: str, records_path: Path, fate_paths: list[Path],
    extra_stats: dict[str, Any], meta: dict[str, Any], fingerprint: str | None,
) -> PublishResult:
    """Write `datasets/<dataset>/<version>/` unless it exists, then move `latest` and record the fingerprint."""
    records = sorted(read_records(Path(records_path)), key=lambda r: r["doc_id"])
    fates = [f for p in fate_paths for f in read_fates(Path(p))]
    lines = manifest_lines(records, fates)
    version = dataset_version(records, lines)
    base = ws.dataset_dir(dataset)
    final = base / version
    created = False
    if not (final / "manifest.jsonl").exists():
        staging = base / f".staging-{run_id}"
        write_records(staging / "records.parquet", records)
        write_jsonl(staging / "manifest.jsonl", lines)
        atomic_write_json(staging / "stats.json", build_stats(records, lines, extra_stats))
        atomic_write_json(staging / "meta.json", {
            "dataset": dataset, "version": version, "run_id": run_id, "created_at": utc_now(),
            "records": len(records), **meta, **provenance(),
        })
        created = publish_dir(staging, final)  # the manifest is in place once the folder is
    if read_pointer(base / "latest") != version:
        write_pointer(base / "latest", version)
    if fingerprint and read_pointer(base / "fingerprints" / fingerprint) != version:
        write_pointer(base / "fingerprints" / fingerprint, version)
    log.info("dataset %s version %s %s (%d records)", dataset, version, "published" if created else "unchanged",
             len(records))
    return PublishResult(version, str(final), str(final / "manifest.jsonl"), count_fates(lines), created)


def reuse_published(ws: Workspace, dataset: str, version: str) -> PublishResult:
    """Point `latest` at an existing version (an unchanged re-run); nothing else is written."""
    base = ws.dataset_dir(dataset)
    if read_pointer(base / "latest") != version:
        write_pointer(base / "latest", version)
    stats = read_json(base / version / "stats.json", default={}) or {}
    return PublishResult(version, str(base / version), str(base / version / "manifest.jsonl"),
                         stats.get("counts", {}), False)


def latest_version(ws: Workspace, dataset: str = "docs") -> str | None:
    return read_pointer(ws.dataset_dir(dataset) / "latest")


def version_file(ws: Workspace, dataset: str, version: str | None, name: str) -> Path:
    """`name` (records.parquet, manifest.jsonl, ...) of a published version, the latest when none is given."""
    version = version or latest_version(ws, dataset)
    if not version:
        raise FileNotFoundError(f"no published {dataset} dataset in {ws.root}; run `ragtune ingest` first")
    path = ws.dataset_dir(dataset) / version / name
    if not path.exists():
        raise FileNotFoundError(f"dataset version {version} not found under {ws.dataset_dir(dataset)}")
    return path


def load_dataset_version(ws: Workspace, dataset: str = "docs", version: str | None = None):
    """A published version as a `datasets.Dataset` (the latest when no version is given)."""
    import datasets

    return datasets.Dataset.from_parquet(str(version_file(ws, dataset, version, "records.parquet")))


def manifest_path(ws: Workspace, dataset: str = "docs", version: str | None = None, run_id: str | None = None) -> Path:
    """The manifest of a published version (the latest by default) or of a rejected run (under quarantine/)."""
    if run_id:
        path = ws.quarantine / run_id / "manifest.jsonl"
        if not path.exists():
            raise FileNotFoundError(f"no manifest for run {run_id} under {ws.quarantine} (only rejected runs keep one there)")
        return path
    return version_file(ws, dataset, version, "manifest.jsonl")


def select_fates(lines: list[dict[str, Any]], fate: str | None = None, reason: str | None = None,
                 unit: str | None = None) -> list[dict[str, Any]]:
    """Manifest lines with this fate, a reason whose code is `reason` (or which contains it), and a unit or
    document id matching the glob `unit`."""

    out = []
    for m in lines:
        if fate and m["fate"] != fate:
            continue
        if reason and reason_code(m["reason"]) != reason and reason.lower() not in m["reason"].lower():
            continue
        if unit and not (fnmatchcase(m["unit"], unit) or fnmatchcase(m.get("doc_id") or "", unit)):
            continue
        out.append(m)
    return out

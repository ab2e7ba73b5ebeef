"""The request log and the feedback inbox: append-only JSON-lines segments under `serve/` in the workspace, one
writer per process and segment, rotated into the versioned `requests` dataset (records, manifest with a fate per
line, stats) so that the log has the same provenance as the documents.

A request record: request_id, at (UTC ISO time), question (after redaction), pii (counts), k, filters, sources
[{doc_id, source_uri, title, section, score}], support (cosine of the question and the closest passage), answer
(null when the request was refused), not_found, blocked, status (HTTP code), model, index_version, latency_ms,
cached, guardrails [{check, action, detail}].

A request record also names its endpoint and its client ("key:<id>" for an API key, "ip:<keyed hash>" when
anonymous) and role; a refused request has no answer.

A feedback record: feedback_id, request_id, at, rating (up | down), correction, comment (both redacted, control
characters removed), client, counted (whether the monitor counts it) and replaces (the id of the same client's
earlier vote on the request, which this one replaces)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.core.workspace import (
    Workspace,
    atomic_write_json,
    new_run_id,
    pid_alive,
    publish_dir,
    read_json,
    utc_now,
    write_jsonl,
    write_pointer,
)
from tasks.ingest.publish import count_fates

REQUESTS = "requests"
FEEDBACK = "feedback"


def log_dir(ws: Workspace, kind: str) -> Path:
    """`serve/requests/` or `serve/feedback/`: `segments/` being written, `rotated/` once published."""
    return ws.root / "serve" / kind


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SegmentWriter:
    """Appends one JSON line per record to this process's current segment; thread-safe. A segment is closed after
    `max_records` lines (the next record opens a new one), so rotation never touches a file being written."""

    def __init__(self, ws: Workspace, kind: str, max_records: int = 1000) -> None:
        self.dir = log_dir(ws, kind) / "segments"
        self.max_records = max_records
        self._lock = threading.Lock()
        self._fh: Any = None
        self._count = 0
        self.path: Path | None = None

    def _open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"{new_run_id()}-{os.getpid()}.jsonl"
        self._fh = self.path.open("a", encoding="utf-8")
        self._count = 0

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            if self._fh is None:
                self._open()
            self._fh.write(line)
            self._fh.flush()  # readers (feedback lookups, the monitor) see the line at once
            self._count += 1
            if self._count >= self.max_records:
                self._close()

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            if self.path is not None:  # `.done` marks the segment closed: rotation may take it
                self.path.rename(self.path.with_suffix(".done.jsonl"))

    def close(self) -> None:
        with self._lock:
            self._close()


def read_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, record or None when the line is not a JSON object, raw line) for every non-empty line; a
    torn last line (a process killed while writing) reads as None."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = None
            yield n, rec if isinstance(rec, dict) else None, line


def _all_files(ws: Workspace, kind: str) -> list[Path]:
    """Rotated segments (oldest first), then the segments still in `segments/`."""
    base = log_dir(ws, kind)
    rotated = sorted((base / "rotated").glob("*.jsonl")) if (base / "rotated").is_dir() else []
    live = sorted((base / "segments").glob("*.jsonl")) if (base / "segments").is_dir() else []
    return rotated + live


def read_records(ws: Workspace, kind: str, since: datetime | None = None, until: datetime | None = None,
                 ) -> list[dict[str, Any]]:
    """Every valid record of the log whose `at` lies in [since, until), oldest first."""
    out = []
    for path in _all_files(ws, kind):
        for _, rec, _ in read_lines(path):
            if rec is None or "at" not in rec:
                continue
            try:
                at = parse_time(str(rec["at"]))
            except ValueError:
                continue
            if (since is None or at >= since) and (until is None or at < until):
                out.append((at, rec))
    return [rec for _, rec in sorted(out, key=lambda x: x[0])]


def find_request(ws: Workspace, request_id: str) -> dict[str, Any] | None:
    """The logged request with this id (newest segments searched first), or None."""
    needle = json.dumps(request_id)
    for path in reversed(_all_files(ws, REQUESTS)):
        for _, rec, raw in read_lines(path):
            if needle in raw and rec is not None and rec.get("request_id") == request_id:
                return rec
    return None


def find_feedback(ws: Workspace, request_id: str, client: str) -> dict[str, Any] | None:
    """The latest vote of `client` on the request (the inbox searched newest segment first), or None."""
    needle = json.dumps(request_id)
    for path in reversed(_all_files(ws, FEEDBACK)):
        found = [rec for _, rec, raw in read_lines(path) if needle in raw and rec is not None
                 and rec.get("request_id") == request_id and rec.get("client") == client and rec.get("feedback_id")]
        if found:
            return found[-1]
    return None


def owner_alive(path: Path) -> bool:
    """Whether the process named at the end of a file name (`<run id>-<pid>[.jsonl]`) still runs."""
    try:
        pid = int(path.name.split(".")[0].rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return False
    return pid_alive(pid)


def rotate(ws: Workspace, kind: str = REQUESTS) -> dict[str, Any] | None:
    """Publish the closed segments as a new version of the `requests` (or `feedback`) dataset: records.parquet,
    manifest.jsonl (one fate per line: accepted, duplicate request id, or quarantined torn line) and stats.json;
    the segments move to `rotated/` after the version is in place, so a run killed half way publishes the same
    version again and moves the rest. Returns the version's summary, or None when no segment is closed."""
    import pandas as pd

    base = log_dir(ws, kind)
    dataset = ws.dataset_dir(kind)
    (base / "rotated").mkdir(parents=True, exist_ok=True)
    for stats_path in dataset.glob("*/stats.json") if dataset.is_dir() else []:  # a rotation killed while moving
        for name in (read_json(stats_path, default={}) or {}).get("segments", []):
            if (base / "segments" / name).exists():
                (base / "segments" / name).rename(base / "rotated" / name)
    for path in (base / "segments").glob("*.jsonl") if (base / "segments").is_dir() else []:
        if not path.name.endswith(".done.jsonl") and not owner_alive(path):  # its server was stopped or killed
            path.rename(path.with_suffix(".done.jsonl"))
    done = sorted((base / "segments").glob("*.done.jsonl")) if (base / "segments").is_dir() else []
    if not done:
        return None
    key = "request_id" if kind == REQUESTS else "feedback_id"
    seen: set[str] = set()
    for path in sorted((base / "rotated").glob("*.jsonl")) if (base / "rotated").is_dir() else []:
        seen.update(rec.get(key) for _, rec, _ in read_lines(path) if rec)
    records, manifest = [], []
    for path in done:
        for n, rec, _ in read_lines(path):
            unit = f"{path.name}#line-{n}"
            if rec is None or not rec.get(key):
                manifest.append({"unit": unit, "fate": "quarantined", "reason": f"json: not a {kind} record "
                                 "(a torn or edited line)", "doc_id": None, "stage": "rotate", "source_uri": ""})
            elif rec[key] in seen:
                manifest.append({"unit": unit, "fate": "duplicate", "reason": f"duplicate_id: {key} "
                                 f"{rec[key]} was logged before", "doc_id": rec[key], "stage": "rotate",
                                 "source_uri": ""})
            else:
                seen.add(rec[key])
                records.append(rec)
                manifest.append({"unit": unit, "fate": "accepted", "reason": "ok", "doc_id": rec[key],
                                 "stage": "rotate", "source_uri": ""})
    version = hashlib.sha256("\n".join(p.name for p in done).encode()).hexdigest()[:16]
    final = dataset / version
    if not (final / "manifest.jsonl").exists():
        staging = dataset / f".staging-{new_run_id()}"
        staging.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame([{k: (json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, (dict, list))
                                   else v) for k, v in r.items()} for r in records])
        frame.to_parquet(staging / "records.parquet", index=False)
        write_jsonl(staging / "manifest.jsonl", manifest)
        times = sorted(str(r.get("at")) for r in records)
        atomic_write_json(staging / "stats.json", {"counts": count_fates(manifest), "segments": [p.name for p in done],
                                                   "first": times[0] if times else None,
                                                   "last": times[-1] if times else None, "created_at": utc_now()})
        publish_dir(staging, final)
    write_pointer(dataset / "latest", version)
    for p in done:
        p.rename(base / "rotated" / p.name)
    stats = read_json(final / "stats.json", default={}) or {}
    return {"dataset": kind, "version": version, "path": str(final), **stats}

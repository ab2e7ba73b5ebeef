"""Document records and per-unit fates: the shapes every data stage reads and writes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tasks.core.workspace import read_jsonl, write_jsonl

FateName = Literal["accepted", "duplicate", "filtered", "quarantined"]
FATES: tuple[FateName, ...] = ("accepted", "duplicate", "filtered", "quarantined")

# Columns of a document record, in order. `metadata` is stored as a JSON string so that records with
# different metadata keys share one parquet schema; `raw_hash` fingerprints the unit as collected.
RECORD_COLUMNS = (
    "doc_id", "unit", "source_uri", "title", "text", "metadata", "content_hash", "raw_hash", "format",
    "collected_at",
)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Fate:
    """What happened to one input unit (a file, a URL, or one record inside a file)."""

    unit: str
    fate: FateName
    reason: str
    source_uri: str = ""
    doc_id: str | None = None
    stage: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def manifest_line(self) -> dict[str, Any]:
        return {
            "unit": self.unit, "source_uri": self.source_uri, "doc_id": self.doc_id, "fate": self.fate,
            "reason": self.reason, "stage": self.stage,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fate:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def reason_code(reason: str) -> str:
    """The stable part of a reason (`decode: ...` -> `decode`), used to count top reasons."""
    return reason.split(":", 1)[0].strip()


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Write records to parquet (metadata as JSON), via a temporary file and a rename."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, list[Any]] = {c: [] for c in RECORD_COLUMNS}
    for r in records:
        for c in RECORD_COLUMNS:
            v = r.get(c)
            if c == "metadata":
                v = json.dumps(v or {}, ensure_ascii=False, sort_keys=True, default=str)
            cols[c].append(v)
    table = pa.table({c: pa.array(cols[c], type=pa.string()) for c in RECORD_COLUMNS})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)


def read_records(path: Path) -> list[dict[str, Any]]:
    """Read records written by `write_records` (metadata decoded back into a dict)."""
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    for r in rows:
        r["metadata"] = json.loads(r["metadata"]) if r.get("metadata") else {}
    return rows


def write_fates(path: Path, fates: list[Fate]) -> None:
    write_jsonl(path, [f.to_dict() for f in fates])


def read_fates(path: Path) -> list[Fate]:
    return [Fate.from_dict(d) for d in read_jsonl(path)] if path.exists() else []

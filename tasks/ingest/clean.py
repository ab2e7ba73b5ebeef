"""clean stage: run the filters over every record (in worker processes when many), then deduplicate."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.records import Fate, read_records, write_fates, write_records
from tasks.core.workspace import atomic_write_json
from tasks.ingest.config import CleanConfig
from tasks.ingest.dedup import NearDuplicateIndex, other_values, template_key
from tasks.ingest.filters import PROFILE_DEFAULTS, Cleaned, clean_batch, resolve_rules

log = logging.getLogger("ragtune.clean")
Progress = Callable[[int, int], None]


def _workers(cfg: CleanConfig, n: int) -> int:
    if mp.current_process().daemon:  # inside a Dask or Ray worker: children are not allowed, clean in-process
        return 1
    if cfg.workers:
        return cfg.workers
    return min(os.cpu_count() or 1, 8) if n >= 4000 else 1


def clean_all(records: list[dict[str, Any]], cfg: CleanConfig, progress: Progress | None = None) -> Iterator[Cleaned]:
    """`clean_document` over every record, in order, in worker processes when there are many.

    A generator: the caller deduplicates each batch while the workers clean the next ones."""
    workers = _workers(cfg, len(records))
    size = 500
    batches = [records[i:i + size] for i in range(0, len(records), size)]
    cfg_json = cfg.model_dump_json()
    done = 0
    if workers <= 1:
        results: Iterator[list[Cleaned]] = (clean_batch(b, cfg_json) for b in batches)
        for res in results:
            yield from res
            done += len(res)
            if progress:
                progress(done, len(records))
        return

    # spawn, not fork: the parent runs Prefect's threads and event loop, which fork would copy mid-flight
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        for res in pool.map(clean_batch, batches, [cfg_json] * len(batches)):
            yield from res
            done += len(res)
            if progress:
                progress(done, len(records))


# --- the stage ---------------------------------------------------------------------------------


@dataclass
class CleanResult:
    records_path: str
    fates_path: str
    stats_path: str
    kept: int
    dropped: int


def clean_records(in_path: Path, cfg: CleanConfig, out_dir: Path, progress: Progress | None = None) -> CleanResult:
    """Clean the collected records, drop filtered and duplicate ones, and write what remains."""
    records = sorted(read_records(Path(in_path)), key=lambda r: r["unit"])
    results = clean_all(records, cfg, progress)
    fates: list[Fate] = []
    kept: list[dict[str, Any]] = []
    pii_total: Counter[str] = Counter()
    profiles: Counter[str] = Counter()
    by_hash: dict[str, str] = {}
    near = NearDuplicateIndex(cfg.near_dedup_threshold, cfg.minhash_num_perm) if cfg.near_dedup else None
    fact_aware = {p: resolve_rules(cfg, p).keep_when_facts_differ for p in PROFILE_DEFAULTS}
    facts: dict[str, Any] = {}  # kept document -> its text, then its template key once a check needs it
    kept_by_pattern = 0
    for c in results:
        r = c.record
        pii_total.update(c.pii)
        profiles[c.profile] += 1
        if c.reason:
            fates.append(Fate(r["unit"], "filtered", c.reason, r["source_uri"], r["doc_id"], "clean"))
            continue
        if cfg.exact_dedup:
            first = by_hash.setdefault(r["content_hash"], r["doc_id"])
            if first != r["doc_id"]:
                reason = f"exact_duplicate: same text as {first}"
                fates.append(Fate(r["unit"], "duplicate", reason, r["source_uri"], r["doc_id"], "clean"))
                continue
        if near is not None:
            match = near_duplicate_of(near, r, c.signature, facts if fact_aware[c.profile] else None)
            if match is not None:
                reason = f"near_duplicate: {match[1]:.2f} similar to {match[0]}"
                fates.append(Fate(r["unit"], "duplicate", reason, r["source_uri"], r["doc_id"], "clean"))
                continue
        kept_by_pattern += "kept" in (r.get("metadata") or {})
        kept.append(r)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_records(out_dir / "records.parquet", kept)
    write_fates(out_dir / "fates.jsonl", fates)
    atomic_write_json(out_dir / "stats.json", {"pii_redactions": dict(sorted(pii_total.items())),
                                               "profiles": dict(sorted(profiles.items())),
                                               "kept_by_pattern": kept_by_pattern})
    log.info("cleaned %d records (%s): %d kept, %d dropped, PII redacted %s", len(records),
             ", ".join(f"{k} profile {v}" for k, v in sorted(profiles.items())), len(kept), len(fates),
             dict(pii_total) or "none")
    return CleanResult(str(out_dir / "records.parquet"), str(out_dir / "fates.jsonl"),
                       str(out_dir / "stats.json"), len(kept), len(fates))


MAX_FACT_CHECKS = 16  # a same-facts copy is among the most similar candidates; templates can have thousands


def near_duplicate_of(near: Any, rec: dict[str, Any], sig: Any, facts: dict[str, Any] | None) -> tuple[str, float] | None:
    """The kept document `rec` nearly duplicates, or None after adding it to the index. With `facts`, a
    candidate with the same wording and other numbers where they align (a template filled with other values)
    does not count."""
    found = near.matches(sig)
    if facts is None:
        if found:
            return found[0]
        near.add(rec["doc_id"], sig)
        return None
    if found:
        mine = template_key(rec["text"])
        for key, sim in found[:MAX_FACT_CHECKS]:
            if isinstance(facts[key], str):  # keys are computed only for documents that meet a near copy
                facts[key] = template_key(facts[key])
            if not other_values(mine, facts[key]):
                return key, sim
    near.add(rec["doc_id"], sig)
    facts[rec["doc_id"]] = template_key(rec["text"]) if found else rec["text"]
    return None

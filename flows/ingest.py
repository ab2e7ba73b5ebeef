"""ingest flow: collect → clean → validate → publish a versioned document dataset."""

from __future__ import annotations

import hashlib
import shutil
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from tasks.clean import clean_records_task
from tasks.collect import collect_sources_task, commit_source_states, scan_sources_task
from tasks.config import IngestConfig
from tasks.publish import (
    build_stats,
    count_fates,
    find_published,
    manifest_lines,
    publish_dataset_task,
    reuse_published,
)
from tasks.records import read_fates, read_records
from tasks.report import publish_ingest_artifacts
from tasks.runners import flow_task_runner
from tasks.validate import QuarantineLimitExceeded, check_quarantine_policy, validate_records_task
from tasks.workspace import Workspace, new_run_id, read_json, write_jsonl

# the modules whose code decides what a dataset version holds: a change to a reader or a rule re-runs ingest
DATA_MODULES = ("collect", "readers", "filters", "content", "clean", "dedup", "pii", "validate", "publish",
                "records", "formats/__init__", "formats/text", "formats/office", "formats/mail")


@lru_cache(maxsize=1)
def _code_version() -> str:
    """The package version and a hash of the data stage's code, so an upgrade is not mistaken for a no-op."""
    try:
        version = metadata.version("ragtune")
    except metadata.PackageNotFoundError:
        version = "dev"
    h = hashlib.sha256(version.encode())
    tasks_dir = Path(__file__).resolve().parent.parent / "tasks"
    for name in DATA_MODULES:
        path = tasks_dir / f"{name}.py"
        h.update(path.read_bytes() if path.exists() else b"")
    return f"{version}+{h.hexdigest()[:12]}"


def run_fingerprint(config: IngestConfig, sources_fingerprint: str | None) -> str | None:
    """Same sources (by stat data), same config, same ragtune version: same fingerprint."""
    if not sources_fingerprint:
        return None
    blob = f"{sources_fingerprint}:{config.fingerprint()}:{_code_version()}".encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _prune_stale(ws: Workspace, dataset: str) -> None:
    """Staging folders left by a killed run (we hold the ingest lock, so none is live)."""
    for p in list(ws.runs.glob("ingest-*")) + list(ws.dataset_dir(dataset).glob(".staging-*")):
        shutil.rmtree(p, ignore_errors=True)


def _summary(run_id: str, version: str | None, counts: dict[str, int], stats: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "run_id": run_id, "dataset_version": version, "counts": counts,
        "changes": stats.get("changes", {}), "top_reasons": stats.get("top_reasons", []),
        "pii_redactions": stats.get("pii_redactions", {}), "quarantine_dir": stats.get("quarantine_dir"),
        "data_docs": stats.get("data_docs"), "warnings": stats.get("warnings", []),
        "profiles": stats.get("profiles", {}), **extra,
    }


@flow(name="ingest", description="Collect, clean and validate documents, then publish a dataset version.",
      task_runner=flow_task_runner())
def ingest_flow(config: IngestConfig = IngestConfig(), home: str | None = None) -> dict[str, Any]:  # noqa: B008
    """Publish a content-addressed dataset version; every input unit gets exactly one recorded fate."""
    logger = get_run_logger()
    ws = Workspace.from_env(home).ensure()
    with ws.lock("ingest"):
        _prune_stale(ws, config.dataset)
        run_id = new_run_id()
        fingerprint = run_fingerprint(config, scan_sources_task(config.collect))
        reused = find_published(ws, config.dataset, fingerprint)
        if reused:
            pub = reuse_published(ws, config.dataset, reused)
            stats = read_json(Path(pub.dataset_dir) / "stats.json", default={}) or {}
            stats["changes"] = {"counts": {"new": 0, "changed": 0, "unchanged": pub.counts.get("seen", 0), "deleted": 0}}
            summary = _summary(run_id, pub.dataset_version, pub.counts, stats, manifest=pub.manifest,
                               dataset_dir=pub.dataset_dir, reused=True)
            logger.info("sources and config unchanged: dataset version %s reused, nothing written", reused)
            publish_ingest_artifacts(summary)
            return summary

        stage = ws.runs / f"ingest-{run_id}"
        try:
            col = collect_sources_task(config.collect, str(ws.root), str(stage / "collect"))
            cln = clean_records_task(col.records_path, config.clean, str(stage / "clean"))
            val = validate_records_task(
                cln.records_path, config.validation, str(ws.root), run_id, str(stage / "validate"),
                config.clean.redact_pii, [col.fates_path],
            )
            fate_paths = [col.fates_path, cln.fates_path, val.fates_path]
            clean_stats = read_json(Path(cln.stats_path), default={}) or {}
            extra = {
                "changes": col.changes, "pii_redactions": clean_stats.get("pii_redactions", {}),
                "profiles": clean_stats.get("profiles", {}), "kept_by_pattern": clean_stats.get("kept_by_pattern", 0),
                "quarantine_dir": str(ws.quarantine / run_id) if val.quarantine_path else None,
                "data_docs": val.data_docs, "failed_checks": val.checks, "run_id": run_id,
            }
            try:
                fates = [f for p in fate_paths for f in read_fates(Path(p))]
                counts = count_fates(manifest_lines(read_records(Path(val.records_path)), fates))
                check_quarantine_policy(counts["seen"], counts["quarantined"], config.validation,
                                        val.table_failures, val.passed)
            except QuarantineLimitExceeded as exc:
                _record_rejected_run(ws, run_id, val.records_path, fate_paths, extra, str(exc))
                raise
            pub = publish_dataset_task(
                str(ws.root), config.dataset, run_id, val.records_path, fate_paths, extra,
                {"config": config.model_dump(mode="json"), "fingerprint": fingerprint}, fingerprint,
            )
            commit_source_states(ws, Path(col.state_path), pub.dataset_version)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        stats = read_json(Path(pub.dataset_dir) / "stats.json", default={}) or {}
        summary = _summary(run_id, pub.dataset_version, pub.counts, {**stats, **extra}, manifest=pub.manifest,
                           dataset_dir=pub.dataset_dir, reused=False)
        logger.info("dataset version %s: %s", pub.dataset_version, pub.counts)
        for line in summary["warnings"]:
            logger.warning(line)
        publish_ingest_artifacts(summary)
        return summary


def _record_rejected_run(ws: Workspace, run_id: str, records_path: str, fate_paths: list[str],
                         extra: dict[str, Any], reason: str) -> None:
    """A rejected run keeps its evidence under quarantine/<run>/: the manifest and stats, no dataset."""
    records = read_records(Path(records_path))
    fates = [f for p in fate_paths for f in read_fates(Path(p))]
    lines = manifest_lines(records, fates)
    qdir = ws.quarantine / run_id
    write_jsonl(qdir / "manifest.jsonl", lines)
    stats = build_stats(records, lines, {**extra, "rejected": reason, "quarantine_dir": str(qdir)})
    from tasks.workspace import atomic_write_json

    atomic_write_json(qdir / "stats.json", stats)
    publish_ingest_artifacts(_summary(run_id, None, stats["counts"], stats, manifest=str(qdir / "manifest.jsonl"),
                                      rejected=reason))

"""ingest flow: collect → clean → validate → publish a versioned document dataset."""

from __future__ import annotations

import hashlib
import shutil
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import progress_reporter, publish_ingest_artifacts
from flows.runners import flow_task_runner
from tasks.core.config import with_workspace
from tasks.core.provenance import code_digest
from tasks.core.records import read_fates, read_records
from tasks.core.workspace import (
    PROJECT_ROOT,
    Workspace,
    atomic_write_json,
    new_run_id,
    read_json,
    write_jsonl,
)
from tasks.ingest.clean import CleanResult, clean_records
from tasks.ingest.collect import (
    CollectResult,
    collect_sources,
    commit_source_states,
    resolve_sources,
    scan_sources,
)
from tasks.ingest.config import CleanConfig, CollectConfig, IngestConfig, ValidateConfig
from tasks.ingest.publish import (
    PublishResult,
    build_stats,
    count_fates,
    find_published,
    manifest_lines,
    publish_dataset,
    reuse_published,
)
from tasks.ingest.validate import (
    QuarantineLimitExceeded,
    ValidateResult,
    check_quarantine_policy,
    validate_records,
)

# the code that decides what a dataset version holds: the whole ingest stage and the record shapes, so a change to
# a reader, a rule or a format re-runs ingest instead of reusing a dataset built by the old code
DATA_CODE = (PROJECT_ROOT / "tasks" / "ingest", PROJECT_ROOT / "tasks" / "core" / "records.py")


@lru_cache(maxsize=1)
def _code_version() -> str:
    """The package version and a hash of the data stage's code, so an upgrade is not mistaken for a no-op."""
    try:
        version = metadata.version("ragtune")
    except metadata.PackageNotFoundError:
        version = "dev"
    return f"{version}+{code_digest(*DATA_CODE)}"


@task(name="scan_sources", cache_policy=NO_CACHE)
def scan_sources_task(config: CollectConfig) -> str | None:
    """Fingerprint of the local sources' stat data and the config (None when a source is remote)."""
    return scan_sources(resolve_sources(config.sources), config)[1]


@task(name="collect_sources", cache_policy=NO_CACHE)
def collect_sources_task(config: CollectConfig, home: str, out_dir: str) -> CollectResult:
    return collect_sources(config, Workspace(Path(home)), Path(out_dir), progress_reporter("collect: files read"))


@task(name="clean_records", cache_policy=NO_CACHE)
def clean_records_task(in_path: str, config: CleanConfig, out_dir: str) -> CleanResult:
    return clean_records(Path(in_path), config, Path(out_dir), progress_reporter("clean: documents cleaned"))


@task(name="validate_records", cache_policy=NO_CACHE)
def validate_records_task(in_path: str, config: ValidateConfig, home: str, run_id: str, out_dir: str,
                          check_pii: bool, earlier_fates: list[str]) -> ValidateResult:
    return validate_records(Path(in_path), config, Workspace(Path(home)), run_id, Path(out_dir), check_pii,
                            [Path(p) for p in earlier_fates])


@task(name="publish_dataset", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def publish_dataset_task(home: str, dataset: str, run_id: str, records_path: str, fate_paths: list[str],
                         extra_stats: dict[str, Any], meta: dict[str, Any], fingerprint: str | None) -> PublishResult:
    """Idempotent (content-addressed, rename-last), so a retry after an I/O error is safe."""
    return publish_dataset(Workspace(Path(home)), dataset, run_id, Path(records_path), [Path(p) for p in fate_paths],
                           extra_stats, meta, fingerprint)


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
    config = with_workspace(ws, "ingest", config)
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
    atomic_write_json(qdir / "stats.json", stats)
    publish_ingest_artifacts(_summary(run_id, None, stats["counts"], stats, manifest=str(qdir / "manifest.jsonl"),
                                      rejected=reason))


def ingest_output(summary: dict[str, Any]) -> dict[str, Any]:
    """What `ragtune ingest` reports of a run: the version, counts, changes, reasons, paths and warnings."""
    return {
        "dataset_version": summary["dataset_version"], "counts": summary["counts"],
        "manifest": summary.get("manifest"), "quarantine_dir": summary.get("quarantine_dir"),
        "data_docs": summary.get("data_docs"), "changes": summary.get("changes", {}).get("counts", {}),
        "reused": summary.get("reused", False), "run_id": summary.get("run_id"),
        "dataset_dir": summary.get("dataset_dir"), "top_reasons": summary.get("top_reasons", []),
        "pii_redactions": summary.get("pii_redactions", {}), "profiles": summary.get("profiles", {}),
        "warnings": summary.get("warnings", []),
    }

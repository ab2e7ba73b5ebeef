"""Prefect artifacts for runs: progress bars, markdown summaries and tables (no document text)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import FlowRunContext, TaskRunContext

from tasks.evaluate.report import evaluation_markdown
from tasks.index.verify import describe_check

log = logging.getLogger("ragtune.report")


def in_prefect_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def progress_reporter(description: str, min_interval_s: float = 1.0) -> Callable[[int, int], None]:
    """A `(done, total)` callback that keeps a Prefect progress artifact current (at most once a second)."""
    state: dict[str, Any] = {"id": None, "last": 0.0}

    def report(done: int, total: int) -> None:
        pct = 100.0 * done / total if total else 100.0
        now = time.monotonic()
        if state["id"] is not None and done < total and now - state["last"] < min_interval_s:
            return
        state["last"] = now
        if not in_prefect_run():
            log.debug("%s: %d/%d", description, done, total)
            return

        try:
            if state["id"] is None:
                state["id"] = create_progress_artifact(progress=pct, description=description)
            else:
                update_progress_artifact(artifact_id=state["id"], progress=pct)
        except Exception as exc:  # progress is a courtesy: never fail a stage because the API hiccuped
            log.debug("progress artifact update failed: %s", exc)

    return report


def ingest_markdown(summary: dict[str, Any]) -> str:
    counts = summary.get("counts", {})
    changes = summary.get("changes", {}).get("counts", {})
    lines = [
        f"# Ingest {'(unchanged: reused)' if summary.get('reused') else ''}".rstrip(),
        "",
        f"**Dataset version:** `{summary.get('dataset_version')}`  ",
        f"**Run:** `{summary.get('run_id')}`",
        "",
        "| seen | accepted | duplicate | filtered | quarantined |",
        "|---:|---:|---:|---:|---:|",
        "| " + " | ".join(str(counts.get(k, 0)) for k in ("seen", "accepted", "duplicate", "filtered", "quarantined")) + " |",
        "",
    ]
    if changes:
        lines += ["**Changes since the last run:** " + ", ".join(f"{k} {v}" for k, v in changes.items()), ""]
    warnings = summary.get("warnings") or []
    if warnings:
        lines += ["## ⚠ Content filtered", ""] + [f"> **{w}**  " if w.startswith("WARNING") else f"> {w}  "
                                                 for w in warnings] + [""]
    if summary.get("profiles"):
        lines += ["**Cleaning profiles:** " + ", ".join(f"{k} {v}" for k, v in summary["profiles"].items()), ""]
    reasons = summary.get("top_reasons") or []
    if reasons:
        lines += ["## Top drop reasons", "", "| fate | reason | count |", "|---|---|---:|"]
        lines += [f"| {r['fate']} | {r['reason']} | {r['count']} |" for r in reasons[:10]]
        lines.append("")
    if summary.get("pii_redactions"):
        lines += ["**PII redacted:** " + ", ".join(f"{k} {v}" for k, v in summary["pii_redactions"].items()), ""]
    if summary.get("data_docs"):
        lines += [f"**Data Docs:** `{summary['data_docs']}`  "]
    if summary.get("quarantine_dir"):
        lines += [f"**Quarantine:** `{summary['quarantine_dir']}`  "]
    lines += [f"**Manifest:** `{summary.get('manifest')}`"]
    return "\n".join(lines)


def publish_ingest_artifacts(summary: dict[str, Any]) -> None:
    """A markdown summary and a table of fates and reasons, attached to the current flow run."""
    if not in_prefect_run():
        return

    create_markdown_artifact(markdown=ingest_markdown(summary), key="ingest-summary",
                             description="Counts, changes and top drop reasons of the ingest run")
    rows = [{"fate": k, "count": v} for k, v in summary.get("counts", {}).items()]
    rows += [{"fate": f"{r['fate']}: {r['reason']}", "count": r["count"]} for r in summary.get("top_reasons") or []]
    create_table_artifact(table=rows, key="ingest-fates", description="Fates of the input units")


def publish_index_artifacts(summary: dict[str, Any]) -> None:
    """Markdown summary of an index build or update (collection, counts, changes, timings, retrieval check)."""
    if not in_prefect_run():
        return

    changes = summary.get("changes") or {}
    md = [
        f"# Index `{summary['name']}` → `{summary['collection']}` ({summary.get('mode', 'full')})", "",
        f"**Dataset version:** `{summary['dataset_version']}`  **Index version:** `{summary['index_version']}`  ",
        f"**Chunks / points:** {summary['chunks']} / {summary['points']}  ",
        f"**Previous:** `{summary.get('previous')}`", "",
        f"**Retrieval check:** {describe_check(summary.get('check') or {})}",
    ]
    if changes:
        md += ["", "**Changes:** " + ", ".join(f"{k} {v}" for k, v in changes.items() if k != "from_dataset_version")]
    create_markdown_artifact(markdown="\n".join(md), key="index-summary", description="Index build summary")
    timings = summary.get("timings") or {}
    if timings:
        create_table_artifact(table=[{"step": k, "seconds": round(v, 2)} for k, v in timings.items()],
                              key="index-timings", description="Seconds per index step")


def training_reporter() -> Callable[[int, int, float | None, float | None], None]:
    """A `(step, max_steps, loss, eval_loss)` callback: a Prefect progress artifact for the steps, and a log
    line per evaluation."""
    progress = progress_reporter("train: optimizer steps")

    def report(step: int, max_steps: int, loss: float | None, eval_loss: float | None) -> None:
        progress(step, max_steps)
        if eval_loss is not None:
            log.info("step %d/%d: validation loss %.4f", step, max_steps, eval_loss)

    return report


def publish_train_artifacts(summary: dict[str, Any]) -> None:
    """Markdown summary of a training run and a table of its loss history."""
    if not in_prefect_run():
        return

    fmt = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
    md = [f"# Training run `{summary['run_id']}`{' (finished before)' if not summary.get('trained') else ''}", "",
          f"**Adapter:** `{summary['adapter_dir']}`  ", f"**Dataset version:** `{summary['dataset_version']}`  ",
          f"**Device:** {summary['device']}, {'4-bit NF4 (QLoRA)' if summary['quantized'] else 'LoRA, no quantisation'}",
          "", "| steps | train loss | validation loss |", "|---:|---:|---:|",
          f"| {summary['steps']} | {fmt(summary.get('train_loss'))} | {fmt(summary.get('eval_loss'))} |"]
    create_markdown_artifact(markdown="\n".join(md), key="train-summary", description="Training run summary")
    rows = [{"step": h["step"], "train_loss": h.get("loss"), "eval_loss": h.get("eval_loss")}
            for h in summary.get("history") or []]
    if rows:
        create_table_artifact(table=rows, key="train-loss-history", description="Loss per step")


def publish_evaluation_artifacts(result: dict[str, Any]) -> None:
    """Markdown summary (decision, metrics per system, rules) and a table of the comparisons with intervals."""
    if not in_prefect_run():
        return

    create_markdown_artifact(markdown=evaluation_markdown(result), key="evaluation-summary",
                             description="Evaluation and gate decision")
    rows = [{"reference": ref, "metric": m, "candidate": c.get("candidate"), "reference_value": c.get("reference"),
             "difference": c.get("diff"), "ci_low": c.get("ci_low"), "ci_high": c.get("ci_high")}
            for ref, comp in result["comparisons"].items() for m, c in comp.items()]
    create_table_artifact(table=rows, key="evaluation-comparisons",
                          description="Candidate minus reference, with paired bootstrap intervals")


def publish_policy_artifact(decision: dict[str, Any]) -> None:
    """The retraining policy's decision, its reasons and numbers, as markdown."""
    if not in_prefect_run():
        return

    lines = [f"# Retraining policy: {'retrain' if decision['retrain'] else 'no retraining'}", ""]
    lines += [f"- {r}" for r in decision["reasons"]]
    lines += ["", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in decision.get("numbers", {}).items()]
    create_markdown_artifact(markdown="\n".join(lines), key="retrain-decision", description="Retraining policy")


def publish_sweep_artifacts(sweep: dict[str, Any]) -> None:
    """The ranked table of a retrieval sweep and the best configuration."""
    if not in_prefect_run():
        return

    create_table_artifact(table=sweep["rows"], key="sweep-ranking",
                          description=f"Settings ranked by {sweep['metric']} on the labelled queries")
    b = sweep["best"]
    create_markdown_artifact(key="sweep-best", description="Best retrieval configuration", markdown=(
        f"# Best: chunk {b['chunk_size']} / overlap {b['chunk_overlap']}, {b['mode']}\n\n"
        f"{sweep['metric']} {b[sweep['metric']]:.4f} over {b['queries']} labelled queries on dataset "
        f"`{sweep['dataset_version']}` ({b['chunks']} chunks).\n\n"
        + (f"Applied to `{sweep['applied']}`." if sweep.get("applied") else "Not applied (run with apply=true).")))

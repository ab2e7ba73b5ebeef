"""monitor flow: rotate the request log, compute the last window's figures, publish them, and emit
`ragtune.quality.degraded` when a rule is broken (the `retrain-on-quality-degraded` automation reacts to it)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.events import emit
from tasks.core.config import with_workspace
from tasks.core.workspace import Workspace
from tasks.serve.config import MonitorConfig
from tasks.serve.monitor import EVENT, table_rows
from tasks.serve.monitor import compute_window as compute
from tasks.serve.requestlog import FEEDBACK, REQUESTS, rotate


@task(name="rotate_logs", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def rotate_logs(home: str) -> dict[str, str | None]:
    """Publish closed request and feedback segments (idempotent: a rerun publishes the same versions)."""
    ws = Workspace(Path(home))
    return {kind: (res or {}).get("version") for kind in (REQUESTS, FEEDBACK) for res in [rotate(ws, kind)]}


@task(name="compute_window", cache_policy=NO_CACHE)
def compute_window(home: str, config: MonitorConfig, end: datetime) -> dict[str, Any]:
    return compute(Workspace(Path(home)), config, end)


@task(name="publish_monitor_artifacts", cache_policy=NO_CACHE)
def publish_monitor_artifacts(result: dict[str, Any], config: MonitorConfig) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(markdown=result["markdown"], key="ragtune-monitor",
                             description="Monitoring window: figures, broken rules, support drift")
    create_table_artifact(table=table_rows(result["figures"], config.rules), key="ragtune-monitor-figures",
                          description="Monitoring figures and their limits")


@task(name="emit_quality_degraded", cache_policy=NO_CACHE)
def emit_quality_degraded(home: str, result: dict[str, Any]) -> bool:
    return emit(EVENT, serving_resource(Path(home)), {
        "reasons": result["reasons"], "figures": result["figures"], "window_start": result["window_start"],
        "window_end": result["window_end"], "report": result["report"]})


def serving_resource(root: Path) -> str:
    """A stable resource id per workspace (`ragtune.serving.<workspace folder name>`)."""
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in root.resolve().name).strip("-") or "default"
    return f"ragtune.serving.{name}"


@flow(name="monitor", description="Figures of the last window of requests and feedback; emits "
      "ragtune.quality.degraded when a monitoring rule is broken.")
def monitor_flow(config: MonitorConfig = MonitorConfig(), home: str | None = None) -> dict[str, Any]:  # noqa: B008
    """{degraded, reasons, figures, event (whether the event was emitted), report (the window's JSON)}."""
    logger = get_run_logger()
    ws = Workspace.from_env(home).ensure()
    config = with_workspace(ws, "monitor", config)
    rotated = rotate_logs(str(ws.root))
    result = compute_window(str(ws.root), config, datetime.now(UTC))
    publish_monitor_artifacts(result, config)
    f = result["figures"]
    logger.info("monitor %s..%s: %d requests, %d answered, %s", result["window_start"], result["window_end"],
                f["requests"], f["answered"], "; ".join(result["reasons"]) or "no rule broken")
    emitted = bool(result["reasons"]) and config.emit_event and emit_quality_degraded(str(ws.root), result)
    return {"degraded": result["degraded"], "reasons": result["reasons"], "figures": f, "event": emitted,
            "report": result["report"], "chart": result["chart"], "window_start": result["window_start"],
            "window_end": result["window_end"], "rotated": rotated}

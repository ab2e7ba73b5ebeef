"""`ragtune demo | watch | sweep | monitor`: the orchestration half of the command line."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from flows.cli import render
from flows.cli.common import stage_config
from tasks.index.config import SweepConfig
from tasks.serve.config import MonitorConfig


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    from flows.demo import run_demo  # every stage of the pipeline: imported when the command runs
    from tasks.core.records import read_records

    out = run_demo()
    if not args.json:
        render.print_demo(out, read_records(Path(out["ingest"]["dataset_dir"]) / "records.parquet"))
    return out


def cmd_watch(args: argparse.Namespace) -> dict[str, Any]:
    from flows.events import emit, require_api
    from tasks.ingest.watch import EVENT, corpus_resource, watch

    root = Path(args.path)
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    url = require_api()
    print(f"watching {root.resolve()} -> {EVENT} ({corpus_resource(root)}) on {url}; Ctrl-C stops", file=sys.stderr)

    def show(payload: dict[str, Any]) -> None:
        print(f"{EVENT}: {len(payload['added'])} added, {len(payload['changed'])} changed, "
              f"{len(payload['deleted'])} deleted: {', '.join(payload['paths'][:5])}", file=sys.stderr)

    # Ctrl-C or SIGTERM stops it cleanly. The handlers are installed explicitly: a process started in the background
    # by a non-interactive shell inherits SIGINT as ignored, and a service manager stops with SIGTERM.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sent = watch(root, emit, args.debounce_ms, on_batch=show, stop_event=stop)
    return {"path": str(root.resolve()), "events": sent}


def _ints(text: str | None) -> list[int] | None:
    return [int(x) for x in text.split(",") if x.strip()] if text else None


def cmd_sweep(args: argparse.Namespace) -> dict[str, Any]:
    from flows.sweep import sweep_flow

    cfg = stage_config(args, "sweep", SweepConfig, chunk_sizes=_ints(args.chunk_sizes),
                       chunk_overlaps=_ints(args.chunk_overlaps), queries=args.queries,
                       modes=args.modes.split(",") if args.modes else None)
    out = sweep_flow(cfg, apply=args.apply)
    if not args.json:
        render.print_sweep(out)
    return {k: out[k] for k in ("sweep_id", "dataset_version", "metric", "best", "applied", "rows")}


def cmd_monitor(args: argparse.Namespace) -> dict[str, Any]:
    from flows.monitor import monitor_flow

    cfg = stage_config(args, "monitor", MonitorConfig, window_hours=args.window_hours,
                       emit_event=False if args.no_event else None)
    out = monitor_flow(cfg)
    if not args.json:
        render.print_monitor(out)
    return {k: out[k] for k in ("degraded", "reasons", "figures", "event", "report", "chart", "window_start",
                                "window_end")}


def add_demo(add: Any) -> None:
    add("demo", cmd_demo, "the whole loop on the bundled sample: ingest, index, train, evaluate, promote")


def add_commands(add: Any) -> None:
    w = add("watch", cmd_watch, "watch a source folder and emit ragtune.corpus.changed to the Prefect server")
    w.add_argument("path", help="the folder to watch (one of the ingest sources)")
    w.add_argument("--debounce-ms", type=int, default=1600, help="changes within this window make one event")
    sw = add("sweep", cmd_sweep, "score chunk sizes, overlaps and search modes on labelled queries; --apply the best")
    sw.add_argument("--config", metavar="FILE", help="YAML with SweepConfig fields (or a `sweep:` section)")
    sw.add_argument("--chunk-sizes", metavar="N,N", help="e.g. 128,192,256")
    sw.add_argument("--chunk-overlaps", metavar="N,N", help="e.g. 16,32")
    sw.add_argument("--modes", metavar="M,M", help="dense,sparse,hybrid")
    sw.add_argument("--queries", metavar="FILE", help="labelled queries JSONL (question + doc_id)")
    sw.add_argument("--apply", action="store_true", help="write the best setting into the workspace's config.yaml")
    mo = add("monitor", cmd_monitor, "figures of the last window of requests and feedback; emits "
             "ragtune.quality.degraded when a rule is broken")
    mo.add_argument("--config", metavar="FILE", help="YAML with MonitorConfig fields (or a `monitor:` section)")
    mo.add_argument("--window-hours", type=float, metavar="H", help="window length ending now (default 1)")
    mo.add_argument("--no-event", action="store_true", help="report only: do not emit ragtune.quality.degraded")

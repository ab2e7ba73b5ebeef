"""`ragtune watch | sweep | monitor`: the orchestration half of the command line (lazy imports)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any


def cmd_watch(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.watch import EVENT, corpus_resource, require_api, watch

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
    sent = watch(root, args.debounce_ms, on_batch=show, stop_event=stop)
    return {"path": str(root.resolve()), "events": sent}


def _ints(text: str | None) -> list[int] | None:
    return [int(x) for x in text.split(",") if x.strip()] if text else None


def cmd_sweep(args: argparse.Namespace) -> dict[str, Any]:
    from flows.sweep import sweep_flow
    from tasks.config import SweepConfig, load_yaml_config

    data = load_yaml_config(args.config)
    data = data.get("sweep", data) if isinstance(data.get("sweep"), dict) else data
    for key, value in (("chunk_sizes", _ints(args.chunk_sizes)), ("chunk_overlaps", _ints(args.chunk_overlaps)),
                       ("modes", args.modes.split(",") if args.modes else None), ("queries", args.queries)):
        if value is not None:
            data[key] = value
    out = sweep_flow(SweepConfig.model_validate(data), apply=args.apply)
    if not args.json:
        m = out["metric"]
        print(f"sweep {out['sweep_id']} on dataset {out['dataset_version']}, ranked by {m}:")
        print(f"  {'rank':>4} {'size':>5} {'overlap':>7} {'mode':<7} {'chunks':>6} {m:>9} {'recall@1':>9}")
        for r in out["rows"]:
            print(f"  {r['rank']:>4} {r['chunk_size']:>5} {r['chunk_overlap']:>7} {r['mode']:<7} {r['chunks']:>6} "
                  f"{r[m]:>9.4f} {r['recall@1']:>9.4f}")
        b = out["best"]
        print(f"best: chunk {b['chunk_size']}/{b['chunk_overlap']}, {b['mode']}"
              + (f"; applied to {out['applied']}" if out["applied"] else " (--apply makes it the index config)"))
    return {k: out[k] for k in ("sweep_id", "dataset_version", "metric", "best", "applied", "rows")}


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "unknown" if value is None else format(value, spec)


def cmd_monitor(args: argparse.Namespace) -> dict[str, Any]:
    from flows.monitor import monitor_flow
    from tasks.config import load_yaml_config
    from tasks.serving.config import MonitorConfig

    data = load_yaml_config(args.config)
    data = data.get("monitor", data) if isinstance(data.get("monitor"), dict) else data
    if args.window_hours is not None:
        data["window_hours"] = args.window_hours
    if args.no_event:
        data["emit_event"] = False
    out = monitor_flow(MonitorConfig.model_validate(data))
    if not args.json:
        f = out["figures"]
        print(f"monitor {out['window_start']} .. {out['window_end']}: {f['requests']} requests, "
              f"{f['answered']} answered, {f['ratings']} ratings")
        print(f"  thumbs-up {fmt(f['thumbs_up_rate'])}  not-found {fmt(f['not_found_rate'])}  "
              f"blocked {fmt(f['block_rate'])}  no-document {fmt(f['no_document_rate'])} "
              f"(support < {f['support_threshold']:.3f})")
        print(f"  latency p50 {fmt(f['latency_p50_ms'], '.0f')} ms  p95 {fmt(f['latency_p95_ms'], '.0f')} ms  "
              f"score PSI {fmt(f['score_psi'])}  KS {fmt(f['score_ks'])} (p={fmt(f['score_ks_pvalue'], '.2g')})")
        for r in out["reasons"]:
            print(f"  BROKEN: {r}")
        if out["degraded"]:
            print("  ragtune.quality.degraded " + ("emitted" if out["event"] else "not emitted"))
        else:
            print("  no rule broken")
        print(f"  report: {out['report']}")
    return {k: out[k] for k in ("degraded", "reasons", "figures", "event", "report", "chart", "window_start",
                                "window_end")}


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

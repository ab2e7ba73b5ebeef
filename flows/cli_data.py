"""`ragtune status | fates`: what the workspace holds, and what happened to every input (lazy imports)."""

from __future__ import annotations

import argparse
from typing import Any

from tasks.records import FATES


def cmd_status(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.publish import latest_version
    from tasks.workspace import Workspace, read_json

    ws = Workspace.from_env()
    version = latest_version(ws, args.dataset)
    stats = (read_json(ws.dataset_dir(args.dataset) / version / "stats.json", default={}) if version else {}) or {}
    dropped = [r for r in stats.get("top_reasons") or [] if r["fate"] != "accepted"]
    out = {"workspace": str(ws.root), "dataset": args.dataset, "dataset_version": version,
           "counts": stats.get("counts"), "profiles": stats.get("profiles", {}), "dropped": dropped,
           "warnings": stats.get("warnings", [])}
    if not args.json:
        print(f"workspace {out['workspace']}")
        print(f"  {args.dataset} dataset: {version or 'none yet (run `ragtune ingest`)'}")
        if out["counts"]:
            print("  " + ", ".join(f"{k} {v}" for k, v in out["counts"].items()))
        if out["profiles"]:
            print("  cleaning profiles: " + ", ".join(f"{k} {v}" for k, v in out["profiles"].items()))
        for r in dropped:
            print(f"  {r['fate']:<11} {r['count']:>4}  {r.get('example') or r['reason']}")
        for w in out["warnings"]:
            print(f"  {w}")
        if dropped:
            print("  `ragtune fates --fate filtered` lists every dropped input with its reason")
    return out


def cmd_fates(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.publish import manifest_path, select_fates
    from tasks.workspace import Workspace, read_jsonl

    ws = Workspace.from_env()
    path = manifest_path(ws, args.dataset, args.version, args.run)
    lines = read_jsonl(path)
    picked = select_fates(lines, args.fate, args.reason, args.unit)
    shown = picked[: args.limit] if args.limit else picked
    out = {"manifest": str(path), "total": len(lines), "matched": len(picked), "fates": shown}
    if not args.json:
        for m in shown:
            print(f"{m['fate']:<11} {m['unit']}\n            {m['reason']}")
        more = f" (first {len(shown)} shown; --limit 0 shows all)" if len(shown) < len(picked) else ""
        print(f"{len(picked)} of {len(lines)} inputs match{more}; manifest {path}")
        if args.fate in (None, "filtered") and any(m["fate"] == "filtered" for m in shown):
            print("rescue content filtered by a quality rule: `ragtune ingest --keep 'GLOB'` (or clean.keep in config)")
    return out


def add_commands(add: Any) -> None:
    st = add("status", cmd_status, "show the workspace's current dataset version, its counts and what was dropped")
    st.add_argument("--dataset", default="docs", help="dataset name (default docs)")
    f = add("fates", cmd_fates, "list inputs and their fates from a dataset manifest: find what was dropped and why")
    f.add_argument("--fate", choices=list(FATES), help="only this fate (e.g. filtered)")
    f.add_argument("--reason", metavar="R", help="only this reason code (e.g. placeholder) or reason text")
    f.add_argument("--unit", metavar="GLOB", help="only inputs whose unit or document id matches the glob")
    f.add_argument("--dataset", default="docs", help="dataset name (default docs)")
    f.add_argument("--version", help="a dataset version (default: the latest)")
    f.add_argument("--run", metavar="RUN_ID", help="the manifest of a rejected run, kept under quarantine/")
    f.add_argument("--limit", type=int, default=50, metavar="N", help="at most N lines (default 50; 0: all)")

"""`ragtune status | fates | feedback`: what the workspace holds, what happened to every input, and the review of
user feedback (lazy imports)."""

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


def _feedback_configs(args: argparse.Namespace, ws: Any) -> tuple[Any, Any]:
    """(FeedbackConfig, TrainConfig) from --config, else the workspace's config.yaml (`feedback:`, `train:`)."""
    from tasks.config import TrainConfig, load_yaml_config
    from tasks.serving.config import FeedbackConfig

    path = args.config or (ws.root / "config.yaml" if (ws.root / "config.yaml").is_file() else None)
    data = load_yaml_config(path)
    return (FeedbackConfig.model_validate(data.get("feedback") or {}),
            TrainConfig.model_validate(data.get("train") or {}))


def _show(items: list[dict[str, Any]]) -> None:
    for it in items:
        print(f"{it['status']:<11} {it['feedback_id']}  request {it['request_id']}  ({it['rating']})")
        if it.get("question"):
            print(f"            Q: {' '.join(str(it['question']).split())[:160]}")
        if it.get("answer"):
            print(f"            A: {' '.join(str(it['answer']).split())[:160]}")
        if it.get("reason"):
            print(f"            {it['reason']}")


def cmd_feedback_list(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.serving import feedback
    from tasks.workspace import Workspace

    ws = Workspace.from_env()
    fb_cfg, train_cfg = _feedback_configs(args, ws)

    def tokenizer() -> Any:  # the base model's tokenizer measures length; loaded only for new candidates
        from tasks.model import load_tokenizer, resolve_base_model

        return load_tokenizer(resolve_base_model(ws, train_cfg.base_model))

    res = feedback.triage(ws, fb_cfg, train_cfg.data, tokenizer_factory=tokenizer)
    items = feedback.list_items(ws, args.status)
    out = {"review": str(feedback.review_path(ws)), "new": len(res["new"]), "counts": res["counts"], "items": items}
    if not args.json:
        _show(items)
        print(f"{len(items)} items{f' ({args.status})' if args.status else ''}, {len(res['new'])} new; "
              + ", ".join(f"{k} {v}" for k, v in res["counts"].items()))
        if res["counts"]["pending"]:
            print("review: `ragtune feedback accept ID... | --all-pending`, `ragtune feedback reject ID... --reason R`")
    return out


def cmd_feedback_accept(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.serving import feedback
    from tasks.workspace import Workspace

    ws = Workspace.from_env()
    done = feedback.accept(ws, args.ids, all_pending=args.all_pending, note=args.note)
    out = {"accepted": [it["feedback_id"] for it in done], "accepted_file": str(feedback.accepted_path(ws)),
           "counts": feedback.counts(feedback.read_items(ws))}
    if not args.json:
        print(f"accepted {len(done)} item(s); {out['counts']['accepted']} pairs join the next SFT dataset "
              f"({out['accepted_file']})")
    return out


def cmd_feedback_reject(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.serving import feedback
    from tasks.workspace import Workspace

    ws = Workspace.from_env()
    done = feedback.reject(ws, args.ids, args.reason)
    out = {"rejected": [it["feedback_id"] for it in done], "counts": feedback.counts(feedback.read_items(ws))}
    if not args.json:
        print(f"rejected {len(done)} item(s): {args.reason}")
    return out


def add_feedback(add: Any) -> None:
    """`ragtune feedback list|accept|reject`: sub-commands under one parser; --json and -v work on either level."""
    fb = add("feedback", None, "review user feedback: votes and corrections that become Q/A pairs for training")
    fb.add_argument("--config", metavar="FILE", help="YAML with `feedback:` and `train:` sections (default: the "
                    "workspace's config.yaml)")
    sub = fb.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, fn: Any, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        # SUPPRESS: an option given before the action (`feedback --json list`) is not reset by this parser
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
        sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log to stderr")
        sp.set_defaults(func=fn)
        return sp

    ls = action("list", cmd_feedback_list, "triage new feedback, then list the review items")
    ls.add_argument("--status", choices=["pending", "accepted", "rejected", "duplicate", "quarantined"],
                    help="only items of this status")
    acc = action("accept", cmd_feedback_accept, "accept pending items: their pairs join the next SFT dataset")
    acc.add_argument("ids", nargs="*", metavar="ID", help="feedback ids (see `ragtune feedback list`)")
    acc.add_argument("--all-pending", action="store_true", help="accept every pending item")
    acc.add_argument("--note", help="a note kept with the accepted items")
    rej = action("reject", cmd_feedback_reject, "reject items (an accepted pair leaves the training data)")
    rej.add_argument("ids", nargs="+", metavar="ID", help="feedback ids (see `ragtune feedback list`)")
    rej.add_argument("--reason", required=True, help="why (kept in the review file)")


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
    add_feedback(add)

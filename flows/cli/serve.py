"""`ragtune serve | keys | calibrate | ask | feedback`: answering people, who may call, and reviewing what they
send back."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from flows.cli import render
from flows.cli.common import review_actions, stage_config, workspace
from tasks.core.config import load_section
from tasks.serve.config import AskConfig, FeedbackConfig, ServeConfig
from tasks.train.config import TrainConfig


def serve_config(args: argparse.Namespace) -> ServeConfig:
    flags = {key: getattr(args, key, None) for key in ("host", "port", "workers", "max_new_tokens", "batch_window_ms",
                                                       "batch_max_wait_ms", "max_batch", "index_name")}
    auth = {"allow_anonymous": True} if getattr(args, "allow_anonymous", False) else None
    limits = {key: getattr(args, key, None) for key in ("ask_rate", "feedback_rate", "max_queue")}
    return stage_config(args, "serve", ServeConfig, **flags, cache=False if getattr(args, "no_cache", False) else None,
                        auth=auth, limits={k: v for k, v in limits.items() if v is not None} or None)


def cmd_serve(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.serve.access import check_exposure, is_loopback
    from tasks.serve.app import run  # the server stack: imported when the command runs
    from tasks.serve.keys import KeyRing

    cfg = serve_config(args)
    ws = workspace().ensure()
    ring = KeyRing.load(ws)
    check_exposure(cfg, ring)  # before the model loads: the reason comes at once
    access = ("API keys required" + (", anonymous clients allowed" if cfg.auth.allow_anonymous else "")
              if ring.active else "anonymous, loopback only" if is_loopback(cfg.host) else "anonymous (allowed)")
    print(f"ragtune serve: http://{cfg.host}:{cfg.port}/ (chat page), /v1/ask, /v1/feedback, /healthz, /readyz, "
          f"/metrics; {access}; workspace {ws.root}; Ctrl-C stops", file=sys.stderr)
    run(cfg, ws)
    return {"stopped": True}


def cmd_keys_create(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.serve.keys import create_key

    record, token = create_key(workspace().ensure(), args.role, args.name)
    if not args.json:
        print(f"API key {record['id']} ({record['name']}, role {record['role']}):\n  {token}\n"
              "shown once, only its hash is kept: send it as `Authorization: Bearer <key>`")
    return {"key": token, **record}


def cmd_keys_list(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.serve.keys import list_keys

    keys = list_keys(workspace())
    if not args.json:
        for k in keys:
            state = f"revoked {k['revoked_at']}" if k.get("revoked_at") else "active"
            print(f"{k['id']}  {k['role']:<8} {k['name']:<24} created {k['created_at']}  {state}")
        print(f"{sum(not k.get('revoked_at') for k in keys)} active of {len(keys)} keys")
    return {"keys": keys}


def cmd_keys_revoke(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.serve.keys import revoke_key

    record = revoke_key(workspace(), args.id)
    if not args.json:
        print(f"revoked {record['id']} ({record['name']}); a running server refuses it from its next request")
    return {"revoked": record}


def cmd_calibrate(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.serve.calibrate import calibrate

    out = calibrate(workspace(), serve_config(args))
    if not args.json:
        render.print_calibration(out)
    return {k: v for k, v in out.items() if k not in ("curve", "reference_scores", "off_topic_scores")}


def cmd_ask(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.serve.ask import ask

    cfg = stage_config(args, "ask", AskConfig, max_new_tokens=args.max_new_tokens, index_name=args.name,
                       cache=False if args.no_cache else None)
    # the server's checks, from the workspace's `serve:` section: one guardrail path for every way of asking
    guard = load_section("serve", ServeConfig, ws=workspace()).guardrails
    out = ask(workspace(), args.question, cfg, guard)
    if not args.json:
        render.print_answer(out)
    return out


def cmd_feedback_list(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.serve import feedback
    from tasks.train.model import load_tokenizer, resolve_base_model

    ws = workspace()
    fb_cfg = stage_config(args, "feedback", FeedbackConfig)
    train_cfg = stage_config(args, "train", TrainConfig)

    def tokenizer() -> Any:  # the base model's tokenizer measures length; loaded only for new candidates
        return load_tokenizer(resolve_base_model(ws, train_cfg.base_model))

    res = feedback.triage(ws, fb_cfg, train_cfg.data, tokenizer_factory=tokenizer)
    items = feedback.list_items(ws, args.status)
    out = {"review": str(feedback.review_path(ws)), "new": len(res["new"]), "counts": res["counts"], "items": items}
    if not args.json:
        render.print_review_items(items)
        print(f"{len(items)} items{f' ({args.status})' if args.status else ''}, {len(res['new'])} new; "
              + ", ".join(f"{k} {v}" for k, v in res["counts"].items()))
        if res["counts"]["pending"]:
            print("review: `ragtune feedback accept ID... | --all-pending`, `ragtune feedback reject ID... --reason R`")
    return out


def cmd_feedback_accept(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.serve import feedback

    ws = workspace()
    done = feedback.accept(ws, args.ids, all_pending=args.all_pending, note=args.note)
    out = {"accepted": [it["feedback_id"] for it in done], "accepted_file": str(feedback.accepted_path(ws)),
           "counts": feedback.counts(feedback.read_items(ws))}
    if not args.json:
        print(f"accepted {len(done)} item(s); {out['counts']['accepted']} pairs join the next SFT dataset "
              f"({out['accepted_file']})")
    return out


def cmd_feedback_reject(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.serve import feedback

    ws = workspace()
    done = feedback.reject(ws, args.ids, args.reason)
    out = {"rejected": [it["feedback_id"] for it in done], "counts": feedback.counts(feedback.read_items(ws))}
    if not args.json:
        print(f"rejected {len(done)} item(s): {args.reason}")
    return out


def add_commands(add: Any) -> None:
    s = add("serve", cmd_serve, "serve the champion and the served index over HTTP: /v1/ask, /v1/feedback, the chat "
            "page at /, /healthz, /readyz, /metrics; hot swaps on promotion and re-index")
    s.add_argument("--config", metavar="FILE", help="YAML with ServeConfig fields (or a `serve:` section)")
    s.add_argument("--host", help="interface (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default 8000)")
    s.add_argument("--workers", type=int, help="server processes, each with the model loaded (default 1)")
    s.add_argument("--max-new-tokens", type=int, metavar="N", help="answer length limit (default 96)")
    s.add_argument("--batch-window-ms", type=float, metavar="MS",
                   help="how long a question waits for others to share its generation batch (default 25)")
    s.add_argument("--batch-max-wait-ms", type=float, metavar="MS",
                   help="how long a batch waits, at most, for questions still being retrieved (default 250)")
    s.add_argument("--max-batch", type=int, metavar="N", help="questions per generation batch (1: one at a time)")
    s.add_argument("--index-name", metavar="NAME", help="index (alias) to retrieve from (default docs)")
    s.add_argument("--no-cache", action="store_true", help="generate every answer (no answer cache)")
    s.add_argument("--allow-anonymous", action="store_true", help="serve clients without an API key although keys "
                   "exist or --host is not loopback (their votes do not count in the monitor by default)")
    s.add_argument("--ask-rate", metavar="RATE", help="questions per client, e.g. '10/second;120/minute' (429 past it)")
    s.add_argument("--feedback-rate", metavar="RATE", help="votes per client, e.g. '5/second;30/minute'")
    s.add_argument("--max-queue", type=int, metavar="N", help="questions in progress at most (503 past it; default 32)")
    k = add("keys", None, "API keys of the server: create (shown once, only a hash is kept), list, revoke")
    key_action = review_actions(k)
    kc = key_action("create", cmd_keys_create, "create a key with a role: ask < feedback (ask and vote) < admin "
                    "(also /metrics)")
    kc.add_argument("--role", required=True, choices=["ask", "feedback", "admin"], help="what the key may do")
    kc.add_argument("--name", help="who or what it is for (shown in `keys list`)")
    key_action("list", cmd_keys_list, "list keys (id, role, name, created, revoked); never the keys themselves")
    kr = key_action("revoke", cmd_keys_revoke, "revoke a key: a running server refuses it from its next request")
    kr.add_argument("id", help="the key's id (see `ragtune keys list`)")
    c = add("calibrate", cmd_calibrate, "choose the retrieval-support threshold under which the server answers "
            "'not found in the documents', on the evaluation split and off-topic questions")
    c.add_argument("--config", metavar="FILE", help="YAML with ServeConfig fields (or a `serve:` section)")
    c.add_argument("--index-name", metavar="NAME", help="index (alias) (default docs)")
    ask = add("ask", cmd_ask, "answer a question with the champion and retrieved context, citing sources")
    ask.add_argument("question", help="the question")
    ask.add_argument("--config", metavar="FILE", help="YAML with AskConfig fields (or an `ask:` section)")
    ask.add_argument("--max-new-tokens", type=int, metavar="N", help="answer length limit (default 96)")
    ask.add_argument("--no-cache", action="store_true", help="answer again even if the answer is cached")
    ask.add_argument("--name", help="index (alias) name (default docs)")
    fb = add("feedback", None, "review user feedback: votes and corrections that become Q/A pairs for training")
    fb.add_argument("--config", metavar="FILE", help="YAML with `feedback:` and `train:` sections (on top of the "
                    "workspace's config.yaml)")
    action = review_actions(fb)
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

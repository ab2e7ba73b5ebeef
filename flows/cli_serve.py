"""`ragtune serve | calibrate`: the serving half of the command line (lazy imports)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _serve_config(args: argparse.Namespace):
    from tasks.config import load_yaml_config
    from tasks.serving.config import ServeConfig

    data = load_yaml_config(getattr(args, "config", None))
    data = data.get("serve", data) if isinstance(data.get("serve"), dict) else data
    cfg = ServeConfig.model_validate(data).model_dump()
    for key in ("host", "port", "workers", "max_new_tokens", "batch_window_ms", "batch_max_wait_ms", "max_batch",
                "index_name"):
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    if getattr(args, "no_cache", False):
        cfg["cache"] = False
    return ServeConfig.model_validate(cfg)


def cmd_serve(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.serving.app import run
    from tasks.workspace import Workspace

    cfg = _serve_config(args)
    ws = Workspace.from_env().ensure()
    print(f"ragtune serve: http://{cfg.host}:{cfg.port}/ (chat page), /v1/ask, /v1/feedback, /healthz, /readyz, "
          f"/metrics; workspace {ws.root}; Ctrl-C stops", file=sys.stderr)
    run(cfg, ws)
    return {"stopped": True}


def cmd_calibrate(args: argparse.Namespace) -> dict[str, Any]:
    from tasks.serving.guardrails import calibrate
    from tasks.workspace import Workspace

    out = calibrate(Workspace.from_env(), _serve_config(args))
    if not args.json:
        print_calibration(out)
    return {k: v for k, v in out.items() if k not in ("curve", "reference_scores", "off_topic_scores")}


def print_calibration(out: dict[str, Any]) -> None:
    c, z = out["chosen"], out["no_threshold"]
    pct = lambda v: "—" if v is None else f"{v:.0%}"  # noqa: E731
    print(f"not-found threshold {out['threshold']:.3f} (cosine support of the closest passage), chosen on "
          f"{out['questions']} evaluation questions of {out['source']} and {out['off_topic']} off-topic questions")
    print(f"  {'':<22}{'answer rate':>12}{'answered right':>16}{'off-topic refused':>19}{'right decisions':>17}")
    for name, r in (("no threshold", z), (f"threshold {out['threshold']:.3f}", c)):
        print(f"  {name:<22}{pct(r['answer_rate']):>12}{pct(r['answered_accuracy']):>16}"
              f"{pct(r['off_topic_refused']):>19}{pct(r['accuracy']):>17}")
    print("  (answered right: the question's document was among the passages given to the model)")


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
    c = add("calibrate", cmd_calibrate, "choose the retrieval-support threshold under which the server answers "
            "'not found in the documents', on the evaluation split and off-topic questions")
    c.add_argument("--config", metavar="FILE", help="YAML with ServeConfig fields (or a `serve:` section)")
    c.add_argument("--index-name", metavar="NAME", help="index (alias) (default docs)")

"""Prefect's overhead on the demo: the demo pipeline (ingest, index, train, evaluate, promote on the bundled
sample) run through its flows, against the very same stage functions called directly, in the same run.

"Directly" means the same code with Prefect taken out: every flow and task object in the `flows` and `tasks`
modules is replaced by the plain function it wraps (`.fn`), and `get_run_logger` by a standard logger. Nothing
else differs. Each measurement runs in its own process with a fresh workspace and PREFECT_HOME, as `make demo`
does on a clean machine, so model and import caches are cold for both; the flow side includes starting Prefect's
temporary server. Runs alternate (direct, flows, direct, ...) to spread the machine's drift over both sides.

Target: flows wall time <= 1.10 x direct (overhead at most 10%).

    python bench/orchestration_overhead.py [--repeats 1] [--quick] [--json]

`--quick` trains 4 steps and evaluates 8 questions instead of the demo's 16 steps and the whole test split:
a shorter run, so the same fixed overhead weighs more (a stricter check).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
QUICK_TRAIN = {"max_steps": 4, "eval_steps": 4, "save_steps": 4}
QUICK_EVAL = {"max_examples": 8}


def strip_prefect() -> int:
    """Replace every Prefect flow and task object in the project's modules by the function it wraps; returns how
    many were replaced."""
    import logging

    from prefect import Flow, Task

    import flows.demo  # noqa: F401  (imports every stage the demo runs)
    import flows.pipeline  # noqa: F401

    replaced = 0
    for name, module in list(sys.modules.items()):
        if not (name.startswith("flows.") or name.startswith("tasks.")) or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if isinstance(value, Flow | Task):
                setattr(module, attr, value.fn)
                replaced += 1
            elif attr == "get_run_logger":
                setattr(module, attr, lambda: logging.getLogger("ragtune.flow"))
    return replaced


def child(mode: str, quick: bool) -> dict:
    from flows.demo import demo_config

    replaced = strip_prefect() if mode == "direct" else 0
    import flows.pipeline as pipeline  # after strip_prefect: the plain function in direct mode

    config = demo_config(QUICK_TRAIN if quick else None, QUICK_EVAL if quick else None)
    t = time.perf_counter()
    out = pipeline.pipeline_flow(config, run_training=True, promote=True, run_id_prefix="demo")
    wall = time.perf_counter() - t
    return {"mode": mode, "wall_s": wall, "replaced": replaced, "promoted": out["promote"]["promoted"],
            "chunks": out["index"]["chunks"], "steps": out["train"]["steps"]}


def measure(mode: str, quick: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"ragtune-overhead-{mode}-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "RAGTUNE_HOME"}
        env.update({"RAGTUNE_HOME": str(Path(tmp) / "ws"), "PREFECT_HOME": str(Path(tmp) / "prefect"),
                    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"})
        args = [sys.executable, __file__, "--child", mode] + (["--quick"] if quick else [])
        res = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"{mode} run failed:\n{res.stderr[-3000:]}")
        return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1, help="pairs of runs (direct + flows)")
    ap.add_argument("--quick", action="store_true", help="4 training steps, 8 evaluation questions")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", choices=["direct", "flows"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.quick)))
        return
    runs: dict[str, list[dict]] = {"direct": [], "flows": []}
    for _ in range(args.repeats):
        for mode in ("direct", "flows"):
            r = measure(mode, args.quick)
            runs[mode].append(r)
            if not args.json:
                print(f"  {mode:<6} {r['wall_s']:7.1f} s  ({r['chunks']} chunks, {r['steps']} steps, promoted "
                      f"{r['promoted']})", flush=True)
    direct = statistics.median(r["wall_s"] for r in runs["direct"])
    flows = statistics.median(r["wall_s"] for r in runs["flows"])
    out = {"direct_s": round(direct, 1), "flows_s": round(flows, 1), "ratio": round(flows / direct, 3),
           "overhead": round(flows / direct - 1, 3), "target_ratio_max": 1.10,
           "replaced_objects": runs["direct"][0]["replaced"], "quick": args.quick, "repeats": args.repeats}
    out["pass"] = out["ratio"] <= out["target_ratio_max"]
    if args.json:
        print(json.dumps(out))
    else:
        print(f"demo pipeline{' (quick)' if args.quick else ''}: direct {direct:.1f} s, flows {flows:.1f} s -> "
              f"ratio {out['ratio']:.3f}, overhead {100 * out['overhead']:.1f}% (target <= 10%) "
              f"{'PASS' if out['pass'] else 'FAIL'}")


if __name__ == "__main__":
    main()

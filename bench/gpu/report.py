"""The results of bench/gpu_check.py: the device description, the markdown table, atomic file writes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.gpu.models import DEFAULT_LABEL

TITLES = {"train_default_qlora": "Training, QLoRA (NF4, double quant, bf16 compute)",
          "train_default_lora": "Training, bf16 LoRA",
          "train_largest_qlora": "Training, QLoRA (NF4, double quant, bf16 compute)",
          "train_largest_lora": "Training, bf16 LoRA",
          "train_default_qlora_tokens": "Training, QLoRA, steps sized in tokens",
          "train_largest_lora_tokens": "Training, bf16 LoRA, steps sized in tokens",
          "models": "Offline causal LMs", "generate_default": "Generation, greedy",
          "pytest_gpu": "Tests: `pytest -m gpu`", "pytest_train": "Tests: `pytest tests/flows/test_train.py`"}
STEP_MODEL = {"train_default_qlora": DEFAULT_LABEL, "train_default_lora": DEFAULT_LABEL,
              "train_default_qlora_tokens": DEFAULT_LABEL, "train_largest_lora_tokens": "largest offline causal LM",
              "generate_default": DEFAULT_LABEL, "train_largest_qlora": "largest offline causal LM",
              "train_largest_lora": "largest offline causal LM"}


def _cell(value: Any) -> str:
    return " ".join(str(value).split()).replace("|", "\\|") if value not in (None, "") else "–"


def _num(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def _gib(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f} GiB"


def _status(r: dict[str, Any]) -> str | None:
    if r.get("status") == "skipped":
        return f"skipped: {r.get('reason', '')}"
    if r.get("status") == "error":
        return f"error: {r.get('error', '')}"
    return None


LEVER_BASELINE = {"train_default_qlora_tokens": "train_default_qlora", "train_largest_lora_tokens": "train_largest_lora"}


def table_rows(name: str, r: dict[str, Any], baseline: dict[str, Any] | None = None) -> list[list[str]]:
    """Rows (step, model, setting, tokens/s, peak memory, result) of one step's record; `baseline`: the record
    of the case a lever step is compared with."""
    title, failed = TITLES.get(name, name), _status(r)
    if failed:
        return [[title, r.get("model") or STEP_MODEL.get(name, "–"), "–", "–", "–", failed]]
    if name == "models":
        return [[title, r.get("largest") or "–", f"{r.get('candidates_found', 0)} candidate(s), "
                 f"{r.get('loadable', 0)} loadable", "–", "–", f"ok: {r.get('why', '')}"]]
    if name.startswith("train_"):
        sizing = (f"steps of {r['tokens_per_step_setting']} tokens ({r.get('accumulation_steps')} micro-batches)"
                  if r.get("tokens_per_step_setting") else f"batch {r.get('batch_size')}")
        setting = (f"{sizing}, {r.get('steps')} steps, ~{_num(r.get('tokens_per_step'), '.0f')} "
                   f"tokens/step, grad. ckpt {'on' if r.get('gradient_checkpointing') else 'off'}")
        if r.get("activation_estimate_gib") is not None:
            setting += f" (activations est. {r['activation_estimate_gib']:.1f} GiB)"
        if r.get("workload"):
            setting += f", {r['workload']} workload" + (", padding-free" if r.get("padding_free") else "")
        note = f"ok; hand PEFT loop ratio {r['ratio']:.2f}" if r.get("ratio") else "ok"
        if r.get("mfu") is not None:
            note += f"; MFU {r['mfu']:.1%} of {r.get('matmul_tflops') or 0:.0f} TFLOP/s measured"
        if baseline and baseline.get("status") == "ok" and baseline.get("tokens_per_s") and r.get("tokens_per_s"):
            note += (f"; {r['tokens_per_s'] / baseline['tokens_per_s']:.1f}x the tokens/s of the same case at batch "
                     f"{baseline.get('batch_size')}")
        return [[title, r.get("model"), setting, _num(r.get("tokens_per_s"), ",.0f"),
                 _gib(r.get("peak_gpu_memory_gib")), note]]
    if name == "generate_default":
        rows = []
        for c in r.get("cases", []):
            system = "base model" if c["system"] == "base" else "with LoRA adapter (unmerged)"
            rows.append([f"{title}, {system}", STEP_MODEL[name],
                         f"batch {c['batch_size']}, {c['prompts']} prompts, ≤{c['max_new_tokens']} new tokens"
                         + (f", {c['cache']} cache" if c.get("cache", "dynamic") != "dynamic" else ""),
                         _num(c.get("tokens_per_s"), ",.0f"), _gib(c.get("peak_gpu_memory_gib")),
                         "ok" + (f"; {c['empty_answers']} empty answers" if c.get("empty_answers") else "")
                         + (f"; warm-up {c['warmup_s']:.0f} s" if c.get("cache") == "static" else "")
                         + (f"; {c['same_answers_as_dynamic']:.0%} answers as the dynamic loop's"
                            if c.get("same_answers_as_dynamic") is not None else "")])
        if r.get("adapter_error"):
            rows.append([f"{title}, with LoRA adapter", "–", "–", "–", "–", f"error: {r['adapter_error']}"])
        return rows
    if name.startswith("pytest_"):
        counts = ", ".join(f"{r.get(k, 0)} {k}" for k in ("passed", "failed", "errors", "skipped") if r.get(k))
        failed_ids = "; failed: " + ", ".join(r["failed_tests"]) if r.get("failed_tests") else ""
        note = f"{r['note']} ({r.get('deselected', 0)} deselected)" if r.get("note") else counts or "no tests ran"
        return [[title, "–", "–", "–", "–", note + failed_ids]]
    return [[title, "–", "–", "–", "–", "ok"]]


def render_markdown(result: dict[str, Any]) -> str:
    """One markdown table for a README, with a one-line caption naming the device and versions."""
    env = result.get("environment", {})
    caption = (f"GPU check on {env.get('device_name', '?')} (torch {env.get('torch', '?')}, CUDA {env.get('cuda', '?')}, "
               f"bitsandbytes {env.get('bitsandbytes', '?')}, transformers {env.get('transformers', '?')}, "
               f"{result.get('finished_at') or result.get('started_at', '?')}): {result.get('elapsed_s', 0):.0f} s of a "
               f"{result.get('budget_s', 0):.0f} s budget{'' if result.get('complete') else ', incomplete'}.")
    lines = [caption, "", "| Step | Model | Setting | Tokens/s | Peak GPU memory | Result |",
             "| --- | --- | --- | ---: | ---: | --- |"]
    steps = result.get("steps", {})
    for name, r in steps.items():
        rows = table_rows(name, r, steps.get(LEVER_BASELINE.get(name, "")))
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def atomic_write(path: Path, text: str) -> None:
    """Write a temporary file next to `path`, then rename it over `path`: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def environment(torch: Any) -> dict[str, Any]:
    """The device, driver and package versions the numbers were measured with."""
    from importlib.metadata import PackageNotFoundError, version

    props = torch.cuda.get_device_properties(0)
    env: dict[str, Any] = {
        "device_name": torch.cuda.get_device_name(0), "device_count": torch.cuda.device_count(),
        "compute_capability": f"{props.major}.{props.minor}", "total_memory_gib": round(props.total_memory / 2**30, 1),
        "bf16_native": props.major >= 8,  # Ampere or newer; older GPUs emulate bf16 slowly
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "python": sys.version.split()[0], "torch": torch.__version__}
    for pkg in ("bitsandbytes", "transformers", "peft", "trl", "accelerate", "gguf"):
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            env[pkg] = None
    if shutil.which("nvidia-smi"):
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], text=True,
                               capture_output=True, timeout=10)
            env["driver"] = q.stdout.strip().splitlines()[0] if q.returncode == 0 and q.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    return env

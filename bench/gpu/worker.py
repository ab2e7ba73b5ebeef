"""The child side of bench/gpu_check.py: GGUF conversion and the generation measurement, one JSON line out."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.gpu import ROOT, one_line


def sample_prompts(n: int) -> list[list[dict[str, str]]]:
    """Closed-book chat prompts from the bundled Q/A set, in the project's SFT prompt form."""
    from tasks.train.config import DEFAULT_SYSTEM_PROMPT
    from tasks.train.prompt import build_messages

    rows = [json.loads(ln) for ln in (ROOT / "data" / "sample" / "qa.jsonl").read_text().splitlines() if ln.strip()]
    qs = [r["question"] for r in rows if r.get("question")]
    return [build_messages(qs[i % len(qs)], "", None, DEFAULT_SYSTEM_PROMPT)[:-1] for i in range(n)]


def make_untrained_adapter(base_path: str, out_dir: Path) -> Path:
    """A LoRA adapter with `ragtune train`'s settings, as initialised (B = 0): the same compute as a trained one."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from tasks.train.train import build_lora_config

    model = AutoModelForCausalLM.from_pretrained(base_path, use_safetensors=True, trust_remote_code=False)
    get_peft_model(model, build_lora_config()).save_pretrained(str(out_dir))
    return out_dir


def measure_generation(base_path: str, device: str, prompts: list[list[dict[str, str]]],
                       cases: list[tuple], max_new_tokens: int, adapter_dir: str | None = None,
                       ) -> list[dict[str, Any]]:
    """Greedy answers with `tasks.train.generate.generate` (evaluation's code) per (system, batch size[, cache])
    case: answer tokens per second and, on CUDA, the peak memory. System `base` runs with the adapter disabled.
    A static-cache case is warmed up on a whole batch at full length (its compiled step depends on the cache
    length), the warm-up's seconds reported, and its answers compared with the dynamic case of the same system
    and batch size when one ran before it. The device is an argument so that a CPU test reaches the same code."""
    import torch

    from tasks.train.generate import BASE, generate, load_systems, use_system

    model, tok = load_systems(base_path, {"adapter": adapter_dir} if adapter_dir else {}, device=device)
    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    out = []
    dynamic_answers: dict[tuple[str, int], list[str]] = {}
    for system, batch_size, *rest in cases:
        cache = rest[0] if rest else "dynamic"
        with use_system(model, BASE if system == "base" else "adapter") as m:
            t = time.perf_counter()  # warm-up, not timed
            generate(m, tok, prompts[:batch_size], max_new_tokens=max_new_tokens if cache == "static" else 2,
                     batch_size=batch_size, cache=cache)
            sync()
            warmup_s = time.perf_counter() - t
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            sync()
            t = time.perf_counter()
            answers = generate(m, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, cache=cache)
            sync()
            seconds = time.perf_counter() - t
        tokens = sum(len(tok(a, add_special_tokens=False)["input_ids"]) for a in answers)
        same = dynamic_answers.get((system, batch_size))
        if cache == "dynamic":
            dynamic_answers[(system, batch_size)] = answers
        out.append({"system": system, "batch_size": batch_size, "cache": cache, "warmup_s": round(warmup_s, 3),
                    "same_answers_as_dynamic": (sum(a == b for a, b in zip(answers, same, strict=True)) / len(answers)
                                                if same is not None and cache != "dynamic" else None),
                    "prompts": len(prompts), "max_new_tokens": max_new_tokens,
                    "answer_tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": tokens / seconds,
                    "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                    "empty_answers": sum(not a for a in answers), "sample_answer": answers[0][:120]})
    return out


def convert(spec: dict[str, Any]) -> dict[str, Any]:
    """A GGUF checkpoint de-quantised once into a safetensors folder (load_base_model reads safetensors only)."""
    from tasks.train.model import convert_gguf

    out = Path(spec["out"])
    if not (out / "model.safetensors").exists() and not list(out.glob("*.safetensors")):
        staging = out.with_name(out.name + ".staging")
        shutil.rmtree(staging, ignore_errors=True)
        convert_gguf(Path(spec["folder"]), spec["gguf_file"], staging)
        shutil.rmtree(out, ignore_errors=True)  # a folder a killed run left without weights
        staging.rename(out)
    return {"path": str(out)}


def generation(spec: dict[str, Any]) -> dict[str, Any]:
    """Generation speed of the default base model, alone and with an untrained LoRA adapter."""
    from tasks.core.workspace import Workspace
    from tasks.train.model import PACKAGED_LLM, resolve_base_model

    ws = Workspace(Path(spec["home"])).ensure()
    base = resolve_base_model(ws, PACKAGED_LLM)
    result: dict[str, Any] = {"base_model_path": base}
    adapter = None
    try:
        adapter = str(make_untrained_adapter(base, Path(spec["home"]) / "gpu-check-adapter"))
    except Exception as exc:  # base-model generation is still worth measuring
        result["adapter_error"] = one_line(exc)
    cases = [tuple(c) for c in spec["cases"] if adapter or c[0] == "base"]
    result["cases"] = measure_generation(base, spec["device"], sample_prompts(spec["prompts"]), cases,
                                         spec["max_new_tokens"], adapter)
    return result


def main() -> None:
    """Child entry: `python -m bench.gpu.worker JSON` with job `convert` or `generate`; prints one JSON line."""
    spec = json.loads(sys.argv[1])
    print(json.dumps(convert(spec) if spec["job"] == "convert" else generation(spec)))


if __name__ == "__main__":
    main()

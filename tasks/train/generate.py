"""Inference for evaluation and `ragtune ask`: one base model with any number of LoRA adapters attached, batched
greedy generation, and the likelihood of reference answers (for perplexity). Weights from safetensors only."""

from __future__ import annotations

import inspect
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.train.loss import accepts_logits_to_keep
from tasks.train.model import load_tokenizer
from tasks.train.train import compute_dtype

log = logging.getLogger("ragtune.generate")
BASE = "base"  # the system name of the base model without any adapter


def check_adapter_dir(path: str | Path) -> Path:
    """An adapter folder must hold its config and safetensors weights (PEFT would fall back to a pickle)."""
    p = Path(path)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if not (p / name).is_file():
            raise FileNotFoundError(f"adapter {p} has no {name}: adapters load from safetensors only")
    return p


def load_systems(base_path: str, adapters: dict[str, str], device: str | None = None, precision: str = "auto",
                 ) -> tuple[Any, Any]:
    """The base model (bf16 where the device computes it fast, else float32) with each adapter attached under its
    name; returns (model, tokenizer). `use_system(model, name)` selects one of them, or the bare base model."""
    import torch
    from transformers import AutoModelForCausalLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = compute_dtype(device, precision)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype, use_safetensors=True,
                                                 trust_remote_code=False).to(device)
    tokenizer = load_tokenizer(base_path)
    tokenizer.padding_side = "left"  # generation continues after the prompt's last real token
    if adapters:
        from peft import PeftModel

        names = list(adapters)
        model = PeftModel.from_pretrained(model, str(check_adapter_dir(adapters[names[0]])), adapter_name=names[0],
                                          is_trainable=False)
        for name in names[1:]:
            model.load_adapter(str(check_adapter_dir(adapters[name])), adapter_name=name, is_trainable=False)
    model.eval()
    return model, tokenizer


@contextmanager
def use_system(model: Any, name: str):
    """Run the block with adapter `name` active, or with every adapter disabled for `BASE`."""
    if not hasattr(model, "peft_config"):
        if name != BASE:
            raise ValueError(f"no adapter named {name!r} is loaded")
        yield model
        return
    if name == BASE:
        with model.disable_adapter():
            yield model
        return
    model.set_adapter(name)
    yield model


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the chat prompt up to the assistant turn (the way TRL builds prompt-completion examples)."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def _batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped by length (longest first), so each batch pads little."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def generate(model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], max_new_tokens: int = 48,
             batch_size: int = 16) -> list[str]:
    """Greedy answers (deterministic) to chat prompts, batched with left padding."""
    import torch

    ids = [prompt_ids(tokenizer, p) for p in prompts]
    out: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    for batch in _batches([len(x) for x in ids], batch_size):
        width = max(len(ids[i]) for i in batch)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids[i])) + ids[i] for i in batch], device=device)
        mask = torch.tensor([[0] * (width - len(ids[i])) + [1] * len(ids[i]) for i in batch], device=device)
        with torch.inference_mode():
            gen = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, num_beams=1, pad_token_id=pad,
                                 eos_token_id=tokenizer.eos_token_id)
        for row, i in enumerate(batch):
            out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True).strip()
    return out


def plain_greedy(model: Any) -> bool:
    """Whether the model's generation config adds nothing to greedy decoding that `generate_shrinking` would
    leave out (repetition penalties, banned n-grams, forced or suppressed tokens, minimum lengths)."""
    g = getattr(model, "generation_config", None)
    if g is None:
        return True
    return ((g.repetition_penalty in (None, 1.0)) and not g.no_repeat_ngram_size and not g.bad_words_ids
            and not g.forced_bos_token_id and not g.forced_eos_token_id and not g.suppress_tokens
            and not g.begin_suppress_tokens and not g.min_new_tokens and (g.min_length or 0) == 0
            and not getattr(g, "sequence_bias", None))


def generate_shrinking(model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]],
                       max_new_tokens: int = 48) -> list[str]:
    """Greedy answers like `generate`, in one batch that sheds each row when its answer ends (its KV cache
    rows are dropped), so the last steps of a long answer do not carry the finished short ones. The answers
    are those of `generate`; it serves batches of questions whose answers end at very different lengths."""
    import torch

    if not plain_greedy(model):
        return generate(model, tokenizer, prompts, max_new_tokens, len(prompts))
    ids = [prompt_ids(tokenizer, p) for p in prompts]
    device = next(model.parameters()).device
    width, pad, eos = max(len(x) for x in ids), tokenizer.pad_token_id, tokenizer.eos_token_id
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # what `generate` derives from the mask of a left-padded batch
    out: list[list[int]] = [[] for _ in ids]
    alive = list(range(len(ids)))  # original index of each row still generating
    with torch.inference_mode():
        keep_last = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        res = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **keep_last)
        cache, last = res.cache, positions[:, -1]
        for step in range(max_new_tokens):
            nxt = res.logits[:, -1, :].argmax(-1)
            keep = []
            for row, i in enumerate(alive):
                token = int(nxt[row])
                if token != eos:
                    out[i].append(token)
                    keep.append(row)
            if not keep or step == max_new_tokens - 1:
                break
            if len(keep) < len(alive):
                idx = torch.tensor(keep, device=device)
                cache.batch_select_indices(idx)
                mask, nxt, last = mask[idx], nxt[idx], last[idx]
                alive = [alive[row] for row in keep]
            mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
            last = last + 1
            res = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=last[:, None], cache=cache,
                        use_cache=True)
            cache = res.cache
    return [tokenizer.decode(o, skip_special_tokens=True).strip() for o in out]


def answer_nll(model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], answers: list[str],
               batch_size: int = 16) -> list[tuple[float, int]]:
    """(summed negative log-likelihood, token count) of each reference answer given its prompt, over the
    assistant turn's tokens exactly as training scores them (the completion after the prompt)."""
    import torch

    pairs = []
    for p, a in zip(prompts, answers, strict=True):
        head = prompt_ids(tokenizer, p)
        full = tokenizer.apply_chat_template([*p, {"role": "assistant", "content": a}], tokenize=True)
        full = list(full["input_ids"] if hasattr(full, "keys") else full)
        if full[:len(head)] != head:  # a template that rewrites the prompt part: score the answer tokens alone
            full = head + tokenizer(a, add_special_tokens=False)["input_ids"]
        pairs.append((full, len(head)))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(pairs)
    device = next(model.parameters()).device
    # the whole batch's logits in float32 and their log-softmax took about 2 GB for 16 prompts with passages
    sliced = accepts_logits_to_keep(model)
    for batch in _batches([len(f) for f, _ in pairs], batch_size):
        width = max(len(pairs[i][0]) for i in batch)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([pairs[i][0] + [pad] * (width - len(pairs[i][0])) for i in batch], device=device)
        mask = torch.tensor([[1] * len(pairs[i][0]) + [0] * (width - len(pairs[i][0])) for i in batch], device=device)
        labels = input_ids.clone()
        for row, i in enumerate(batch):
            labels[row, :pairs[i][1]] = -100
            labels[row, len(pairs[i][0]):] = -100
        target = labels[:, 1:]
        keep = target != -100
        with torch.inference_mode():
            if sliced:  # project only the positions that predict an answer token onto the vocabulary
                at = torch.nn.functional.pad(keep, (0, 1), value=False)
                logits = model(input_ids=input_ids, attention_mask=mask, logits_to_keep=at).logits.float()
                # the same per-position values as below, put back in place so each row sums in the same order
                picked = torch.zeros(keep.shape, dtype=logits.dtype, device=device)
                picked[keep] = torch.log_softmax(logits, dim=-1).gather(-1, target[keep].unsqueeze(-1)).squeeze(-1)
            else:
                logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
                logp = torch.log_softmax(logits[:, :-1], dim=-1)
                picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
        for row, i in enumerate(batch):
            out[i] = (float(-picked[row].sum()), int(keep[row].sum()))
    return out


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


# Prompt tokens per prefill forward pass. The prefill of a batch of 16 prompts with retrieved passages (about
# 1,700 tokens each) held about 1.4 GB of activations at once on CPU besides the KV cache; a pass over a few
# rows at a time holds a fraction of it, and the rows' results do not depend on which rows share the pass
# (tests/unit/test_serving.py checks the answers against `model.generate`).
PREFILL_TOKENS = 4096


# With a static cache, prompts are left-padded to a multiple of this many tokens and short batches are filled up
# to the batch size, so a compiled decoding step (CUDA graphs) is reused across batches instead of recompiled.
STATIC_WIDTH_STEP = 64
CACHES = ("dynamic", "static")


def generate(model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], max_new_tokens: int = 48,
             batch_size: int = 16, prefill_tokens: int = PREFILL_TOKENS, cache: str = "dynamic") -> list[str]:
    """Greedy answers (deterministic) to chat prompts, batched by length with left padding: the answers of
    `model.generate` on the same batches, with the prefill run over at most `prefill_tokens` prompt tokens at
    a time and each row leaving the batch when its answer ends. `cache="static"`: `model.generate` with a static
    KV cache in fixed shapes (`STATIC_WIDTH_STEP`), whose decoding step transformers compiles on a GPU; the same
    tokens in float32 (tested), within bf16 rounding otherwise."""
    if cache not in CACHES:
        raise ValueError(f"cache must be one of {CACHES}, not {cache!r}")
    ids = [prompt_ids(tokenizer, p) for p in prompts]
    out: list[str] = [""] * len(prompts)
    if cache == "static":
        def greedy(m, t, rows, n, _prefill):
            return _hf_generate_batch(m, t, rows, n, static_batch=batch_size)
    else:
        greedy = _greedy_batch if plain_greedy(model) else _hf_generate_batch
    for batch in _batches([len(x) for x in ids], batch_size):
        answers = greedy(model, tokenizer, [ids[i] for i in batch], max_new_tokens, prefill_tokens)
        for i, answer in zip(batch, answers, strict=True):
            out[i] = tokenizer.decode(answer, skip_special_tokens=True).strip()
    return out


def generate_shrinking(model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]],
                       max_new_tokens: int = 48) -> list[str]:
    """Greedy answers like `generate`, all prompts in one batch (the server's micro-batches): finished rows
    leave the batch, so the last steps of a long answer do not carry the short ones."""
    return generate(model, tokenizer, prompts, max_new_tokens, batch_size=max(1, len(prompts)))


def plain_greedy(model: Any) -> bool:
    """Whether the model's generation config adds nothing to greedy decoding that `_greedy_batch` would leave
    out (repetition penalties, banned n-grams, forced or suppressed tokens, minimum lengths)."""
    g = getattr(model, "generation_config", None)
    if g is None:
        return True
    return ((g.repetition_penalty in (None, 1.0)) and not g.no_repeat_ngram_size and not g.bad_words_ids
            and not g.forced_bos_token_id and not g.forced_eos_token_id and not g.suppress_tokens
            and not g.begin_suppress_tokens and not g.min_new_tokens and (g.min_length or 0) == 0
            and not getattr(g, "sequence_bias", None))


def _left_padded(ids: list[list[int]], pad: int, device: Any, width: int | None = None) -> tuple[Any, Any]:
    import torch

    width = max(width or 0, max(len(x) for x in ids))
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
    return input_ids, mask


def _hf_generate_batch(model: Any, tokenizer: Any, ids: list[list[int]], max_new_tokens: int,
                       prefill_tokens: int = PREFILL_TOKENS, static_batch: int | None = None) -> list[list[int]]:
    """`model.generate` on one left-padded batch (for generation configs `_greedy_batch` does not follow).
    `static_batch`: with a static KV cache, the batch filled up to `static_batch` rows (copies of its first
    prompt, whose answers are dropped) and its width rounded up to a multiple of `STATIC_WIDTH_STEP`."""
    import torch

    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    rows = len(ids)
    extra: dict[str, Any] = {}
    width = None
    if static_batch:
        ids = ids + [ids[0]] * max(0, static_batch - rows)
        width = -(-max(len(x) for x in ids) // STATIC_WIDTH_STEP) * STATIC_WIDTH_STEP
        extra = {"cache_implementation": "static"}
    input_ids, mask = _left_padded(ids, pad, next(model.parameters()).device, width)
    with torch.inference_mode():
        gen = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             do_sample=False, num_beams=1, pad_token_id=pad, eos_token_id=eos, **extra)
    out = []
    for row in gen[:rows, input_ids.shape[1]:].tolist():
        out.append(row[:row.index(eos)] if eos in row else row)
    return out


def _prefill(model: Any, input_ids: Any, mask: Any, positions: Any, prefill_tokens: int) -> tuple[Any, Any]:
    """The prompt pass over a few rows at a time: (the next-token logits of every row, the whole batch's KV
    cache). Each layer's cache is joined as soon as every part is in, and the parts are dropped as they go."""
    import torch

    rows = max(1, prefill_tokens // max(1, input_ids.shape[1]))
    keep_last = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    parts, logits = [], []
    for i in range(0, input_ids.shape[0], rows):
        res = model(input_ids=input_ids[i:i + rows], attention_mask=mask[i:i + rows],
                    position_ids=positions[i:i + rows], use_cache=True, **keep_last)
        logits.append(res.logits[:, -1, :])
        parts.append(res.cache)
        del res
    cache = parts[0]
    if len(parts) > 1:
        for n, layer in enumerate(cache.layers):
            others = [p.layers[n] for p in parts[1:]]
            layer.keys = torch.cat([layer.keys, *(o.keys for o in others)])
            layer.values = torch.cat([layer.values, *(o.values for o in others)])
            for o in others:
                o.keys = o.values = None
    return torch.cat(logits), cache


def _greedy_batch(model: Any, tokenizer: Any, ids: list[list[int]], max_new_tokens: int,
                  prefill_tokens: int = PREFILL_TOKENS) -> list[list[int]]:
    """Greedy answer tokens (without the end token) of one left-padded batch: the prefill a few rows at a time
    (`_prefill`), then one token per step, each row leaving the batch (its KV cache rows dropped) when its answer
    ends. Positions are what `generate` derives from the attention mask of a left-padded batch."""
    import torch

    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    input_ids, mask = _left_padded(ids, tokenizer.pad_token_id, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out: list[list[int]] = [[] for _ in ids]
    alive = list(range(len(ids)))  # original index of each row still generating
    with torch.inference_mode():
        logits, cache = _prefill(model, input_ids, mask, positions, prefill_tokens)
        last = positions[:, -1]
        for step in range(max_new_tokens):
            nxt = logits.argmax(-1)
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
            logits, cache = res.logits[:, -1, :], res.cache
    return out


def answer_nll(model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], answers: list[str],
               batch_size: int = 16, prefill_tokens: int = PREFILL_TOKENS) -> list[tuple[float, int]]:
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
        picked = torch.zeros(keep.shape, dtype=torch.float32, device=device)
        rows = max(1, prefill_tokens // width)  # a few rows per pass, as the prefill does (`_prefill`)
        with torch.inference_mode():
            for lo in range(0, len(batch), rows):
                part, ids_, mask_, target_, keep_ = (slice(lo, lo + rows), input_ids[lo:lo + rows],
                                                     mask[lo:lo + rows], target[lo:lo + rows], keep[lo:lo + rows])
                if sliced:  # project only the positions that predict an answer token onto the vocabulary
                    at = torch.nn.functional.pad(keep_, (0, 1), value=False)
                    logits = model(input_ids=ids_, attention_mask=mask_, logits_to_keep=at).logits.float()
                    # the same per-position values as below, put back in place so each row sums in the same order
                    values = torch.zeros(keep_.shape, dtype=logits.dtype, device=device)
                    values[keep_] = torch.log_softmax(logits, dim=-1).gather(-1, target_[keep_].unsqueeze(-1)).squeeze(-1)
                else:
                    logits = model(input_ids=ids_, attention_mask=mask_).logits.float()
                    logp = torch.log_softmax(logits[:, :-1], dim=-1)
                    values = logp.gather(-1, target_.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep_
                picked[part] = values
                del logits
        for row, i in enumerate(batch):
            out[i] = (float(-picked[row].sum()), int(keep[row].sum()))
    return out


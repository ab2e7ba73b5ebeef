"""The causal-LM loss on the completion tokens, with the vocabulary projection applied to those positions only.

A model's own loss projects every position of the batch onto the vocabulary (49,152 entries for SmolLM2),
casts those logits to float32 and takes a log-softmax over all of them, though the labels keep only the answer
tokens: on CPU, for a batch of 8 prompts with retrieved passages (about 2,400 positions, 120 of them answer
tokens) that is about 1.9 GB of logits and their gradients at each step, and a sixth of the step's
arithmetic. Here the model projects only the labelled positions (`logits_to_keep` with a boolean mask), and
the loss is summed by the same `nll_loss` call over the same positions as `F.cross_entropy` would sum it, so
the loss value and the gradients of the layers below the projection (the LoRA weights) are the model's own,
bit for bit (tests/unit/test_train_loss.py). The projection's own weight gradient, were it trained, would sum
over fewer positions and could round differently; LoRA on `all-linear` leaves it frozen."""

from __future__ import annotations

from typing import Any

IGNORE = -100


def completion_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None,
                    sum_over_items: bool = True) -> Any:
    """The loss `transformers`' `ForCausalLMLoss` computes from `inputs["labels"]` (token t predicts label t+1,
    ignored labels -100): summed and divided by `num_items_in_batch` when it is given and `sum_over_items`,
    else the mean over the labelled tokens."""
    import torch
    import torch.nn.functional as F

    labels = inputs["labels"]
    shifted = F.pad(labels, (0, 1), value=IGNORE)[..., 1:]  # as ForCausalLMLoss shifts them
    keep = shifted != IGNORE
    rest = {k: v for k, v in inputs.items() if k != "labels"}
    logits = model(**rest, use_cache=False, logits_to_keep=keep).logits  # (labelled positions, vocab)
    picked = torch.log_softmax(logits.float(), dim=-1).gather(-1, shifted[keep].unsqueeze(-1))
    # cross_entropy is log_softmax then nll_loss over every position; nll_loss sums in blocks by position, so the
    # picked values go back to their positions (a one-column input) to be summed in the same order
    flat = keep.reshape(-1)
    column = picked.new_zeros((flat.numel(), 1)).index_put((flat.nonzero().squeeze(-1),), picked)
    target = torch.where(flat, 0, IGNORE)
    if num_items_in_batch is not None and sum_over_items:
        loss = F.nll_loss(column, target, ignore_index=IGNORE, reduction="sum")
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        return loss / num_items_in_batch
    return F.nll_loss(column, target, ignore_index=IGNORE, reduction="mean")


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the causal LM under any PEFT wrapper takes `logits_to_keep` (transformers' decoder models do)."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters

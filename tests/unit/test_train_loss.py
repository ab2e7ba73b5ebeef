"""tasks/train/loss.py: the completion-only loss equals the model's own loss and gradients bit for bit, while the
vocabulary projection sees only the labelled positions."""

from __future__ import annotations

import pytest

from tasks.train.loss import IGNORE, accepts_logits_to_keep, completion_loss

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def tiny_llama(seed: int = 0):
    """A small random Llama with its (tied) vocabulary projection frozen, as in LoRA training: that weight's own
    gradient sums over positions, and over fewer of them here, so it may round differently."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = transformers.LlamaForCausalLM(cfg).eval()
    model.lm_head.weight.requires_grad_(False)
    return model


def batch(b: int = 6, t: int = 40, seed: int = 1):
    """Right-padded rows, labels on a short completion at the end of each row (as TRL's collator builds them)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 512, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    labels = torch.full((b, t), IGNORE)
    for row in range(b):
        length = t - 3 * row
        mask[row, length:] = 0
        labels[row, length - 4 - row:length] = ids[row, length - 4 - row:length]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("num_items", [None, 17])
def test_completion_loss_is_the_models_own_loss_bit_for_bit(autocast, num_items):
    inputs = batch()
    results = []
    for ours in (False, True):
        model = tiny_llama()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            if ours:
                loss = completion_loss(model, inputs, None if num_items is None else torch.tensor(num_items))
            else:
                kw = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
                loss = model(**inputs, use_cache=False, **kw).loss
        loss.backward()
        results.append((loss.detach(), grads(model)))
    (ref_loss, ref_grads), (loss, got) = results
    assert torch.equal(loss, ref_loss), (loss.item(), ref_loss.item())
    assert ref_grads.keys() == got.keys() and ref_grads
    for name, g in ref_grads.items():
        assert torch.equal(g, got[name]), name


def test_only_labelled_positions_reach_the_vocabulary_projection():
    model = tiny_llama()
    inputs = batch()
    rows = []
    model.lm_head.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape))
    completion_loss(model, inputs)
    labelled = int((inputs["labels"][:, 1:] != IGNORE).sum())
    assert rows == [torch.Size([labelled, 32])]
    assert labelled < inputs["input_ids"].numel() / 4


def test_sum_over_items_off_gives_the_mean():
    model = tiny_llama()
    inputs = batch()
    mean = completion_loss(model, inputs, torch.tensor(99), sum_over_items=False)
    assert torch.equal(mean, model(**inputs, use_cache=False).loss)
    assert accepts_logits_to_keep(model)


@pytest.mark.parametrize("sum_items", [False, True])
def test_padding_free_batches_give_the_loss_and_gradients_of_padded_ones(sum_items):
    """`train.padding_free`: TRL's collator puts a batch's examples end to end in one row with position ids that
    restart at each example; the model must then attend within each example only (transformers derives the block
    mask from the position ids), so the loss and the gradients are those of the padded batch up to rounding."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    padded_batch = batch()
    examples = []
    for row in range(padded_batch["input_ids"].shape[0]):
        n = int(padded_batch["attention_mask"][row].sum())
        examples.append({"input_ids": padded_batch["input_ids"][row, :n].tolist(),
                         "labels": padded_batch["labels"][row, :n].tolist()})
    results = {}
    for free in (False, True):
        inputs = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=free)(examples)
        assert ("position_ids" in inputs) == free and ("attention_mask" in inputs) != free
        if free:
            assert inputs["input_ids"].shape[0] == 1
            assert inputs["input_ids"].shape[1] == int(padded_batch["attention_mask"].sum())  # no padding at all
        model = tiny_llama()
        items = int((inputs["labels"] != IGNORE).sum()) if sum_items else None
        loss = completion_loss(model, inputs, None if items is None else torch.tensor(items))
        loss.backward()
        results[free] = (loss.detach(), grads(model))
    (ref, ref_grads), (got, got_grads) = results[False], results[True]
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6), (got.item(), ref.item())
    for name, g in ref_grads.items():
        assert torch.allclose(got_grads[name], g, rtol=1e-4, atol=1e-6), name
    # without the restarting positions the examples would see each other: the test can tell
    model = tiny_llama()
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(examples)
    leaked = completion_loss(model, {"input_ids": flat["input_ids"], "labels": flat["labels"]})
    assert not torch.allclose(leaked.detach(), ref, rtol=1e-4), "the mask made no difference"

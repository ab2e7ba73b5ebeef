"""SFT dataset pure functions: parsing with fates, duplicates, paraphrase groups, deterministic splits."""

from __future__ import annotations

import json

from tasks.train.prompt import build_messages, format_context
from tasks.train.sft import (
    drop_duplicates,
    normalize_question,
    paraphrase_groups,
    read_qa_files,
)
from tasks.train.splits import assign_split


def test_read_qa_files_gives_every_bad_line_a_reason(tmp_path):
    f = tmp_path / "qa.jsonl"
    f.write_text("\n".join([
        json.dumps({"id": "a", "question": "How many days of leave?", "answer": "28 days"}),
        "{broken",
        json.dumps(["not", "an", "object"]),
        json.dumps({"id": "b", "question": "Who approves travel?", "answer": "  "}),
        json.dumps({"id": "c", "answer": "no question"}),
        json.dumps({"id": "d", "messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "q"}]}),
        json.dumps({"id": "e", "messages": "not a list"}),
        "",
    ]))
    items, fates = read_qa_files([f])
    assert [i.id for i in items] == ["a", "d"]
    reasons = {x.unit: x.reason.split(":")[0] for x in fates}
    assert reasons == {"qa.jsonl#line-2": "json", "qa.jsonl#line-3": "json", "qa.jsonl#b": "empty_answer",
                       "qa.jsonl#c": "empty_question", "qa.jsonl#e": "messages"}
    assert all(x.fate == "quarantined" for x in fates)


def test_duplicates_by_normalised_question_keep_the_first():
    from tasks.train.sft import QAItem

    items = [QAItem("u1", "1", "How many days of leave?", "28"), QAItem("u2", "2", "how many DAYS of leave", "28"),
             QAItem("u3", "3", "How many days of leave?!", "30"), QAItem("u4", "4", "Who approves travel?", "Ops")]
    kept, fates = drop_duplicates(items)
    assert [i.id for i in kept] == ["1", "4"]
    assert [(f.unit, f.fate) for f in fates] == [("u2", "duplicate"), ("u3", "duplicate")]
    assert "another answer" in fates[1].reason and "same answer" in fates[0].reason
    assert normalize_question("Ｗhat’s the  SLA?") == "what s the sla"


def test_paraphrases_share_a_group_and_therefore_a_split():
    qs = ["How many days of annual leave do employees get?", "How many days of annual leave do staff get?",
          "Where is the Seoul office?", "Which port does the relay agent listen on?",
          "On which port does the relay agent listen?"]
    groups = paraphrase_groups(qs, 0.7)
    assert groups[0] == groups[1] and groups[3] == groups[4] and len({groups[0], groups[2], groups[3]}) == 3


def test_split_is_deterministic_and_close_to_the_fractions():
    splits = [assign_split(f"question {i}", 0.1, 0.15) for i in range(4000)]
    assert splits == [assign_split(f"question {i}", 0.1, 0.15) for i in range(4000)]
    share = {s: splits.count(s) / len(splits) for s in ("train", "validation", "test")}
    assert abs(share["test"] - 0.15) < 0.02 and abs(share["validation"] - 0.1) < 0.02
    assert splits != [assign_split(f"question {i}", 0.1, 0.15, salt="x") for i in range(4000)]


def test_messages_carry_numbered_context():
    ctx = format_context([{"title": "Leave policy", "section": "Leave policy > Annual leave", "text": "You get 28 "
                           "days.  Plus bank holidays."}, {"title": "FAQ", "section": "", "text": "x " * 400}], 40)
    assert ctx.splitlines()[0] == "[1] Leave policy > Annual leave: You get 28 days. Plus bank holidays."
    assert ctx.splitlines()[1].startswith("[2] FAQ: x x") and ctx.endswith("…") and len(ctx.splitlines()[1]) < 60
    msgs = build_messages("How many days?", "28 days", ctx, "Be brief.")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert msgs[1]["content"].startswith("Context:\n[1]") and msgs[1]["content"].endswith("Question: How many days?")
    assert [m["role"] for m in build_messages("q", "a", None, "")] == ["user", "assistant"]


def test_length_buckets_cover_every_example_once_with_little_padding():
    import random

    import torch

    from tasks.train.train import length_bucketed_order

    rng = random.Random(0)
    lengths = [rng.randint(40, 400) for _ in range(211)]
    order = length_bucketed_order(lengths, 8, torch.Generator().manual_seed(1))
    assert sorted(order) == list(range(211))  # a permutation: nothing dropped or repeated
    batches = [order[i:i + 8] for i in range(0, len(order), 8)]
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # the longest batch first
    pad = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    assert pad / sum(max(lengths[i] for i in b) * len(b) for b in batches) < 0.05  # ~0.27 in random order
    again = length_bucketed_order(lengths, 8, torch.Generator().manual_seed(1))
    other = length_bucketed_order(lengths, 8, torch.Generator().manual_seed(2))
    assert again == order and other != order  # deterministic per seed, reshuffled per epoch


def test_token_budget_batches_hold_the_budget_and_as_many_batches_every_epoch():
    import random

    import torch

    from tasks.train.train import token_budget_batches

    rng = random.Random(0)
    lengths = [rng.randint(40, 400) for _ in range(211)] + [900]  # one example longer than the budget
    runs = {seed: token_budget_batches(lengths, 1024, torch.Generator().manual_seed(seed)) for seed in (1, 2)}
    for batches in runs.values():
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every example once
        assert all(len(b) * max(lengths[i] for i in b) <= 1024 or len(b) == 1 for b in batches)  # rows x longest
        assert batches[0] == [211]  # the longest example first, alone
        assert sum(len(b) * max(lengths[i] for i in b) for b in batches) < 1.05 * sum(lengths)  # little padding
        # greedy: a batch would have overflowed with the next example of the sorted order
        assert len(batches) <= sum(lengths) // 1024 * 2 + 2
    assert len(runs[1]) == len(runs[2]) and runs[1] != runs[2]  # same step count, another order per epoch
    again = token_budget_batches(lengths, 1024, torch.Generator().manual_seed(1))
    assert again == runs[1]
    free = token_budget_batches(lengths, 1024, torch.Generator().manual_seed(1), padding_free=True)
    assert all(sum(lengths[i] for i in b) <= 1024 or len(b) == 1 for b in free) and len(free) <= len(runs[1])


def test_steps_sized_in_tokens_derive_the_accumulation():
    import pytest
    from pydantic import ValidationError

    from tasks.train.config import TrainConfig

    cfg = TrainConfig(tokens_per_step=16384, micro_batch_tokens=5000)
    assert cfg.micro_batch_budget() == 5000 and cfg.accumulation_steps() == 4  # ceil(16384 / 5000)
    one = TrainConfig(tokens_per_step=4096)
    assert one.micro_batch_budget() == 4096 and one.accumulation_steps() == 1
    plain = TrainConfig(gradient_accumulation_steps=3)
    assert plain.micro_batch_budget() is None and plain.accumulation_steps() == 3
    for bad in ({"micro_batch_tokens": 512}, {"tokens_per_step": 1024, "gradient_accumulation_steps": 2},
                {"tokens_per_step": 1024, "micro_batch_tokens": 2048}):
        with pytest.raises(ValidationError):
            TrainConfig(**bad)

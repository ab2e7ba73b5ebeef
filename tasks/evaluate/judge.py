"""Pairwise LLM-as-judge with position swap: each pair is judged twice (A/B, then B/A) by comparing the judge's
next-token probabilities of "A" and "B"; a pair whose two verdicts disagree is a tie. Reports win rates, the
position consistency and how often the longer answer wins (length bias)."""

from __future__ import annotations

from typing import Any

from tasks.train.generate import _batches, prompt_ids

JUDGE_PROMPT = ("You are judging two answers to a question against a reference answer. Prefer the answer that is "
                "correct and says what the reference says; length is not a merit.\n\nQuestion: {question}\n"
                "Reference answer: {reference}\n\nAnswer A: {a}\n\nAnswer B: {b}\n\n"
                "Which answer is better? Reply with the single letter A or B.")


def _letter_ids(tokenizer: Any) -> tuple[int, int]:
    ids = []
    for letter in ("A", "B"):
        toks = tokenizer.encode(letter, add_special_tokens=False)
        if len(toks) != 1:
            raise ValueError(f"the judge tokenizer splits {letter!r} into {len(toks)} tokens")
        ids.append(toks[0])
    return ids[0], ids[1]


def prefer_first(model: Any, tokenizer: Any, items: list[dict[str, str]], batch_size: int = 8) -> list[float]:
    """For each {question, reference, a, b}: log P("A") − log P("B") as the judge's first answer token."""
    import torch

    a_id, b_id = _letter_ids(tokenizer)
    ids = [prompt_ids(tokenizer, [{"role": "user", "content": JUDGE_PROMPT.format(**it)}]) for it in items]
    out = [0.0] * len(items)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    for batch in _batches([len(x) for x in ids], batch_size):
        width = max(len(ids[i]) for i in batch)
        input_ids = torch.tensor([[pad] * (width - len(ids[i])) + ids[i] for i in batch], device=device)
        mask = torch.tensor([[0] * (width - len(ids[i])) + [1] * len(ids[i]) for i in batch], device=device)
        with torch.inference_mode():
            logits = model(input_ids=input_ids, attention_mask=mask).logits[:, -1].float()
        logp = torch.log_softmax(logits, dim=-1)
        for row, i in enumerate(batch):
            out[i] = float(logp[row, a_id] - logp[row, b_id])
    return out


def verdicts(first_order: list[float], swapped: list[float]) -> list[str]:
    """'candidate', 'reference' or 'tie' per pair: the candidate was A in the first order and B when swapped."""
    out = []
    for x, y in zip(first_order, swapped, strict=True):
        cand_first, cand_second = x > 0, y < 0
        out.append("candidate" if cand_first and cand_second else
                   "reference" if not cand_first and not cand_second else "tie")
    return out


def summarize(verdict: list[str], candidate_answers: list[str], reference_answers: list[str]) -> dict[str, Any]:
    """Win rates, position consistency (share of pairs both orders agree on) and length bias (among decided
    pairs of unequal length, the share won by the longer answer; 0.5 means no bias)."""
    n = len(verdict)
    decided = [(v, c, r) for v, c, r in zip(verdict, candidate_answers, reference_answers, strict=True) if v != "tie"]
    unequal = [(v, c, r) for v, c, r in decided if len(c) != len(r)]
    longer_wins = sum((v == "candidate") == (len(c) > len(r)) for v, c, r in unequal)
    return {"pairs": n, "candidate_wins": verdict.count("candidate"), "reference_wins": verdict.count("reference"),
            "ties": verdict.count("tie"), "candidate_win_rate": verdict.count("candidate") / n if n else None,
            "position_consistency": len(decided) / n if n else None,
            "longer_answer_wins": longer_wins / len(unequal) if unequal else None, "length_pairs": len(unequal)}


def judge_pairs(model: Any, tokenizer: Any, questions: list[str], references: list[str], candidate: list[str],
                other: list[str], batch_size: int = 8) -> dict[str, Any]:
    """Judge candidate vs other answers in both orders; returns the summary and the per-pair verdicts."""
    first = prefer_first(model, tokenizer, [{"question": q, "reference": r, "a": c, "b": o}
                                            for q, r, c, o in zip(questions, references, candidate, other, strict=True)],
                         batch_size)
    swapped = prefer_first(model, tokenizer, [{"question": q, "reference": r, "a": o, "b": c}
                                              for q, r, c, o in zip(questions, references, candidate, other,
                                                                    strict=True)], batch_size)
    v = verdicts(first, swapped)
    return {**summarize(v, candidate, other), "verdicts": v}

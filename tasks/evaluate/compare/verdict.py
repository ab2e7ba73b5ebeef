"""The verdict of a comparison in one sentence, backed by the paired bootstrap intervals: what retrieval gives,
what fine-tuning adds on top of it, what fine-tuning gives alone, what reranking adds, and what to use."""

from __future__ import annotations

from typing import Any

LABELS = {"token_f1": "token F1", "exact_match": "exact match", "rouge_l": "ROUGE-L", "meteor": "METEOR",
          "bertscore": "BERTScore F1", "bleu": "BLEU"}


def effect_sign(c: dict[str, float] | None) -> int:
    """+1 when the interval lies above zero, -1 below, 0 when it holds zero (or is missing)."""
    if not c or c.get("ci_low") is None or c.get("ci_high") is None:
        return 0
    return 1 if c["ci_low"] > 0 else -1 if c["ci_high"] < 0 else 0


def describe(c: dict[str, float]) -> str:
    """`+0.214 [+0.150, +0.271]`."""
    return f"{c['diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"


def _clause(phrase: str, c: dict[str, float] | None, suffix: str = "") -> str | None:
    if not c or c.get("diff") is None:
        return None
    tail = {1: "", -1: ", worse", 0: ", not significant"}[effect_sign(c)]
    return f"{phrase} {describe(c)}{suffix}{tail}"


def recommendation(effects: dict[str, dict[str, float]], tuned: str) -> str:
    """What to use, from the signs of the effects: both, retrieval alone, fine-tuning alone, or neither."""
    r, f, z = (effect_sign(effects.get(k)) for k in ("retrieval", "fine_tuning_with_retrieval", "fine_tuning_alone"))
    if r > 0 and f > 0:
        return f"use both: retrieval and fine-tuning ({tuned}) each help"
    if r > 0 and f <= 0:
        return ("use retrieval; fine-tuning adds nothing measurable on top" if f == 0 else
                "use retrieval with the base model: fine-tuning makes it worse")
    if f > 0:
        return f"use both: fine-tuning ({tuned}) helps only with retrieved context"
    if z > 0:
        return f"use the fine-tuned model ({tuned}); retrieval adds nothing measurable"
    return "no system is measurably better than the base model without retrieval: more data or a larger model"


def verdict(effects: dict[str, dict[str, float]], metric: str, examples: int, confidence: float,
            tuned: str) -> str:
    """One sentence; every number in it is a difference with its interval (see `effects_of`)."""
    clauses = [("retrieval", "retrieval gives", ""), ("fine_tuning_with_retrieval", "fine-tuning adds", " on top"),
               ("fine_tuning_alone", "closed-book fine-tuning alone gives", ""),
               ("rerank", "reranking adds", " to the fine-tuned model with retrieval")]
    parts = [p for key, phrase, suffix in clauses if (p := _clause(phrase, effects.get(key), suffix))]
    if not parts:
        return f"No comparison could be made on {examples} questions."
    name = LABELS.get(metric, metric)
    first, _, rest = parts[0].partition("]")
    parts[0] = f"{first}] {name}{rest}"
    return (f"On {examples} test questions ({confidence:.0%} intervals), {'; '.join(parts)}: "
            f"{recommendation(effects, tuned)}.")


def effects_of(comparisons: dict[str, dict[str, dict[str, float]]], metric: str) -> dict[str, dict[str, float]]:
    """The four effects of the verdict from the pairwise comparisons (`"<cell> vs <cell>"` keys)."""
    pick = {"retrieval": "base/rag vs base/closed", "fine_tuning_with_retrieval": "tuned/rag vs base/rag",
            "fine_tuning_alone": "tuned/closed vs base/closed", "rerank": "tuned/rerank vs tuned/rag"}
    out: dict[str, Any] = {}
    for name, key in pick.items():
        c = (comparisons.get(key) or {}).get(metric)
        if c and c.get("diff") is not None:
            out[name] = c
    return out

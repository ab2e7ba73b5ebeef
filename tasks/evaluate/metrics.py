"""Answer metrics (SQuAD exact match and token F1, ROUGE-L, BLEU, METEOR, BERTScore, perplexity, length) and
paired bootstrap confidence intervals. Every metric is kept as per-example statistics plus an aggregate, so
that corpus-level metrics (BLEU, perplexity) are resampled correctly, not averaged per sentence."""

from __future__ import annotations

import collections
import math
import re
import string
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.evaluate import textmetrics

# direction of improvement: +1 higher is better, -1 lower is better, 0 neither (reported only)
DIRECTION = {"exact_match": 1, "token_f1": 1, "rouge_l": 1, "bleu": 1, "meteor": 1, "bertscore": 1,
             "perplexity": -1, "answer_chars": 0, "unsafe": -1}
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation (lower case, punctuation removed, English articles removed, single spaces), after
    NFKC so full-width forms compare equal; Unicode punctuation is removed like ASCII punctuation."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCT and not unicodedata.category(ch).startswith("P"))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference (SQuAD's max over references)."""
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(r) for r in references))


def token_f1(prediction: str, references: Sequence[str]) -> float:
    """SQuAD token F1: overlap of normalised whitespace tokens, the best over references."""
    best = 0.0
    p = normalize_answer(prediction).split()
    for ref in references:
        r = normalize_answer(ref).split()
        if not p or not r:
            best = max(best, float(p == r))
            continue
        common = sum((collections.Counter(p) & collections.Counter(r)).values())
        if common:
            precision, recall = common / len(p), common / len(r)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


class _UnicodeTokenizer:
    """rouge-score's default tokenizer keeps only [a-z0-9] and scores Korean answers as empty; this one keeps
    word characters of every script (lower-cased, no stemming)."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", unicodedata.normalize("NFKC", text).lower())


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-L F-measure (rouge-score), the best over references."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_UnicodeTokenizer())
    return max(scorer.score(r, prediction)["rougeL"].fmeasure for r in references) if references else 0.0


@dataclass
class MetricTable:
    """Per-example statistics of one system: `stats[name]` is an (n, d) array and `aggregate[name]` turns the
    column sums (or means) of a sample of rows into the metric's value."""

    stats: dict[str, np.ndarray]
    aggregate: dict[str, Callable[[np.ndarray], float]]

    def value(self, name: str, rows: np.ndarray | None = None) -> float:
        s = self.stats[name] if rows is None else self.stats[name][rows]
        return self.aggregate[name](s)

    def summary(self) -> dict[str, float]:
        return {name: self.value(name) for name in self.stats}


def _mean(s: np.ndarray) -> float:
    return float(s[:, 0].mean()) if len(s) else float("nan")


def _perplexity(s: np.ndarray) -> float:
    tokens = s[:, 1].sum()
    return float(math.exp(s[:, 0].sum() / tokens)) if tokens else float("nan")


def _bleu_aggregate() -> Callable[[np.ndarray], float]:
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize="intl", effective_order=True)
    return lambda s: float(bleu._compute_score_from_stats(s.sum(axis=0).tolist()).score)


def bleu_stats(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
    """sacrebleu's per-segment BLEU statistics (its own significance tests resample these); `intl`
    tokenisation splits on Unicode punctuation and symbols, so non-Latin scripts are scored too."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize="intl", effective_order=True)
    n_refs = max(len(r) for r in references)
    ref_streams = [[r[i] if i < len(r) else r[0] for r in references] for i in range(n_refs)]
    return np.asarray(bleu._extract_corpus_statistics(list(predictions), ref_streams), dtype=np.float64)


def answer_table(predictions: Sequence[str], references: Sequence[Sequence[str]],
                 nll: Sequence[tuple[float, int]] | None = None, unsafe: Sequence[int] | None = None, *,
                 bertscore_model: str | None = None, bertscore_layer: int | None = None) -> MetricTable:
    """The metric table of one system's answers. `nll` holds (summed negative log-likelihood, tokens) of the
    reference answer per example, for perplexity; `unsafe` 1 per answer that hits the safety blocklist. METEOR
    is there whenever a WordNet is installed (tasks/evaluate/textmetrics.py); BERTScore when `bertscore_model` is set,
    as columns F1 (the metric), precision, recall; `bertscore_layer` None: the encoder's default layer."""
    col = lambda xs: np.asarray(xs, dtype=np.float64).reshape(-1, 1)  # noqa: E731
    stats = {
        "exact_match": col([exact_match(p, r) for p, r in zip(predictions, references, strict=True)]),
        "token_f1": col([token_f1(p, r) for p, r in zip(predictions, references, strict=True)]),
        "rouge_l": col([rouge_l(p, r) for p, r in zip(predictions, references, strict=True)]),
        "bleu": bleu_stats(predictions, references),
        "answer_chars": col([len(p) for p in predictions]),
    }
    if (wn := textmetrics.wordnet()) is not None:
        stats["meteor"] = col([textmetrics.meteor(p, r, wn)
                               for p, r in zip(predictions, references, strict=True)])
    if bertscore_model:
        bs = textmetrics.bertscore(predictions, references, bertscore_model, bertscore_layer)
        stats["bertscore"] = np.column_stack([bs["f1"], bs["precision"], bs["recall"]]).reshape(-1, 3)
    aggregate: dict[str, Callable[[np.ndarray], float]] = {k: _mean for k in stats}
    aggregate["bleu"] = _bleu_aggregate()
    if nll is not None:
        stats["perplexity"] = np.asarray(nll, dtype=np.float64).reshape(-1, 2)
        aggregate["perplexity"] = _perplexity
    if unsafe is not None:
        stats["unsafe"] = col(unsafe)
        aggregate["unsafe"] = lambda s: float(s[:, 0].sum())
    return MetricTable(stats, aggregate)


def paired_bootstrap(candidate: MetricTable, reference: MetricTable, samples: int = 1000, seed: int = 0,
                     confidence: float = 0.95) -> dict[str, dict[str, float]]:
    """Paired bootstrap (Koehn 2004) of candidate − reference for every shared metric: the same resampled
    example indices for both systems, percentile interval, and the share of resamples in which the candidate
    is not better (a one-sided p-value in the metric's direction)."""
    names = [n for n in candidate.stats if n in reference.stats]
    n = len(next(iter(candidate.stats.values())))
    if n == 0:
        return {}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))
    alpha = (1 - confidence) / 2
    out: dict[str, dict[str, float]] = {}
    for name in names:
        if candidate.aggregate[name] is _mean:  # vectorised: column means of the resampled rows
            diffs = candidate.stats[name][idx, 0].mean(axis=1) - reference.stats[name][idx, 0].mean(axis=1)
        else:
            diffs = np.array([candidate.value(name, rows) - reference.value(name, rows) for rows in idx])
        diffs = diffs[np.isfinite(diffs)]
        point = candidate.value(name) - reference.value(name)
        direction = DIRECTION.get(name, 0)
        not_better = float(np.mean(diffs * direction <= 0)) if direction and len(diffs) else float("nan")
        lo, hi = (np.quantile(diffs, [alpha, 1 - alpha]).tolist() if len(diffs) else [float("nan")] * 2)
        out[name] = {"diff": float(point), "ci_low": float(lo), "ci_high": float(hi), "p_not_better": not_better,
                     "candidate": candidate.value(name), "reference": reference.value(name)}
    return out


def as_jsonable(obj: Any) -> Any:
    """NaN and infinities as None, numpy scalars as Python numbers (JSON has neither)."""
    if isinstance(obj, dict):
        return {k: as_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [as_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj

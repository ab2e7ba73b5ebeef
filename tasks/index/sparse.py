"""BM25-style sparse vectors computed locally: a documented tokenizer and a stable term-to-index hash.

Document side: BM25 term-frequency saturation, tf*(k1+1) / (tf + k1*(1 - b + b*len/avglen)). Query side:
weight 1 per distinct term. Qdrant's IDF modifier multiplies both by idf at query time, so the score is
BM25 over the collection as it stands (no vocabulary file, no download).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import xxhash

# Lucene's default English stop set (the one Anserini's BM25 baselines use)
ENGLISH_STOPWORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was", "will", "with"]
)
_TOKEN = re.compile(
    r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+"
)


@dataclass(frozen=True)
class SparseParams:
    k1: float = 0.9   # Anserini's BM25 defaults, used for the BEIR baselines
    b: float = 0.4
    stemmer: str = "english"   # Snowball language (PyStemmer) or "" for none
    stopwords: bool = True


@lru_cache(maxsize=4)
def _stemmer(language: str):
    import Stemmer

    return Stemmer.Stemmer(language)


def analyze(text: str, params: SparseParams = SparseParams()) -> list[str]:  # noqa: B008
    """Lower-case word tokens (one per character in scripts without spaces), stop words out, stemmed."""
    toks = _TOKEN.findall(text.lower())
    if params.stopwords:
        toks = [t for t in toks if t not in ENGLISH_STOPWORDS]
    if params.stemmer and toks:
        toks = _stemmer(params.stemmer).stemWords(toks)
    return toks


def term_index(term: str) -> int:
    """A stable 31-bit index for a term (xxh32), the same in every process and run."""

    return xxhash.xxh32_intdigest(term.encode("utf-8", "surrogatepass")) & 0x7FFFFFFF


def document_vector(tokens: list[str], avg_len: float, params: SparseParams = SparseParams()) -> tuple[list[int], list[float]]:  # noqa: B008
    """BM25 document weights by term index (colliding terms add up)."""
    if not tokens:
        return [], []
    norm = params.k1 * (1 - params.b + params.b * len(tokens) / max(avg_len, 1e-9))
    weights: dict[int, float] = {}
    for term, tf in Counter(tokens).items():
        idx = term_index(term)
        weights[idx] = weights.get(idx, 0.0) + tf * (params.k1 + 1) / (tf + norm)
    idxs = sorted(weights)
    return idxs, [weights[i] for i in idxs]


def query_vector(text: str, params: SparseParams = SparseParams()) -> tuple[list[int], list[float]]:  # noqa: B008
    idxs = sorted({term_index(t) for t in analyze(text, params)})
    return idxs, [1.0] * len(idxs)

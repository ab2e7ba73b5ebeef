"""Synthetic document folders for benchmarks and resume tests: ~2 KB docs with exact and near duplicates."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

_SYLLABLES = ["ka", "ren", "to", "mi", "sol", "bar", "tide", "har", "vel", "on", "quin", "dra", "lo", "pes", "ur"]


def _vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    words = {"".join(rng.choices(_SYLLABLES, k=rng.randint(1, 4))) for _ in range(size * 2)}
    return sorted(words)[:size]


def _document(rng: random.Random, vocab: list[str], cum_weights: list[float], target_bytes: int) -> str:
    parts: list[str] = []
    size = 0
    while size < target_bytes:
        sentence = " ".join(rng.choices(vocab, cum_weights=cum_weights, k=rng.randint(8, 20))).capitalize() + "."
        parts.append(sentence)
        size += len(sentence) + 1
        if rng.random() < 0.15:
            parts.append("\n\n")
    return " ".join(parts).replace(" \n\n ", "\n\n")


def _near(rng: random.Random, text: str, vocab: list[str], fraction: float = 0.01) -> str:
    words = text.split(" ")
    for i in rng.sample(range(len(words)), max(1, int(len(words) * fraction))):
        words[i] = rng.choice(vocab)
    return " ".join(words)


def generate_corpus(root: Path, n: int, exact_dup: float = 0.05, near_dup: float = 0.05, seed: int = 0,
                    doc_bytes: int = 2000) -> dict[str, int]:
    """Write `n` documents under `root` (1,000 per folder); returns how many are unique/exact/near copies."""
    rng = random.Random(seed)
    vocab = _vocabulary(rng)
    cum_weights = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(vocab))))  # Zipf-like, as in prose
    n_exact, n_near = int(n * exact_dup), int(n * near_dup)
    originals: list[str] = []
    counts = {"unique": 0, "exact": 0, "near": 0}
    for i in range(n):
        folder = root / f"part-{i // 1000:03d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        kind = "unique"
        if originals and i >= n - n_exact - n_near:
            kind = "exact" if i >= n - n_exact else "near"
        if kind == "unique":
            text = _document(rng, vocab, cum_weights, doc_bytes)
            if i % 2:  # a heading with the document's number; copies keep it (another number is another document)
                text = f"# Document {i}\n\n{text}"
            originals.append(text)
        elif kind == "exact":
            text = rng.choice(originals)
        else:
            text = _near(rng, rng.choice(originals), vocab)
        counts[kind] += 1
        suffix = ".md" if i % 2 else ".txt"
        (folder / f"doc-{i:06d}{suffix}").write_text(text + "\n", encoding="utf-8")
    return counts

"""Exact and near-duplicate detection: content hashes, and MinHash LSH over token shingles."""

from __future__ import annotations

import hashlib
import re
from difflib import SequenceMatcher
from functools import lru_cache

import numpy as np
import xxhash

# Words in scripts that separate them with spaces; one token per character for scripts that do not
# (CJK ideographs, kana, Thai, Lao, Myanmar, Khmer), so that shingles mean the same in every language.
_TOKEN = re.compile(
    r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+"
)
_U32 = np.uint32
_EMPTY = np.uint32(0xFFFFFFFF)
_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5,
                 0x94D049BB133111EB, 0xBF58476D1CE4E5B9, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53],
                dtype=np.uint64)
SCHEME = "affine32"  # datasketch >= 2.0: a*h+b mod 2^32 after a MurmurHash3 finaliser, no modulo by a prime


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int = 1) -> np.ndarray:
    """The (a, b) coefficients datasketch draws for this scheme and seed (so signatures interoperate),
    drawn the same way here so that worker processes need not import datasketch."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)  # odd: a bijection
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return np.array([a, b])


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser (datasketch applies it before the affine permutations)."""
    h = h ^ (h >> _U32(16))
    h = h * _U32(0x85EBCA6B)
    h = h ^ (h >> _U32(13))
    h = h * _U32(0xC2B2AE35)
    return h ^ (h >> _U32(16))


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def signature(text: str, num_perm: int = 128, shingle_size: int = 5, seed: int = 1,
              toks: list[str] | None = None) -> np.ndarray:
    """MinHash signature (uint32[num_perm]) of the text's token shingles, computed with numpy."""

    toks = tokens(text) if toks is None else toks
    if not toks:
        return np.full(num_perm, _EMPTY, dtype=np.uint32)
    h = np.fromiter((xxhash.xxh64_intdigest(t.encode("utf-8", "surrogatepass")) for t in toks),
                    dtype=np.uint64, count=len(toks))
    k = min(shingle_size, len(h))
    n = len(h) - k + 1
    sh = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):  # an order-sensitive mix of the k token hashes of each shingle
            sh = (sh << np.uint64(7)) | (sh >> np.uint64(57))
            sh ^= h[j:j + n] * _MIX[j % len(_MIX)]
        x = _fmix32((sh >> np.uint64(32)).astype(np.uint32))
        a, b = permutations(num_perm, seed)
        phv = x[:, None] * a[None, :] + b[None, :]
    return phv.min(axis=0)


_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")


def template_key(text: str) -> tuple[tuple[str, ...], str]:
    """A text as a filled-in template: its numbers in order ("4.71", "2026-01-05", "18:00"), and a hash of its
    wording with the numbers taken out."""

    wording = " ".join(_NUMBER.sub("#", text).split())
    return tuple(_NUMBER.findall(text)), hashlib.sha1(wording.encode("utf-8", "surrogatepass")).hexdigest()


def other_values(a: tuple[tuple[str, ...], str], b: tuple[tuple[str, ...], str]) -> bool:
    """Whether two near-identical texts are one template filled with other values: the same wording, and
    numbers that differ where they align (a measurement, a date, a price). A copy that was also edited, or
    whose numbers were only added or removed (an export year in a heading), is a near duplicate."""
    (nums_a, wording_a), (nums_b, wording_b) = a, b
    if nums_a == nums_b or wording_a != wording_b:
        return False

    return any(op == "replace" for op, *_ in SequenceMatcher(None, nums_a, nums_b, autojunk=False).get_opcodes())


class NearDuplicateIndex:
    """Finds, for each new signature, kept documents it nearly duplicates (LSH, then a check of the estimate)."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, seed: int = 1):
        from datasketch import MinHashLSH

        self.threshold = threshold
        self.num_perm = num_perm
        self.seed = seed
        # Candidates are checked against the threshold with their signatures below, so LSH bands are tuned for
        # recall: with equal weights (datasketch's default) 128 permutations at 0.8 band as 9 x 13 and miss 7%
        # of pairs whose Jaccard similarity is 0.9; weighting misses 9:1 bands as 14 x 9 and misses 0.1%.
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))
        self._keys: list[str] = []
        self._row: dict[str, int] = {}
        self._sigs = np.empty((0, num_perm), dtype=np.uint32)  # one row per kept document, grown by doubling

    def _minhash(self, sig: np.ndarray):
        from datasketch import MinHash

        return MinHash(num_perm=self.num_perm, seed=self.seed, hashvalues=sig, scheme=SCHEME,
                       permutations=permutations(self.num_perm, self.seed))

    def matches(self, sig: np.ndarray) -> list[tuple[str, float]]:
        """Kept documents at or above the threshold, most similar first (ties by key)."""
        cands = list(self._lsh.query(self._minhash(sig)))
        if not cands:
            return []
        rows = np.fromiter((self._row[c] for c in cands), dtype=np.int64, count=len(cands))
        sims = (self._sigs[rows] == sig).mean(axis=1)  # every candidate in one vectorised comparison
        found = [(c, float(s)) for c, s in zip(cands, sims, strict=True) if s >= self.threshold]
        return sorted(found, key=lambda m: (-m[1], m[0]))

    def add(self, key: str, sig: np.ndarray) -> None:
        n = len(self._keys)
        if n == len(self._sigs):
            grown = np.empty((max(64, 2 * n), self.num_perm), dtype=np.uint32)
            grown[:n] = self._sigs[:n]
            self._sigs = grown
        self._sigs[n] = sig
        self._row[key] = n
        self._keys.append(key)
        self._lsh.insert(key, self._minhash(sig), check_duplication=False)

    def check_and_add(self, key: str, sig: np.ndarray) -> tuple[str, float] | None:
        """The best kept match above the threshold as (key, similarity); else keep `key` and return None."""
        found = self.matches(sig)
        if not found:
            self.add(key, sig)
            return None
        return found[0]

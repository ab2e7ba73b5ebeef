"""Deterministic splits: a key's hash decides train, validation or test, the same on every run and machine."""

from __future__ import annotations

import hashlib

SPLITS = ("train", "validation", "test")


def split_value(key: str, salt: str = "") -> float:
    """A number in [0, 1) from the key's SHA-256."""
    return int.from_bytes(hashlib.sha256(f"{salt}{key}".encode()).digest()[:8], "big") / 2**64


def assign_split(key: str, validation: float, test: float, salt: str = "") -> str:
    """Deterministic split from a hash of the key: the same key lands in the same split on every run."""
    x = split_value(key, salt)
    return "test" if x < test else "validation" if x < test + validation else "train"


def split_documents(doc_ids: list[str], validation: float, test: float, salt: str = "") -> dict[str, str]:
    """Each document's split by its hash (stable as the corpus grows), except that a corpus of three or more
    documents always gets at least one test and (with validation > 0) one validation document: the lowest
    hashes among the train documents are moved, so a small corpus still has something to evaluate on."""
    out = {d: assign_split(d, validation, test, salt) for d in sorted(set(doc_ids))}
    by_hash = sorted(out, key=lambda d: split_value(d, salt))
    for split, share in (("test", test), ("validation", validation)):
        if len(out) >= 3 and share > 0 and split not in out.values():
            spare = [d for d in by_hash if out[d] == "train"]
            if len(spare) > 1:
                out[spare[0]] = split
    return out

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


"""The parts of bench/gpu_check.py: budget, child processes, model search, steps, worker and report."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the project root: children run there, with it on PYTHONPATH


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as `Type: the last line of its message`, for a record or a table cell."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:limit]

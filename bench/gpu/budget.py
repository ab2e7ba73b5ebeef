"""The step loop of bench/gpu_check.py: a step runs only when its estimate fits in what is left of the budget."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.gpu import one_line

RESERVE_S = 5.0  # kept for writing the results


class Interrupted(Exception):
    """SIGTERM or SIGINT arrived: stop the current child, write what was measured."""


@dataclass
class Budget:
    """The whole run's time budget, on a clock that tests can replace."""

    total_s: float
    clock: Callable[[], float] = time.monotonic
    reserve_s: float = RESERVE_S
    start: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.start = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def remaining(self) -> float:
        return self.total_s - self.elapsed()

    def timeout_for(self, estimate_s: float) -> float | None:
        """The time limit of a step expected to take `estimate_s`, or None when it does not fit. A step may overrun
        its estimate up to three times (at least a minute more) but never past the budget."""
        left = self.remaining() - self.reserve_s
        if estimate_s > left:
            return None
        return min(left, max(3 * estimate_s, estimate_s + 60))


@dataclass
class Step:
    """One measurement: its expected seconds, and how to run it within a time limit."""

    name: str
    estimate: Callable[[], float]
    run: Callable[[float], dict[str, Any]]  # time limit in s -> measurements (may set status "skipped" + reason)


def run_steps(steps: list[Step], budget: Budget, record: Callable[[str, dict[str, Any]], None]) -> None:
    """Run each step that fits the budget; record ok, error (one line) or skipped (with the reason) for each."""
    for step in steps:
        try:
            estimate = float(step.estimate())
        except Exception as exc:  # an estimate that cannot be made: the step cannot run either
            record(step.name, {"status": "error", "error": one_line(exc)})
            continue
        timeout = budget.timeout_for(estimate)
        if timeout is None:
            record(step.name, {"status": "skipped", "estimate_s": round(estimate),
                               "reason": f"needs about {estimate:.0f} s; {max(0.0, budget.remaining()):.0f} s of the "
                                         f"{budget.total_s:.0f} s budget left"})
            continue
        t0 = budget.clock()
        try:
            out = dict(step.run(timeout))
            status = out.pop("status", "ok")
        except Interrupted:
            raise
        except Exception as exc:
            out, status = {"error": one_line(exc)}, "error"
        record(step.name, {"status": status, **out, "estimate_s": round(estimate),
                           "seconds": round(budget.clock() - t0, 1)})

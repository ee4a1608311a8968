"""Repeated timing with the warm-up left out, summarised by percentiles.

One place for the rule every section follows: run the thing a few times untimed (lazy
allocation, kernel selection, caches), then time each repeat on its own and report the median
(and p95 for latency), never a mean that one stall can move.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Seconds of each timed repeat (warm-up excluded)."""

    seconds: tuple[float, ...]

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.seconds, q))

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p95(self) -> float:
        return self.percentile(95)

    @property
    def best(self) -> float:
        return min(self.seconds)


def time_calls(fn: Callable[[], object], *, warmup: int, repeats: int) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times, timing each call."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: expected at least one timed call")
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return Timing(tuple(seconds))


def median(values: Sequence[float]) -> float:
    return float(np.median(values))

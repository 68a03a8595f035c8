"""Percentiles the way the benchmark reports them: nearest-rank, in milliseconds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None when there are none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(seconds: Sequence[float], expected: int | None = None) -> dict[str, Any]:
    """count, p50/p95/p99/max (ms) of latencies in seconds; ``expected`` counts the missing."""
    values = sorted(seconds)

    def ms(q: float) -> float | None:
        v = percentile(values, q)
        return None if v is None else round(v * 1000, 2)

    return {
        "count": len(values),
        "missing": (expected - len(values)) if expected is not None else 0,
        "p50_ms": ms(50),
        "p95_ms": ms(95),
        "p99_ms": ms(99),
        "max_ms": None if not values else round(values[-1] * 1000, 2),
    }

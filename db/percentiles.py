"""One percentile for every figure the project prints, ``report`` and the benchmarks
alike, so that a p95 means the same thing wherever it is read: the nearest rank, the
smallest value that at least a fraction q of the values are at or below. No
interpolation: every figure printed is one that was observed."""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """The q-quantile (0 < q <= 1) of ``values`` by nearest rank; ValueError when empty."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values to take a percentile of")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

"""The one percentile every printed figure uses (``report`` and the benchmarks)."""

from __future__ import annotations

import pytest

from db.percentiles import percentile


def test_a_percentile_is_the_nearest_rank_never_an_interpolation() -> None:
    values = [float(v) for v in range(20, 0, -1)]  # 20 values, in no particular order
    assert percentile(values, 0.5) == 10.0  # the 10th of 20, not 10.5
    assert percentile(values, 0.95) == 19.0
    assert percentile(values, 1.0) == 20.0
    assert percentile(values, 0.01) == 1.0


def test_the_percentile_of_one_value_is_that_value() -> None:
    assert percentile([3.5], 0.5) == percentile([3.5], 0.95) == 3.5


def test_there_is_no_percentile_of_nothing() -> None:
    with pytest.raises(ValueError):
        percentile([], 0.5)

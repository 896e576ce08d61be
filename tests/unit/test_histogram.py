"""experiments.histogram: percentiles against sorted lists, merging, serialisation, bad values."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.histogram import Histogram

values = st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=400)
quantiles = st.sampled_from([1, 10, 25, 50, 75, 90, 95, 99, 99.9, 100])


def nearest_rank(ordered: list[float], q: float) -> float:
    rank = max(1, math.ceil(q / 100 * len(ordered) - 1e-9))
    return ordered[rank - 1]


def tolerance(h: Histogram, exact: float) -> float:
    return exact * 10 ** -h.significant_digits + h.resolution


@settings(max_examples=200, deadline=None)
@given(values, quantiles, st.integers(1, 4))
def test_percentile_within_precision_of_sorted_list(data: list[float], q: float, digits: int) -> None:
    h = Histogram(significant_digits=digits)
    h.record_all(data)
    exact = nearest_rank(sorted(data), q)
    got = h.percentile(q)
    assert got is not None
    assert abs(got - exact) <= tolerance(h, exact), (got, exact)


@settings(max_examples=100, deadline=None)
@given(values, values)
def test_merge_equals_recording_everything(a: list[float], b: list[float]) -> None:
    left, right, both = Histogram(), Histogram(), Histogram()
    left.record_all(a)
    right.record_all(b)
    both.record_all(a + b)
    merged = left + right
    assert merged.count == both.count == len(a) + len(b)
    assert merged.min == both.min and merged.max == both.max
    for q in (50, 90, 99, 99.9):
        assert merged.percentile(q) == both.percentile(q)
    assert left.count == len(a)  # + does not change its operands


@settings(max_examples=100, deadline=None)
@given(values)
def test_round_trips_through_json(data: list[float]) -> None:
    h = Histogram(2, resolution=0.01)
    h.record_all(data)
    again = Histogram.from_dict(json.loads(json.dumps(h.to_dict())))
    assert again == h
    assert again.percentiles() == h.percentiles()


def test_exact_small_values_and_extremes() -> None:
    h = Histogram(resolution=1)
    h.record_all(range(1, 101))
    assert h.percentile(50) == 50
    assert h.percentile(99) == 99
    assert h.percentile(100) == 100
    assert h.percentile(0) == 1
    assert h.mean == pytest.approx(50.5)
    assert h.percentiles() == {"p50": 50, "p90": 90, "p99": 99, "p999": 100}


def test_large_count_keeps_precision_in_little_memory() -> None:
    h = Histogram(3)
    for i in range(200_000):
        h.record((i % 10_000) * 0.37)
    exact_p99 = sorted((i % 10_000) * 0.37 for i in range(10_000))[9899]
    assert abs(h.percentile(99) - exact_p99) <= tolerance(h, exact_p99)  # type: ignore[operator]
    assert len(h.to_dict()["counts"]) < 10_000


def test_cdf_is_monotone_and_ends_at_one() -> None:
    h = Histogram()
    h.record_all([5.0, 1.0, 1.0, 100.0])
    cdf = h.cdf()
    assert [v for v, _ in cdf] == sorted(v for v, _ in cdf)
    assert cdf[0][0] == pytest.approx(1.0, abs=0.001) and cdf[0][1] == 0.5 and cdf[-1] == (100.0, 1.0)
    assert h.fraction_below(5.0) == 0.75
    assert h.fraction_below(0.5) == 0.0


def test_empty_histogram() -> None:
    h = Histogram()
    assert h.percentile(50) is None and h.mean is None and h.cdf() == []
    assert h.summary()["count"] == 0 and h.summary()["p99"] is None


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "3"])
def test_bad_values_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="finite number >= 0"):
        Histogram().record(bad)  # type: ignore[arg-type]


def test_bad_parameters_and_mismatched_merge() -> None:
    with pytest.raises(ValueError, match="significant_digits"):
        Histogram(0)
    with pytest.raises(ValueError, match="resolution"):
        Histogram(resolution=0)
    with pytest.raises(ValueError, match="different parameters"):
        Histogram(2).merge(Histogram(3))
    with pytest.raises(ValueError, match="percentile"):
        Histogram().percentile(101)

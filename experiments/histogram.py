"""An HDR-style histogram: log-linear buckets, percentiles within a fixed relative error at any count.

Values (non-negative floats, e.g. milliseconds) are recorded as integers in units of
``resolution`` (default 0.001: microseconds when values are milliseconds). Integers below
``2 * 10**significant_digits`` (rounded up to a power of two, ``S``) each get their own bucket;
above that, every power-of-two range ``[2**k, 2**(k+1))`` is cut into ``S / 2`` equal buckets,
so a bucket's width is at most ``10**-significant_digits`` of its lower bound. A percentile is
therefore exact to ``max(resolution, value * 10**-significant_digits)`` however many values were
recorded, in memory that grows with the log of the range, not with the count.

Histograms with the same parameters merge (``merge``/``+``) and round-trip through a JSON-able
dict (``to_dict``/``from_dict``). Plain data; not thread-safe; the caller's thread records.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

__all__ = ["Histogram"]


class Histogram:
    """Counts of values in log-linear buckets; see the module docstring."""

    def __init__(self, significant_digits: int = 3, resolution: float = 0.001) -> None:
        if isinstance(significant_digits, bool) or not isinstance(significant_digits, int) or not 1 <= significant_digits <= 5:
            raise ValueError(f"significant_digits must be an integer 1..5, got {significant_digits!r}")
        if not isinstance(resolution, (int, float)) or isinstance(resolution, bool) or not 0 < resolution < math.inf:
            raise ValueError(f"resolution must be a number > 0, got {resolution!r}")
        self.significant_digits = significant_digits
        self.resolution = float(resolution)
        self._sub_bits = math.ceil(math.log2(2 * 10**significant_digits))
        self._sub_count = 1 << self._sub_bits  # S: exact buckets below it
        self._half = self._sub_count >> 1
        self._counts: dict[int, int] = {}
        self.count = 0
        self.total = 0.0  # sum of the recorded values (as given, not bucketed)
        self.min: float | None = None
        self.max: float | None = None

    # -- buckets -------------------------------------------------------------------------

    def _index(self, units: int) -> int:
        if units < self._sub_count:
            return units
        shift = units.bit_length() - self._sub_bits
        return self._sub_count + (shift - 1) * self._half + ((units >> shift) - self._half)

    def _bounds(self, index: int) -> tuple[int, int]:
        """``[low, high)`` of a bucket, in units."""
        if index < self._sub_count:
            return index, index + 1
        j = index - self._sub_count
        shift = j // self._half + 1
        low = (j % self._half + self._half) << shift
        return low, low + (1 << shift)

    # -- recording -----------------------------------------------------------------------

    def record(self, value: float, count: int = 1) -> None:
        """Add ``value`` (``count`` times). Raises ``ValueError`` for a negative or non-finite value."""
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
            raise ValueError(f"a histogram value must be a finite number >= 0, got {value!r}")
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        index = self._index(int(value / self.resolution + 0.5))
        self._counts[index] = self._counts.get(index, 0) + count
        self.count += count
        self.total += value * count
        self.min = value if self.min is None or value < self.min else self.min
        self.max = value if self.max is None or value > self.max else self.max

    def record_all(self, values: Iterable[float]) -> None:
        for value in values:
            self.record(value)

    def record_buckets(self, buckets: Iterable[Sequence[float]], max_value: float | None = None) -> None:
        """Add another histogram's buckets, given as ``(low, high, count)`` (e.g. the media
        engine's per-flow latency buckets, ``FlowStats.latency_buckets``), capped at that
        histogram's exact ``max_value`` when known. Raises ``ValueError`` for a malformed bucket
        (nothing is recorded then).

        Each bucket's count goes in at its upper bound ``high`` (not its midpoint): that is the
        value the engine itself reports for a percentile falling in the bucket (its percentile is
        the bucket's upper bound capped at the exact maximum), so one flow's buckets give back the
        engine's own p50/p99/max, the maximum stays exact, and a latency is never under-reported
        against a target such as Fig. 9's 50 ms. Accuracy is then the source bucket's width: exact
        to the source's unit below its exact range (the engine: 1 us up to 0.128 ms), above that an
        over-estimate by less than 1/64 of the value, plus this histogram's own precision."""
        items: list[tuple[float, int]] = []
        for bucket in buckets:
            if not isinstance(bucket, Sequence) or len(bucket) != 3:
                raise ValueError(f"a bucket must be (low, high, count), got {bucket!r}")
            low, high, n = bucket
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in bucket) or not (
                0 <= low <= high < math.inf and n == int(n) and n >= 1
            ):
                raise ValueError(f"a bucket must be (low <= high, count >= 1), got {bucket!r}")
            items.append((high if max_value is None else max(low, min(high, max_value)), int(n)))
        for value, n in items:
            self.record(value, n)

    def merge(self, other: Histogram) -> Histogram:
        """Add ``other``'s counts into this histogram (same parameters required); returns self."""
        if (other.significant_digits, other.resolution) != (self.significant_digits, self.resolution):
            raise ValueError(
                "cannot merge histograms with different parameters: "
                f"({self.significant_digits}, {self.resolution}) vs ({other.significant_digits}, {other.resolution})"
            )
        for index, n in other._counts.items():
            self._counts[index] = self._counts.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        for bound in (other.min, other.max):
            if bound is not None:
                self.min = bound if self.min is None or bound < self.min else self.min
                self.max = bound if self.max is None or bound > self.max else self.max
        return self

    def __add__(self, other: Histogram) -> Histogram:
        return self.copy().merge(other)

    def copy(self) -> Histogram:
        return Histogram.from_dict(self.to_dict())

    # -- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.count

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def _buckets(self) -> Iterator[tuple[int, int]]:
        return iter(sorted(self._counts.items()))

    def _value_of(self, index: int) -> float:
        """A bucket's representative value: its midpoint, clamped to the exact min/max."""
        low, high = self._bounds(index)
        mid = (low + high - 1) / 2 * self.resolution
        assert self.min is not None and self.max is not None
        return min(max(mid, self.min), self.max)

    def percentile(self, q: float) -> float | None:
        """The nearest-rank ``q``-th percentile (0 < q <= 100; rank ``ceil(q/100 * count)``), within
        the histogram's precision; ``None`` when empty. ``q = 100`` is the exact maximum."""
        if not 0 <= q <= 100:
            raise ValueError(f"a percentile must be 0..100, got {q}")
        if not self.count:
            return None
        if q >= 100:
            return self.max
        if q <= 0:
            return self.min
        rank = max(1, math.ceil(q / 100 * self.count - 1e-9))
        seen = 0
        for index, n in self._buckets():
            seen += n
            if seen >= rank:
                return self._value_of(index)
        return self.max  # pragma: no cover  (counts always add up to count)

    def percentiles(self, qs: Iterable[float] = (50, 90, 99, 99.9)) -> dict[str, float | None]:
        """``{"p50": ..., "p90": ..., "p99": ..., "p999": ...}`` (the key drops the decimal point)."""
        return {_key(q): self.percentile(q) for q in qs}

    def fraction_below(self, value: float) -> float:
        """The fraction of recorded values <= ``value`` (within the histogram's precision)."""
        if not self.count:
            return 0.0
        limit = int(value / self.resolution + 0.5)
        below = sum(n for index, n in self._counts.items() if self._bounds(index)[0] <= limit)
        return below / self.count

    def cdf(self) -> list[tuple[float, float]]:
        """``(value, fraction of values <= value)`` per non-empty bucket, ascending; ``value`` is
        the bucket's upper end (the exact maximum for the last one)."""
        out: list[tuple[float, float]] = []
        seen = 0
        assert self.count == 0 or self.max is not None
        for index, n in self._buckets():
            seen += n
            high = (self._bounds(index)[1] - 0.5) * self.resolution
            out.append((min(max(high, self.min or 0.0), self.max or 0.0), seen / self.count))
        return out

    def summary(self, digits: int = 3) -> dict[str, Any]:
        """``count``, ``mean``, ``min``, ``p50``, ``p90``, ``p99``, ``p999``, ``max`` (rounded)."""
        out: dict[str, Any] = {"count": self.count, "mean": _round(self.mean, digits), "min": _round(self.min, digits)}
        out.update({k: _round(v, digits) for k, v in self.percentiles().items()})
        out["max"] = _round(self.max, digits)
        return out

    # -- serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "significant_digits": self.significant_digits,
            "resolution": self.resolution,
            "count": self.count,
            "total": self.total,
            "min": self.min,
            "max": self.max,
            "counts": {str(index): n for index, n in self._buckets()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Histogram:
        histogram = cls(int(data["significant_digits"]), float(data["resolution"]))
        histogram._counts = {int(index): int(n) for index, n in data.get("counts", {}).items()}
        histogram.count = sum(histogram._counts.values())
        if histogram.count != int(data.get("count", histogram.count)):
            raise ValueError("histogram counts do not add up to its count")
        histogram.total = float(data.get("total", 0.0))
        histogram.min = data.get("min")
        histogram.max = data.get("max")
        return histogram

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Histogram) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Histogram(count={self.count}, p50={self.percentile(50)}, max={self.max})"


def _key(q: float) -> str:
    return "p" + (f"{q:g}".replace(".", ""))


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)

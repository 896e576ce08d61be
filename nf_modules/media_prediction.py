"""Metadata prediction for the Media Update's prefetch (paper ``004`` section VI-A, Algorithm 1).

Sans-IO: plain classes fed with observed metadata sets, no clock, no I/O.

A *metadata set* is a mapping from a metadata name (:data:`METADATA_KEYS`: mean payload size in
bytes, packets per second, interarrival jitter in ms) to its value for one flow over one metadata
interval, as the Media Processor measured it.

* :class:`DeltaPredictor` is Algorithm 1's first part ("Predict"): for every value ``m``,
  ``delta m = m - m_previous`` and ``m_new = delta m + m + i``, where ``i`` is the prediction
  error of the last prediction (``m - m_predicted``; 0 before the first prediction). One
  predicted set per observation.
* :class:`SmoothingPredictor` is the second part ("Predict with Optimization"): exponential
  smoothing of the history with one constant ``0 < alpha <= 1`` ("recent observations are given
  relatively more weight"), forecasting a *series* of future sets, a batch of ``batch`` (5 by
  default). A flat forecast would make a batch of identical sets, so the series uses the
  smoothed trend too (Holt's linear method, with the paper's single ``alpha`` for both level and
  trend)::

      first observation x0:  level = x0, trend = 0
      then, for x_t:          level_t = alpha x_t + (1 - alpha)(level_t-1 + trend_t-1)
                              trend_t = alpha (level_t - level_t-1) + (1 - alpha) trend_t-1
      batch k = 1..batch:     level + k * trend

:func:`distance` and :func:`closest` pick, among prefetched sets, the one nearest an actual set
("replies respective control instruction (as closest as possible) from prefetched control
instructions set").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = [
    "METADATA_KEYS",
    "DeltaPredictor",
    "MetadataSet",
    "SmoothingPredictor",
    "closest",
    "distance",
    "metadata_set",
]

#: The metadata values a set holds, the ones media scripts decide on.
METADATA_KEYS: tuple[str, ...] = ("payload_size", "packet_rate", "jitter_ms")

MetadataSet = dict[str, float]


def metadata_set(values: Mapping[str, object]) -> MetadataSet:
    """The :data:`METADATA_KEYS` of ``values`` as floats; ``ValueError`` naming a missing or
    non-finite value."""
    out: MetadataSet = {}
    for key in METADATA_KEYS:
        value = values.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"metadata value {key!r} must be a finite number, got {value!r:.40}")
        out[key] = float(value)
    return out


class DeltaPredictor:
    """Algorithm 1, lines 2-9: ``m_new = (m - m_previous) + m + i`` for every value."""

    __slots__ = ("previous", "predicted")

    def __init__(self) -> None:
        self.previous: MetadataSet | None = None
        self.predicted: MetadataSet | None = None

    def error(self, actual: Mapping[str, float]) -> MetadataSet:
        """``i``: the actual set minus the last prediction (zeros before any prediction)."""
        if self.predicted is None:
            return {key: 0.0 for key in actual}
        return {key: actual[key] - self.predicted[key] for key in actual}

    def observe(self, actual: Mapping[str, float]) -> MetadataSet:
        """Take the newest measured set; return the predicted next one."""
        i = self.error(actual)
        previous = self.previous or actual
        predicted = {key: (m - previous[key]) + m + i[key] for key, m in actual.items()}
        self.previous = dict(actual)
        self.predicted = predicted
        return dict(predicted)


class SmoothingPredictor:
    """Algorithm 1, lines 10-16: exponential smoothing, a batch of forecast sets (see the module
    docstring). ``ValueError`` for ``alpha`` outside ``(0, 1]`` or ``batch < 1``."""

    __slots__ = ("alpha", "batch", "level", "trend", "observed")

    def __init__(self, alpha: float = 0.5, batch: int = 5) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an int >= 1, got {batch!r}")
        self.alpha = float(alpha)
        self.batch = batch
        self.level: MetadataSet | None = None
        self.trend: MetadataSet = {}
        self.observed = 0

    def observe(self, actual: Mapping[str, float]) -> None:
        """Fold the newest measured set into the smoothed level and trend."""
        a = self.alpha
        self.observed += 1
        if self.level is None:
            self.level = dict(actual)
            self.trend = {key: 0.0 for key in actual}
            return
        level, trend = self.level, self.trend
        new_level = {k: a * x + (1 - a) * (level[k] + trend[k]) for k, x in actual.items()}
        self.trend = {k: a * (new_level[k] - level[k]) + (1 - a) * trend[k] for k in actual}
        self.level = new_level

    def forecast(self) -> list[MetadataSet]:
        """The next ``batch`` sets (``level + k * trend``, k = 1..batch); empty before any
        observation."""
        if self.level is None:
            return []
        return [{k: v + step * self.trend[k] for k, v in self.level.items()} for step in range(1, self.batch + 1)]


def distance(actual: Mapping[str, float], predicted: Mapping[str, float]) -> float:
    """Sum over the values of ``|actual - predicted| / max(|actual|, |predicted|, 1)``: scale-free,
    so 10 bytes of payload and 10 packets/s weigh by their size, not their unit."""
    total = 0.0
    for key, value in actual.items():
        other = predicted.get(key, 0.0)
        total += abs(value - other) / max(abs(value), abs(other), 1.0)
    return total


def closest(actual: Mapping[str, float], candidates: Sequence[Mapping[str, float]]) -> tuple[int, float]:
    """``(index, distance)`` of the candidate nearest ``actual`` (first one on ties);
    ``(-1, inf)`` when there is none."""
    best, best_distance = -1, math.inf
    for index, candidate in enumerate(candidates):
        d = distance(actual, candidate)
        if d < best_distance:
            best, best_distance = index, d
    return best, best_distance

"""Restart policy arithmetic for supervisors: intensity windows and backoff.

Plain classes that take ``now``; the supervisor feeds them its loop's time and
tests feed them exact numbers.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

__all__ = ["Backoff", "RestartIntensity"]


class RestartIntensity:
    """Erlang's restart intensity: at most ``intensity`` restarts in ``period`` seconds.

    ``record(now)`` notes one restart and says whether it is allowed; the
    ``intensity + 1``-th restart inside any window of ``period`` seconds is
    refused, and the supervisor then gives up (Erlang defaults: 1 in 5 s).
    """

    def __init__(self, intensity: int = 1, period: float = 5.0) -> None:
        if intensity < 0:
            raise ValueError(f"intensity: expected >= 0, got {intensity}")
        if period <= 0:
            raise ValueError(f"period: expected > 0 seconds, got {period}")
        self.intensity = intensity
        self.period = period
        self._restarts: deque[float] = deque()

    def record(self, now: float) -> bool:
        """Note a restart at ``now``; ``False`` means the limit is exceeded."""
        while self._restarts and self._restarts[0] <= now - self.period:
            self._restarts.popleft()
        self._restarts.append(now)
        return len(self._restarts) <= self.intensity

    def recent(self, now: float) -> int:
        """Restarts inside the window ending at ``now``."""
        return sum(1 for t in self._restarts if t > now - self.period)


@dataclass(frozen=True)
class Backoff:
    """Delay before a restart: ``min(max, min * 2**attempt) * (1 + u * random_factor)``.

    ``attempt`` counts restarts still inside the intensity window before this
    one (0 for the first), as Akka's backoff supervisor does; ``u`` is uniform
    in [0, 1) from a seeded generator. ``min=0`` restarts at once (Erlang).
    """

    min: float = 0.0
    max: float = 0.0
    random_factor: float = 0.0

    def __post_init__(self) -> None:
        if self.min < 0:
            raise ValueError(f"backoff.min: expected >= 0 seconds, got {self.min}")
        if self.max < self.min:
            raise ValueError(f"backoff.max: expected >= min ({self.min}), got {self.max}")
        if not 0 <= self.random_factor <= 1:
            raise ValueError(f"backoff.random_factor: expected 0..1, got {self.random_factor}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        if self.min == 0:
            return 0.0
        base = min(self.max, self.min * (2**attempt))
        return base * (1 + rng.random() * self.random_factor)

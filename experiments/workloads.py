"""Workloads: when calls start, how long they are held, who calls whom. Plain, seeded, validated.

- **Call-rate profiles** (calls/s over the run's time, in emulated seconds), all piecewise
  linear underneath: :class:`Constant`, :class:`Ramp` (``004`` VIII-A: start at 2 calls/s and
  add one call/s each second, to a maximum), :class:`Steps` ((duration, rate) segments),
  :class:`Table` (an arbitrary (time, rate) table, step or linear between points), and
  :func:`users_per_second` (ScalIMS's generator, ``001`` VI: 1 -> 15 -> 6 users/s, one change
  per change interval). ``profile.arrivals(seed, poisson=...)`` gives the call start times:
  evenly paced (the k-th call when the integral of the rate reaches k) or a Poisson process
  of that rate (time rescaling).
- **Holding times**: :class:`Fixed`, :class:`Exponential`, :class:`Uniform` (``sample(rng)``).
- **Callee selection**: :class:`RandomPair`, :class:`RoundRobin` (``next_pair()``).
- **Registration storms**: :class:`RegistrationStorm` (``schedule()``: (time, user)).

A bad value raises :class:`WorkloadError` naming the field (``ramp: max_rate 1 < start_rate 2``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "SELECTORS",
    "CallPlan",
    "CalleeSelector",
    "Constant",
    "Exponential",
    "Fixed",
    "HoldingTime",
    "RandomPair",
    "Ramp",
    "RateProfile",
    "RegistrationStorm",
    "RoundRobin",
    "Segment",
    "Steps",
    "Table",
    "Uniform",
    "WorkloadError",
    "holding_time",
    "plan_calls",
    "profile_from_dict",
    "users_per_second",
]


class WorkloadError(ValueError):
    """A workload that cannot be run; the message names the field."""


def _number(where: str, value: Any, *, lo: float = 0.0, lo_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= lo if lo_open else value < lo):
        raise WorkloadError(f"{where}: expected a number {'>' if lo_open else '>='} {lo:g}, got {value!r}")
    return float(value)


# =============================================================================== rate profiles


@dataclass(frozen=True)
class Segment:
    """Rate going linearly from ``r0`` at ``t0`` to ``r1`` at ``t1`` (calls/s)."""

    t0: float
    t1: float
    r0: float
    r1: float

    def calls(self) -> float:
        return (self.r0 + self.r1) / 2 * (self.t1 - self.t0)

    def time_at(self, area: float) -> float:
        """The time in this segment where the integral from ``t0`` reaches ``area``."""
        slope = (self.r1 - self.r0) / (self.t1 - self.t0)
        if abs(slope) < 1e-12:
            return self.t0 + area / self.r0
        # r0*x + slope/2*x^2 = area, the root in [0, t1 - t0]
        disc = max(0.0, self.r0 * self.r0 + 2 * slope * area)
        return self.t0 + (math.sqrt(disc) - self.r0) / slope


class RateProfile:
    """Calls/s over emulated time, as piecewise-linear :class:`Segment` s from 0 to ``duration``."""

    kind = "profile"

    def segments(self) -> list[Segment]:
        raise NotImplementedError

    @property
    def duration(self) -> float:
        segments = self.segments()
        return segments[-1].t1 if segments else 0.0

    def rate_at(self, t: float) -> float:
        for s in self.segments():
            if s.t0 <= t < s.t1:
                return s.r0 + (s.r1 - s.r0) * (t - s.t0) / (s.t1 - s.t0)
        return 0.0

    @property
    def max_rate(self) -> float:
        return max((max(s.r0, s.r1) for s in self.segments()), default=0.0)

    def expected_calls(self) -> float:
        return sum(s.calls() for s in self.segments())

    def arrivals(self, seed: int = 0, *, poisson: bool = False) -> Iterator[float]:
        """Call start times in ``[0, duration)``: paced (the k-th call where the integrated rate
        reaches k, k = 0, 1, ...) or, with ``poisson``, a Poisson process of this rate."""
        rng = random.Random(seed)
        target = rng.expovariate(1.0) if poisson else 0.0
        done = 0.0  # integral of the rate up to the current segment's start
        for segment in self.segments():
            area = segment.calls()
            while target < done + area - 1e-9:
                yield segment.time_at(target - done)
                target += rng.expovariate(1.0) if poisson else 1.0
            done += area

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.kind}: {self.expected_calls():.0f} calls over {self.duration:g} s, peak {self.max_rate:g}/s"


@dataclass(frozen=True)
class Constant(RateProfile):
    """``rate`` calls/s for ``duration`` seconds."""

    rate: float
    seconds: float
    kind = "constant"

    def __post_init__(self) -> None:
        _number("constant: rate", self.rate, lo_open=True)
        _number("constant: duration", self.seconds, lo_open=True)

    def segments(self) -> list[Segment]:
        return [Segment(0.0, self.seconds, self.rate, self.rate)]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rate": self.rate, "duration": self.seconds}


@dataclass(frozen=True)
class Ramp(RateProfile):
    """``004`` VIII-A: ``start_rate`` calls/s for the first ``interval`` s, ``step`` more each
    ``interval`` after, up to ``max_rate``; the run lasts ``seconds`` (default: until the first
    interval at ``max_rate`` is over). The rate is a staircase, as a script dialling N calls in
    second N would make it."""

    start_rate: float = 2.0
    step: float = 1.0
    max_rate: float = 10.0
    interval: float = 1.0
    seconds: float | None = None
    kind = "ramp"

    def __post_init__(self) -> None:
        _number("ramp: start_rate", self.start_rate, lo_open=True)
        _number("ramp: step", self.step)
        _number("ramp: max_rate", self.max_rate, lo_open=True)
        _number("ramp: interval", self.interval, lo_open=True)
        if self.max_rate < self.start_rate:
            raise WorkloadError(
                f"ramp: the ramp ends before it starts (max_rate {self.max_rate:g} < start_rate {self.start_rate:g})"
            )
        if self.step == 0 and self.seconds is None and self.max_rate > self.start_rate:
            raise WorkloadError("ramp: step 0 never reaches max_rate; give a duration")
        if self.seconds is not None:
            _number("ramp: duration", self.seconds, lo_open=True)

    @property
    def ramp_seconds(self) -> float:
        """Seconds until the rate first reaches ``max_rate`` plus that interval."""
        steps = 0 if self.step == 0 else math.ceil((self.max_rate - self.start_rate) / self.step - 1e-9)
        return (steps + 1) * self.interval

    def segments(self) -> list[Segment]:
        end = self.seconds if self.seconds is not None else self.ramp_seconds
        out: list[Segment] = []
        t, rate = 0.0, self.start_rate
        while t < end - 1e-12:
            nxt = min(end, t + self.interval)
            if rate >= self.max_rate:
                nxt = end  # flat from here on
            r = min(rate, self.max_rate)
            out.append(Segment(t, nxt, r, r))
            t, rate = nxt, rate + self.step
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "start_rate": self.start_rate, "step": self.step, "max_rate": self.max_rate,
                "interval": self.interval, "duration": self.seconds}


@dataclass(frozen=True)
class Steps(RateProfile):
    """Consecutive ``(duration, rate)`` steps."""

    steps: tuple[tuple[float, float], ...]
    kind = "steps"

    def __post_init__(self) -> None:
        if not self.steps:
            raise WorkloadError("steps: expected at least one (duration, rate) step")
        for i, step in enumerate(self.steps):
            if len(step) != 2:
                raise WorkloadError(f"steps[{i}]: expected (duration, rate), got {step!r}")
            _number(f"steps[{i}].duration", step[0], lo_open=True)
            _number(f"steps[{i}].rate", step[1])

    def segments(self) -> list[Segment]:
        out, t = [], 0.0
        for seconds, rate in self.steps:
            out.append(Segment(t, t + seconds, rate, rate))
            t += seconds
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "steps": [list(s) for s in self.steps]}


@dataclass(frozen=True)
class Table(RateProfile):
    """An arbitrary ``(time, rate)`` table from time 0, ending at ``end`` (default: the last time
    + 1 s): the rate holds until the next point (``interpolate="step"``) or goes linearly to it
    (``"linear"``)."""

    points: tuple[tuple[float, float], ...]
    end: float | None = None
    interpolate: str = "step"
    kind = "table"

    def __post_init__(self) -> None:
        if not self.points:
            raise WorkloadError("table: expected at least one (time, rate) point")
        if self.interpolate not in ("step", "linear"):
            raise WorkloadError(f'table: interpolate must be "step" or "linear", got {self.interpolate!r}')
        last = -1.0
        for i, point in enumerate(self.points):
            if len(point) != 2:
                raise WorkloadError(f"table[{i}]: expected (time, rate), got {point!r}")
            t = _number(f"table[{i}].time", point[0])
            _number(f"table[{i}].rate", point[1])
            if i == 0 and t != 0:
                raise WorkloadError(f"table[0].time: the table must start at time 0, got {t:g}")
            if t <= last:
                raise WorkloadError(f"table[{i}].time: times must increase, got {t:g} after {last:g}")
            last = t
        if self.end is not None and _number("table: end", self.end) <= last:
            raise WorkloadError(f"table: end {self.end:g} must come after the last time {last:g}")

    def segments(self) -> list[Segment]:
        end = self.end if self.end is not None else self.points[-1][0] + 1.0
        out = []
        for i, (t, rate) in enumerate(self.points):
            t1, r1 = (self.points[i + 1] if i + 1 < len(self.points) else (end, rate))
            out.append(Segment(t, t1, rate, r1 if self.interpolate == "linear" else rate))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "points": [list(p) for p in self.points], "end": self.end,
                "interpolate": self.interpolate}


def users_per_second(start: float = 1, peak: float = 15, end: float = 6, change_interval: float = 10.0) -> Steps:
    """ScalIMS's traffic generator (``001`` VI, "Simultaneous Start"): users/s from ``start``
    up by one per change interval to ``peak``, then down by one to ``end``. Each user places
    one call."""
    for name, value in (("start", start), ("peak", peak), ("end", end)):
        _number(f"users_per_second: {name}", value, lo_open=True)
    _number("users_per_second: change_interval", change_interval, lo_open=True)
    if peak < start or peak < end:
        raise WorkloadError(f"users_per_second: peak {peak:g} is below start {start:g} or end {end:g}")
    rates = [start + i for i in range(int(peak - start) + 1)]
    rates += [peak - i for i in range(1, int(peak - end) + 1)]
    return Steps(tuple((change_interval, r) for r in rates))


def profile_from_dict(data: dict[str, Any]) -> RateProfile:
    """The inverse of ``to_dict`` (for ``rerun``)."""
    kind = data.get("kind")
    if kind == "constant":
        return Constant(data["rate"], data["duration"])
    if kind == "ramp":
        return Ramp(data["start_rate"], data["step"], data["max_rate"], data.get("interval", 1.0), data.get("duration"))
    if kind == "steps":
        return Steps(tuple(tuple(s) for s in data["steps"]))  # type: ignore[misc]
    if kind == "table":
        return Table(tuple(tuple(p) for p in data["points"]), data.get("end"), data.get("interpolate", "step"))  # type: ignore[misc]
    raise WorkloadError(f"profile.kind: unknown profile {kind!r} (constant, ramp, steps, table)")


# =============================================================================== holding times


class HoldingTime(Protocol):
    def sample(self, rng: random.Random) -> float: ...
    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Fixed:
    """Every call is held ``seconds``."""

    seconds: float

    def __post_init__(self) -> None:
        _number("hold", self.seconds)

    def sample(self, rng: random.Random) -> float:
        return self.seconds

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "fixed", "seconds": self.seconds}


@dataclass(frozen=True)
class Exponential:
    """Holding times exponentially distributed with mean ``mean`` seconds (the classic telephony model)."""

    mean: float

    def __post_init__(self) -> None:
        _number("hold: mean", self.mean, lo_open=True)

    def sample(self, rng: random.Random) -> float:
        return rng.expovariate(1.0 / self.mean)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "exponential", "mean": self.mean}


@dataclass(frozen=True)
class Uniform:
    """Holding times uniform in ``[low, high]`` seconds."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _number("hold: low", self.low)
        _number("hold: high", self.high)
        if self.high < self.low:
            raise WorkloadError(f"hold: high {self.high:g} < low {self.low:g}")

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "uniform", "low": self.low, "high": self.high}


def holding_time(spec: str | float | dict[str, Any]) -> HoldingTime:
    """From a number (fixed seconds), ``"exp:MEAN"``, ``"uniform:LOW:HIGH"``, ``"fixed:S"`` or a
    ``to_dict`` dict."""
    if isinstance(spec, dict):
        kind = spec.get("kind")
        if kind == "fixed":
            return Fixed(spec["seconds"])
        if kind == "exponential":
            return Exponential(spec["mean"])
        if kind == "uniform":
            return Uniform(spec["low"], spec["high"])
        raise WorkloadError(f"hold.kind: unknown holding time {kind!r} (fixed, exponential, uniform)")
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Fixed(float(spec))
    if not isinstance(spec, str):
        raise WorkloadError(f"hold: expected seconds, exp:MEAN or uniform:LOW:HIGH, got {spec!r}")
    parts = spec.split(":")
    try:
        numbers = [float(p) for p in parts[1:]] if len(parts) > 1 else [float(parts[0])]
    except ValueError:
        raise WorkloadError(f"hold: expected seconds, exp:MEAN or uniform:LOW:HIGH, got {spec!r}") from None
    kind = parts[0].lower() if len(parts) > 1 else "fixed"
    if kind == "fixed" and len(numbers) == 1:
        return Fixed(numbers[0])
    if kind in ("exp", "exponential") and len(numbers) == 1:
        return Exponential(numbers[0])
    if kind == "uniform" and len(numbers) == 2:
        return Uniform(numbers[0], numbers[1])
    raise WorkloadError(f"hold: expected seconds, exp:MEAN or uniform:LOW:HIGH, got {spec!r}")


# =============================================================================== who calls whom


class CalleeSelector:
    """Chooses ``(caller, callee)`` pairs among ``users`` (two distinct users each time)."""

    kind = "selector"

    def __init__(self, users: Sequence[str], seed: int = 0) -> None:
        users = list(users)
        if len(users) < 2:
            raise WorkloadError(f"callee selection: needs at least 2 users, got {len(users)}")
        if len(set(users)) != len(users):
            raise WorkloadError("callee selection: a user is listed twice")
        self.users = users
        self.rng = random.Random(seed)

    def next_pair(self) -> tuple[str, str]:
        raise NotImplementedError


class RandomPair(CalleeSelector):
    """A caller and a different callee, uniformly at random (seeded)."""

    kind = "random"

    def next_pair(self) -> tuple[str, str]:
        caller, callee = self.rng.sample(self.users, 2)
        return caller, callee


class RoundRobin(CalleeSelector):
    """Users in turn, two by two: (u1, u2), (u3, u4), ... wrapping around."""

    kind = "round_robin"

    def __init__(self, users: Sequence[str], seed: int = 0) -> None:
        super().__init__(users, seed)
        self._next = 0

    def next_pair(self) -> tuple[str, str]:
        n = len(self.users)
        caller, callee = self.users[self._next % n], self.users[(self._next + 1) % n]
        self._next = (self._next + 2) % (2 * n)
        return caller, callee


SELECTORS: dict[str, type[CalleeSelector]] = {"random": RandomPair, "round_robin": RoundRobin}


# =============================================================================== registrations


@dataclass(frozen=True)
class RegistrationStorm:
    """``users`` register at ``rate`` per second starting ``at`` seconds (all at once with
    ``rate=None``), optionally with uniform ``jitter`` seconds each (seeded)."""

    users: tuple[str, ...]
    rate: float | None = None
    at: float = 0.0
    jitter: float = 0.0
    seed: int = 0
    expires: int = 600

    def __post_init__(self) -> None:
        if not self.users:
            raise WorkloadError("registration storm: no users")
        if self.rate is not None:
            _number("registration storm: rate", self.rate, lo_open=True)
        _number("registration storm: at", self.at)
        _number("registration storm: jitter", self.jitter)
        if isinstance(self.expires, bool) or not isinstance(self.expires, int) or self.expires < 1:
            raise WorkloadError(f"registration storm: expires must be an integer >= 1, got {self.expires!r}")

    def schedule(self) -> list[tuple[float, str]]:
        rng = random.Random(self.seed)
        out = []
        for i, user in enumerate(self.users):
            t = self.at + (i / self.rate if self.rate else 0.0) + (rng.uniform(0, self.jitter) if self.jitter else 0.0)
            out.append((t, user))
        return sorted(out)


@dataclass
class CallPlan:
    """One planned call: when (emulated s from the start), who calls whom, held how long."""

    at: float
    caller: str
    callee: str
    hold: float
    index: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def plan_calls(
    profile: RateProfile, hold: HoldingTime, selector: CalleeSelector, *, seed: int = 0,
    poisson: bool = False, limit: int | None = None,
) -> list[CallPlan]:
    """Every call of a run, in start order (at most ``limit``)."""
    rng = random.Random(seed + 1)
    plans: list[CallPlan] = []
    for i, at in enumerate(profile.arrivals(seed, poisson=poisson)):
        if limit is not None and i >= limit:
            break
        caller, callee = selector.next_pair()
        plans.append(CallPlan(at, caller, callee, hold.sample(rng), i))
    return plans

"""experiments.workloads: rate profiles and their arrivals, holding times, callee selection, storms."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.workloads import (
    CallPlan,
    Constant,
    Exponential,
    Fixed,
    RandomPair,
    Ramp,
    RegistrationStorm,
    RoundRobin,
    Steps,
    Table,
    Uniform,
    WorkloadError,
    holding_time,
    plan_calls,
    profile_from_dict,
    users_per_second,
)


def per_second(times: list[float]) -> list[int]:
    counts = Counter(int(t + 1e-9) for t in times)
    return [counts[i] for i in range(max(counts) + 1)]


def test_ramp_is_the_papers_staircase() -> None:
    ramp = Ramp(start_rate=2, step=1, max_rate=6)
    assert ramp.duration == 5.0
    assert [ramp.rate_at(t) for t in (0, 0.99, 1, 2.5, 4.2)] == [2, 2, 3, 4, 6]
    assert per_second(list(ramp.arrivals())) == [2, 3, 4, 5, 6]
    assert ramp.expected_calls() == 20


def test_ramp_holds_at_max_for_its_duration_and_caps_the_last_step() -> None:
    ramp = Ramp(start_rate=2, step=3, max_rate=6, seconds=5)
    assert per_second(list(ramp.arrivals())) == [2, 5, 6, 6, 6]
    assert ramp.max_rate == 6


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Ramp(start_rate=5, max_rate=2), "ends before it starts"),
        (lambda: Ramp(start_rate=-1), "start_rate"),
        (lambda: Ramp(step=-1), "step"),
        (lambda: Ramp(step=0, start_rate=1, max_rate=2), "never reaches"),
        (lambda: Constant(0, 10), "rate"),
        (lambda: Constant(5, -1), "duration"),
        (lambda: Steps(()), "at least one"),
        (lambda: Steps(((1, -2),)), r"steps\[0\].rate"),
        (lambda: Table(((1, 2),)), "start at time 0"),
        (lambda: Table(((0, 1), (0, 2))), "must increase"),
        (lambda: Table(((0, 1),), end=0), "must come after"),
        (lambda: Table(((0, 1),), interpolate="cubic"), "interpolate"),
        (lambda: users_per_second(start=5, peak=3), "peak"),
    ],
)
def test_impossible_profiles_name_the_field(make: object, message: str) -> None:
    with pytest.raises(WorkloadError, match=message):
        make()  # type: ignore[operator]


def test_constant_steps_and_tables() -> None:
    assert len(list(Constant(4, 2.5).arrivals())) == 10
    assert per_second(list(Steps(((1, 2), (2, 5))).arrivals())) == [2, 5, 5]
    table = Table(((0, 2), (2, 4)), end=3)
    assert per_second(list(table.arrivals())) == [2, 2, 4]
    linear = Table(((0, 0), (2, 4)), end=3, interpolate="linear")
    assert linear.rate_at(1) == 2 and linear.rate_at(2.5) == 4
    assert linear.expected_calls() == pytest.approx(8)  # 4 on the slope, then 4/s for 1 s
    assert list(linear.arrivals()) == pytest.approx([0.0, 1.0, 2**0.5, 3**0.5, 2.0, 2.25, 2.5, 2.75])


def test_users_per_second_like_scalims() -> None:
    profile = users_per_second(start=1, peak=4, end=2, change_interval=2)
    assert [rate for _, rate in profile.steps] == [1, 2, 3, 4, 3, 2]
    assert profile.duration == 12


@settings(max_examples=60, deadline=None)
@given(st.floats(0.5, 50), st.floats(1, 20), st.integers(0, 2**31))
def test_poisson_arrivals_are_seeded_sorted_and_near_the_rate(rate: float, seconds: float, seed: int) -> None:
    profile = Constant(rate, seconds)
    first = list(profile.arrivals(seed, poisson=True))
    assert first == list(profile.arrivals(seed, poisson=True))
    assert first == sorted(first)
    assert all(0 <= t < seconds for t in first)
    expected = rate * seconds
    assert abs(len(first) - expected) < 6 * expected**0.5 + 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.1, 5), st.floats(0, 30)), min_size=1, max_size=6))
def test_paced_arrivals_match_the_integral(steps: list[tuple[float, float]]) -> None:
    profile = Steps(tuple(steps))
    times = list(profile.arrivals())
    assert abs(len(times) - profile.expected_calls()) <= 1
    assert times == sorted(times)
    for t in times:
        assert profile.rate_at(t) > 0


def test_profiles_round_trip_through_dicts() -> None:
    for profile in (Ramp(2, 1, 7, seconds=9), Constant(3, 4), Steps(((1, 2),)), Table(((0, 1), (3, 2)), 5, "linear")):
        again = profile_from_dict(profile.to_dict())
        assert again == profile
    with pytest.raises(WorkloadError, match="unknown profile"):
        profile_from_dict({"kind": "sine"})


def test_holding_times() -> None:
    rng = random.Random(3)
    assert Fixed(2).sample(rng) == 2
    samples = [Exponential(2.0).sample(rng) for _ in range(20_000)]
    assert sum(samples) / len(samples) == pytest.approx(2.0, rel=0.05)
    uniform = [Uniform(1, 3).sample(rng) for _ in range(1000)]
    assert 1 <= min(uniform) and max(uniform) <= 3
    assert holding_time("1.5") == Fixed(1.5)
    assert holding_time(2) == Fixed(2.0)
    assert holding_time("exp:3") == Exponential(3.0)
    assert holding_time("uniform:1:4") == Uniform(1.0, 4.0)
    assert holding_time(Uniform(1, 4).to_dict()) == Uniform(1, 4)
    for bad, message in (("exp:-1", "mean"), ("uniform:4:1", "high"), ("soon", "expected seconds"), ("-2", "hold")):
        with pytest.raises(WorkloadError, match=message):
            holding_time(bad)


def test_callee_selection() -> None:
    users = [f"u{i}" for i in range(5)]
    rr = RoundRobin(users)
    assert [rr.next_pair() for _ in range(4)] == [("u0", "u1"), ("u2", "u3"), ("u4", "u0"), ("u1", "u2")]
    a, b = RandomPair(users, seed=7), RandomPair(users, seed=7)
    pairs = [a.next_pair() for _ in range(200)]
    assert pairs == [b.next_pair() for _ in range(200)]
    assert all(caller != callee for caller, callee in pairs)
    assert {u for pair in pairs for u in pair} == set(users)
    with pytest.raises(WorkloadError, match="at least 2 users"):
        RandomPair(["only"])
    with pytest.raises(WorkloadError, match="twice"):
        RoundRobin(["a", "a"])


def test_registration_storm() -> None:
    storm = RegistrationStorm(("a", "b", "c", "d"), rate=2, at=1)
    assert storm.schedule() == [(1.0, "a"), (1.5, "b"), (2.0, "c"), (2.5, "d")]
    jittered = RegistrationStorm(("a", "b"), jitter=0.5, seed=4).schedule()
    assert jittered == RegistrationStorm(("a", "b"), jitter=0.5, seed=4).schedule()
    assert all(0 <= t <= 0.5 for t, _ in jittered)
    with pytest.raises(WorkloadError, match="rate"):
        RegistrationStorm(("a",), rate=0)
    with pytest.raises(WorkloadError, match="no users"):
        RegistrationStorm(())


def test_plan_calls_is_seeded_and_limited() -> None:
    users = [f"ue{i:04d}" for i in range(1, 11)]
    make = lambda: plan_calls(Ramp(2, 1, 5), Exponential(1.0), RandomPair(users, 3), seed=3, limit=9)  # noqa: E731
    plans = make()
    assert len(plans) == 9 and all(isinstance(p, CallPlan) for p in plans)
    assert [(p.at, p.caller, p.callee, p.hold) for p in plans] == [(p.at, p.caller, p.callee, p.hold) for p in make()]
    assert [p.index for p in plans] == list(range(9))

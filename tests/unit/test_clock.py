"""Clocks: the virtual clock's exact ordering, and LoopClock's scaling against a fake loop."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.clock import Cancellable, Clock, LoopClock, VirtualClock

# ---------------------------------------------------------------------- VirtualClock


def test_virtual_clock_starts_where_told_and_satisfies_the_interface():
    clock = VirtualClock(start=12.5)
    assert clock.now() == 12.5
    assert clock.time_scale == 1.0
    assert clock.pending() == 0
    assert clock.next_deadline() is None
    assert isinstance(clock, Clock)
    assert isinstance(clock.call_later(1, print), Cancellable)


def test_callbacks_run_in_deadline_order_and_see_their_own_deadline():
    clock = VirtualClock()
    ran: list[tuple[str, float]] = []
    for name, deadline in [("c", 3.0), ("a", 1.0), ("d", 7.5), ("b", 2.0)]:
        clock.call_at(deadline, lambda n: ran.append((n, clock.now())), name)
    assert clock.pending() == 4
    assert clock.next_deadline() == 1.0

    assert clock.advance(3.0) == 3
    assert ran == [("a", 1.0), ("b", 2.0), ("c", 3.0)]  # a deadline equal to the target runs
    assert clock.now() == 3.0
    assert clock.pending() == 1
    assert clock.next_deadline() == 7.5

    assert clock.advance_to(10.0) == 1
    assert ran[-1] == ("d", 7.5)
    assert clock.now() == 10.0


def test_ties_run_in_scheduling_order():
    clock = VirtualClock()
    ran: list[int] = []
    for i in range(10):
        clock.call_at(5.0, ran.append, i)
    clock.call_at(4.0, ran.append, -1)
    clock.advance(5.0)
    assert ran == [-1, *range(10)]


def test_call_later_is_relative_to_now():
    clock = VirtualClock(start=100.0)
    seen: list[float] = []
    clock.advance(5.0)
    clock.call_later(0.25, lambda: seen.append(clock.now()))
    assert clock.next_deadline() == 105.25
    clock.advance(0.24)
    assert seen == []
    clock.advance(0.01)
    assert seen == [105.25]


def test_callbacks_scheduled_by_callbacks_run_when_due_within_the_same_advance():
    clock = VirtualClock()
    ran: list[tuple[str, float]] = []

    def first() -> None:
        ran.append(("first", clock.now()))
        clock.call_later(0.5, second)  # due at 1.5: within this advance
        clock.call_later(5.0, late)  # due at 6.0: not within this advance
        clock.call_at(0.2, past)  # in the past: runs next, time does not go back

    def second() -> None:
        ran.append(("second", clock.now()))

    def past() -> None:
        ran.append(("past", clock.now()))

    def late() -> None:
        ran.append(("late", clock.now()))

    clock.call_at(1.0, first)
    clock.call_at(1.7, ran.append, ("third", 1.7))
    assert clock.advance(2.0) == 4
    assert ran == [("first", 1.0), ("past", 1.0), ("second", 1.5), ("third", 1.7)]
    assert clock.pending() == 1 and clock.next_deadline() == 6.0


def test_refuses_to_go_backwards_and_changes_nothing():
    clock = VirtualClock(start=10.0)
    clock.call_at(11.0, lambda: None)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-0.001)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance_to(9.999)
    assert clock.now() == 10.0
    assert clock.pending() == 1
    assert clock.advance(0) == 0  # standing still is allowed
    assert clock.now() == 10.0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_rejects_nan_and_infinite_targets(bad):
    clock = VirtualClock()
    with pytest.raises(ValueError):
        clock.advance_to(bad)
    with pytest.raises(ValueError):
        clock.advance(bad)
    assert clock.now() == 0.0


def test_rejects_nan_deadlines_and_bad_start():
    clock = VirtualClock()
    with pytest.raises(ValueError):
        clock.call_at(math.nan, print)
    with pytest.raises(ValueError):
        clock.call_later(math.nan, print)
    with pytest.raises(ValueError):
        VirtualClock(start=math.inf)
    with pytest.raises(TypeError):
        VirtualClock(start="0")  # type: ignore[arg-type]
    assert clock.pending() == 0


def test_cancelled_calls_do_not_run_and_are_not_pending():
    clock = VirtualClock()
    ran: list[str] = []
    a = clock.call_at(1.0, ran.append, "a")
    b = clock.call_at(2.0, ran.append, "b")
    a.cancel()
    a.cancel()  # twice is harmless
    assert a.cancelled() and not b.cancelled()
    assert clock.pending() == 1
    assert clock.next_deadline() == 2.0
    clock.advance(5.0)
    assert ran == ["b"]
    b.cancel()  # after it ran: harmless, not counted twice
    assert clock.pending() == 0 and not b.cancelled()


def test_a_callback_can_cancel_a_later_one_due_in_the_same_advance():
    clock = VirtualClock()
    ran: list[str] = []
    later = clock.call_at(2.0, ran.append, "later")
    clock.call_at(1.0, later.cancel)
    clock.advance(3.0)
    assert ran == []


def test_an_exception_stops_the_advance_at_that_deadline():
    clock = VirtualClock()
    ran: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    clock.call_at(1.0, ran.append, "a")
    clock.call_at(2.0, boom)
    clock.call_at(3.0, ran.append, "c")
    with pytest.raises(RuntimeError, match="boom"):
        clock.advance(10.0)
    assert ran == ["a"]
    assert clock.now() == 2.0
    assert clock.pending() == 1
    clock.advance_to(10.0)
    assert ran == ["a", "c"] and clock.now() == 10.0


def test_step_goes_to_the_next_deadline():
    clock = VirtualClock()
    ran: list[float] = []
    clock.call_at(3.0, lambda: ran.append(clock.now()))
    clock.call_at(3.0, lambda: ran.append(clock.now()))
    clock.call_at(8.0, lambda: ran.append(clock.now()))
    assert clock.step() is True
    assert ran == [3.0, 3.0] and clock.now() == 3.0
    assert clock.step() is True
    assert ran == [3.0, 3.0, 8.0]
    assert clock.step() is False
    assert clock.now() == 8.0


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=60), st.floats(0, 1e6))
def test_property_runs_exactly_the_due_calls_in_deadline_then_scheduling_order(deadlines, target):
    clock = VirtualClock()
    ran: list[int] = []
    for i, d in enumerate(deadlines):
        clock.call_at(d, ran.append, i)
    clock.advance_to(target)
    expected = sorted((d, i) for i, d in enumerate(deadlines) if d <= target)
    assert ran == [i for _, i in expected]
    assert clock.now() == target
    assert clock.pending() == len(deadlines) - len(expected)


# ---------------------------------------------------------------------- LoopClock


class FakeHandle:
    def __init__(self) -> None:
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled


class FakeLoop:
    """Just enough of an event loop: a settable time and recorded timer calls."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t
        self.calls: list[tuple[str, float, object, tuple]] = []

    def time(self) -> float:
        return self.t

    def call_at(self, when, callback, *args):
        self.calls.append(("call_at", when, callback, args))
        return FakeHandle()

    def call_later(self, delay, callback, *args):
        self.calls.append(("call_later", delay, callback, args))
        return FakeHandle()


def test_loop_clock_at_real_time_counts_seconds_since_creation():
    loop = FakeLoop(1000.0)
    clock = LoopClock(loop, time_scale=1.0)  # type: ignore[arg-type]
    assert isinstance(clock, Clock)
    assert clock.now() == 0.0
    loop.t = 1002.5
    assert clock.now() == 2.5
    clock.call_at(4.0, print, "x")
    assert loop.calls[-1] == ("call_at", 1004.0, print, ("x",))
    clock.call_later(0.5, print)
    assert loop.calls[-1] == ("call_later", 0.5, print, ())


def test_loop_clock_compresses_time_by_the_scale():
    loop = FakeLoop(500.0)
    clock = LoopClock(loop, time_scale=4.0)  # type: ignore[arg-type]
    assert clock.time_scale == 4.0
    loop.t = 500.5  # half a real second ...
    assert clock.now() == 2.0  # ... is two emulated seconds
    handle = clock.call_at(10.0, print)  # emulated 10 s = real 2.5 s after creation
    assert loop.calls[-1][:2] == ("call_at", 502.5)
    clock.call_later(1.0, print)  # one emulated second = a quarter of a real second
    assert loop.calls[-1][:2] == ("call_later", 0.25)
    handle.cancel()
    assert handle.cancelled()
    assert clock.to_loop_time(2.0) == 500.5
    assert clock.from_loop_time(501.0) == 4.0


def test_loop_clock_slows_time_down_below_one():
    loop = FakeLoop(0.0)
    clock = LoopClock(loop, time_scale=0.5)  # type: ignore[arg-type]
    loop.t = 4.0
    assert clock.now() == 2.0
    clock.call_later(1.0, print)
    assert loop.calls[-1][:2] == ("call_later", 2.0)


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, math.nan, math.inf, -math.inf])
def test_loop_clock_rejects_bad_time_scales(bad):
    with pytest.raises(ValueError, match="time_scale"):
        LoopClock(FakeLoop(), time_scale=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["2", None, True])
def test_loop_clock_rejects_non_numeric_time_scales(bad):
    with pytest.raises(TypeError, match="time_scale"):
        LoopClock(FakeLoop(), time_scale=bad)  # type: ignore[arg-type]


def test_loop_clock_needs_a_running_loop_when_none_is_given():
    with pytest.raises(RuntimeError):
        LoopClock()


async def test_loop_clock_on_a_real_loop_fires_at_the_emulated_deadline_sooner_in_real_time():
    loop = asyncio.get_running_loop()
    clock = LoopClock(time_scale=50.0)
    assert clock.loop is loop
    fired = asyncio.Event()
    at: list[float] = []
    real_start = loop.time()
    clock.call_later(1.0, lambda: (at.append(clock.now()), fired.set()))
    await asyncio.wait_for(fired.wait(), 5)
    real_elapsed = loop.time() - real_start
    # The loop may run a timer up to its clock resolution early: allow 1 ms of real time.
    assert at[0] >= 1.0 - 50.0 * 1e-3
    assert real_elapsed < 1.0  # one emulated second took 20 ms of real time, not one second

"""Clocks: one interface, the event loop's time in production, a virtual clock in tests.

Everything that needs time in the runtime takes a :class:`Clock` and asks it ``now()`` and
``call_at(deadline, ...)``. Times are *emulated seconds*: floats with an arbitrary origin, the same
unit the sans-IO SIP layer takes as ``now``.

- :class:`LoopClock` is the production clock: the event loop's monotonic time, scaled by
  ``time_scale``. With ``time_scale = k`` one emulated second passes in ``1/k`` real seconds, so a
  one-hour experiment at ``k = 60`` takes a minute of wall time. ``now()`` counts emulated seconds
  since the clock was created.
- :class:`VirtualClock` is the hand-held clock for tests: time stands still until the test calls
  :meth:`VirtualClock.advance` or :meth:`VirtualClock.advance_to`, which run the due callbacks in
  deadline order (ties in scheduling order). It never goes backwards.

Both clocks are used from one thread: the event loop's thread for :class:`LoopClock`, the test's
thread for :class:`VirtualClock`. Neither is thread-safe.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["Cancellable", "Clock", "LoopClock", "VirtualClock", "VirtualTimer"]


@runtime_checkable
class Cancellable(Protocol):
    """What ``call_at`` / ``call_later`` return: a scheduled call that can be cancelled.

    ``asyncio.TimerHandle`` and :class:`VirtualTimer` both qualify. Cancelling a call that already
    ran, or cancelling twice, does nothing.
    """

    def cancel(self) -> None: ...


@runtime_checkable
class Clock(Protocol):
    """The one clock interface of the runtime.

    ``now()`` and deadlines are emulated seconds. ``time_scale`` is how many emulated seconds pass
    per real second (1.0 for real time; :class:`VirtualClock` reports 1.0 because it has no real
    time at all). Callbacks run on the clock's thread, never re-entrantly from ``call_at`` itself.
    """

    @property
    def time_scale(self) -> float: ...

    def now(self) -> float: ...

    def call_at(self, deadline: float, callback: Callable[..., object], *args: Any) -> Cancellable: ...

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Cancellable: ...


def _check_time_scale(time_scale: float) -> float:
    if isinstance(time_scale, bool) or not isinstance(time_scale, (int, float)):
        raise TypeError(f"time_scale must be a number, got {type(time_scale).__name__}")
    value = float(time_scale)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"time_scale must be a finite number > 0, got {time_scale!r}")
    return value


def _check_time(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{what} must not be NaN")
    return value


class LoopClock:
    """The event loop's monotonic time, in emulated seconds.

    ``now()`` is ``(loop.time() - origin) * time_scale`` where ``origin`` is the loop time at
    construction, so a fresh clock reads 0.0. ``call_at(deadline)`` converts the emulated deadline
    to loop time and arms ``loop.call_at``; ``call_later(delay)`` arms ``loop.call_later(delay /
    time_scale)``. Callbacks run on the loop's thread like any ``loop.call_at`` callback, and the
    returned handle is the loop's own ``asyncio.TimerHandle``.

    ``loop`` only needs ``time()``, ``call_at()`` and ``call_later()``; when omitted, the running
    loop is used (so construct it on the loop thread). With ``time_scale`` 1.0 the instance is of a
    private subclass that skips the scaling arithmetic (same readings, a little faster).
    """

    __slots__ = ("_loop", "_origin", "_scale")

    def __new__(cls, loop: asyncio.AbstractEventLoop | None = None, time_scale: float = 1.0) -> LoopClock:
        # Real time (the default, and every production run) gets a subclass whose methods skip
        # the scaling arithmetic: every datagram reads the clock several times. The values are
        # the same to the bit (x * 1.0 == x / 1.0 == x in IEEE 754).
        if cls is LoopClock and type(time_scale) in (int, float) and time_scale == 1.0:
            cls = _RealTimeLoopClock
        return super().__new__(cls)

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, time_scale: float = 1.0) -> None:
        self._scale = _check_time_scale(time_scale)
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._origin: float = self._loop.time()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def time_scale(self) -> float:
        return self._scale

    def now(self) -> float:
        """Emulated seconds since this clock was created."""
        return (self._loop.time() - self._origin) * self._scale

    def to_loop_time(self, t: float) -> float:
        """The loop time at which emulated time ``t`` is reached."""
        return self._origin + t / self._scale

    def from_loop_time(self, loop_time: float) -> float:
        """The emulated time that loop time ``loop_time`` corresponds to."""
        return (loop_time - self._origin) * self._scale

    def call_at(self, deadline: float, callback: Callable[..., object], *args: Any) -> asyncio.TimerHandle:
        """Run ``callback(*args)`` on the loop once emulated time reaches ``deadline``."""
        return self._loop.call_at(self._origin + deadline / self._scale, callback, *args)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> asyncio.TimerHandle:
        """Run ``callback(*args)`` on the loop after ``delay`` emulated seconds."""
        return self._loop.call_later(delay / self._scale, callback, *args)

    def __repr__(self) -> str:
        return f"LoopClock(now={self.now():.6f}, time_scale={self._scale})"


class _RealTimeLoopClock(LoopClock):
    """A :class:`LoopClock` with ``time_scale == 1.0`` (``LoopClock(...)`` returns one): the
    same readings, without multiplying or dividing by the scale."""

    __slots__ = ()

    def now(self) -> float:
        """Emulated seconds since this clock was created."""
        return self._loop.time() - self._origin

    def call_at(self, deadline: float, callback: Callable[..., object], *args: Any) -> asyncio.TimerHandle:
        """Run ``callback(*args)`` on the loop once emulated time reaches ``deadline``."""
        return self._loop.call_at(self._origin + deadline, callback, *args)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> asyncio.TimerHandle:
        """Run ``callback(*args)`` on the loop after ``delay`` emulated seconds."""
        return self._loop.call_later(delay, callback, *args)


class VirtualTimer:
    """A call scheduled on a :class:`VirtualClock`."""

    __slots__ = ("_args", "_callback", "_clock", "_state", "_when")

    _PENDING, _RAN, _CANCELLED = 0, 1, 2

    def __init__(self, clock: VirtualClock, when: float, callback: Callable[..., object], args: tuple[Any, ...]):
        self._clock = clock
        self._when = when
        self._callback: Callable[..., object] | None = callback
        self._args = args
        self._state = VirtualTimer._PENDING

    def when(self) -> float:
        """The deadline this call was scheduled for."""
        return self._when

    def cancelled(self) -> bool:
        return self._state == VirtualTimer._CANCELLED

    def cancel(self) -> None:
        if self._state != VirtualTimer._PENDING:
            return
        self._state = VirtualTimer._CANCELLED
        self._callback = None  # drop references early
        self._args = ()
        self._clock._live -= 1

    def _take(self) -> tuple[Callable[..., object], tuple[Any, ...]]:
        callback, args = self._callback, self._args
        self._state = VirtualTimer._RAN
        self._callback = None
        self._args = ()
        self._clock._live -= 1
        return callback, args  # type: ignore[return-value]

    def __repr__(self) -> str:
        state = ("pending", "ran", "cancelled")[self._state]
        return f"<VirtualTimer when={self._when} {state}>"


class VirtualClock:
    """A hand-held clock for tests: time moves only when the test moves it.

    ``advance(dt)`` / ``advance_to(t)`` run every callback whose deadline is ``<= t`` in deadline
    order, ties in the order they were scheduled; during a callback ``now()`` equals that callback's
    deadline (or the current time, for a deadline scheduled in the past). Callbacks scheduled by
    callbacks run in the same advance if they are due by ``t``. When it returns, ``now() == t``.

    Moving backwards raises ``ValueError`` and changes nothing. If a callback raises, the exception
    propagates out of ``advance``; the clock stays at that callback's deadline and the later
    callbacks stay pending, so a test can look at the state and carry on.
    """

    __slots__ = ("_heap", "_live", "_now", "_seq")

    def __init__(self, start: float = 0.0) -> None:
        start = _check_time(start, "start")
        if not math.isfinite(start):
            raise ValueError(f"start must be finite, got {start!r}")
        self._now = start
        self._heap: list[tuple[float, int, VirtualTimer]] = []
        self._seq = 0
        self._live = 0

    @property
    def time_scale(self) -> float:
        return 1.0

    def now(self) -> float:
        return self._now

    def call_at(self, deadline: float, callback: Callable[..., object], *args: Any) -> VirtualTimer:
        """Schedule ``callback(*args)`` at ``deadline`` (a past deadline runs at the next advance)."""
        deadline = _check_time(deadline, "deadline")
        timer = VirtualTimer(self, deadline, callback, args)
        heapq.heappush(self._heap, (deadline, self._seq, timer))
        self._seq += 1
        self._live += 1
        return timer

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> VirtualTimer:
        """Schedule ``callback(*args)`` at ``now() + delay``."""
        return self.call_at(self._now + _check_time(delay, "delay"), callback, *args)

    def pending(self) -> int:
        """How many scheduled calls have neither run nor been cancelled."""
        return self._live

    def next_deadline(self) -> float | None:
        """The earliest deadline among pending calls, or ``None``."""
        heap = self._heap
        while heap and heap[0][2]._state != VirtualTimer._PENDING:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def advance(self, dt: float) -> int:
        """Move time forward by ``dt`` seconds; return how many callbacks ran."""
        dt = _check_time(dt, "dt")
        if dt < 0:
            raise ValueError(f"a clock cannot go backwards: advance({dt!r})")
        return self.advance_to(self._now + dt)

    def advance_to(self, t: float) -> int:
        """Move time forward to ``t``; return how many callbacks ran."""
        t = _check_time(t, "t")
        if t < self._now:
            raise ValueError(f"a clock cannot go backwards: advance_to({t!r}) at now={self._now!r}")
        if math.isinf(t):
            raise ValueError("cannot advance to infinity")
        heap = self._heap
        ran = 0
        while heap and heap[0][0] <= t:
            deadline, _, timer = heapq.heappop(heap)
            if timer._state != VirtualTimer._PENDING:
                continue
            callback, args = timer._take()
            if deadline > self._now:
                self._now = deadline
            ran += 1
            callback(*args)
        self._now = t
        return ran

    def step(self) -> bool:
        """Advance to the next pending deadline and run what is due there; ``False`` if none."""
        deadline = self.next_deadline()
        if deadline is None:
            return False
        self.advance_to(max(deadline, self._now))
        return True

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now}, pending={self._live})"

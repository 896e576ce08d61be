"""SIP timer values (RFC 3261 Table 4, UDP) and the deadline bookkeeping of the sans-IO machines.

Nothing here reads a clock. Every deadline is an absolute float on whatever clock the owner uses
(the event loop's monotonic time in production, a plain float in tests).

- :class:`SipTimers` holds T1, T2, T4 and Timer D and derives every other RFC 3261 timer from them
  (plus RFC 6026's Timers L and M).
- :class:`DeadlineQueue` is a min-heap of (deadline, owner) with lazy deletion: the hop monitor
  uses it to expose one earliest deadline across thousands of machines without scanning them
  all (the transaction layer keeps the same kind of heap, with each transaction's queued
  deadline kept on the transaction itself instead of in a dict).
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Generic, Hashable, TypeVar

__all__ = ["SipTimers", "DeadlineQueue", "Address", "Datagram"]

#: An opaque transport address, handed in by the owner (e.g. ``("127.0.0.1", 5060)``).
Address = Any
#: What every sans-IO machine's ``datagrams_to_send()`` returns items of: the encoded message and
#: the address to send it to.
Datagram = tuple[bytes, Address]


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number of seconds, got {value!r}")


@dataclass(frozen=True, slots=True)
class SipTimers:
    """RFC 3261 timer values for an unreliable transport (UDP), in seconds.

    Only the base values are fields; the letters are derived exactly as in RFC 3261 Table 4:

    ====== ============================ ===============================================
    timer  value                        meaning
    ====== ============================ ===============================================
    A      T1, doubling, no cap         INVITE request retransmission interval
    B      64*T1                        INVITE transaction timeout
    D      ``timer_d`` (32 s)           wait time for response retransmissions
    E      T1, doubling, capped at T2   non-INVITE request retransmission interval
    F      64*T1                        non-INVITE transaction timeout
    G      T1, doubling, capped at T2   INVITE final response retransmission interval
    H      64*T1                        wait time for ACK receipt
    I      T4                           wait time for ACK retransmissions
    J      64*T1                        wait time for non-INVITE request retransmissions
    K      T4                           wait time for response retransmissions
    L      64*T1                        RFC 6026: INVITE server Accepted state
    M      64*T1                        RFC 6026: INVITE client Accepted state
    ====== ============================ ===============================================

    Raises :class:`ValueError` naming the field when a value is not a positive finite number or
    when ``t2 < t1`` (the cap on E and G would then be below their first interval).
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0

    def __post_init__(self) -> None:
        for name in ("t1", "t2", "t4", "timer_d"):
            _check_positive(name, getattr(self, name))
        if self.t2 < self.t1:
            raise ValueError(f"t2 ({self.t2!r}) must not be smaller than t1 ({self.t1!r})")

    # Initial retransmission intervals.
    @property
    def a(self) -> float:
        return self.t1

    @property
    def e(self) -> float:
        return self.t1

    @property
    def g(self) -> float:
        return self.t1

    # Timeouts.
    @property
    def b(self) -> float:
        return 64 * self.t1

    @property
    def d(self) -> float:
        return self.timer_d

    @property
    def f(self) -> float:
        return 64 * self.t1

    @property
    def h(self) -> float:
        return 64 * self.t1

    @property
    def i(self) -> float:
        return self.t4

    @property
    def j(self) -> float:
        return 64 * self.t1

    @property
    def k(self) -> float:
        return self.t4

    @property
    def l(self) -> float:  # noqa: E743 - the RFC's name
        return 64 * self.t1

    @property
    def m(self) -> float:
        return 64 * self.t1

    # Backoff rules.
    def next_a(self, interval: float) -> float:
        """Timer A's next interval after one that lasted ``interval``: doubles, never capped."""
        return 2 * interval

    def next_capped(self, interval: float) -> float:
        """Timers E (in Trying) and G: double, capped at T2."""
        return min(2 * interval, self.t2)


K = TypeVar("K", bound=Hashable)
_heappush = heapq.heappush
_heappop = heapq.heappop


class DeadlineQueue(Generic[K]):
    """Earliest deadline across many machines, with lazy deletion.

    ``update(owner, deadline)`` records the owner's current deadline (``None``: no timer).
    Stale heap entries are discarded when they reach the top, so every operation is
    O(log n) amortised. ``due(now)`` pops the owners whose recorded deadline is at or before
    ``now``.
    """

    __slots__ = ("_heap", "_current", "_counter")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._current: dict[K, float] = {}
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._current)

    def update(self, owner: K, deadline: float | None) -> None:
        current = self._current
        if deadline is None:
            current.pop(owner, None)
            return
        if current.get(owner) == deadline:
            return
        current[owner] = deadline
        _heappush(self._heap, (deadline, next(self._counter), owner))

    def discard(self, owner: K) -> None:
        self._current.pop(owner, None)

    def _prune(self) -> None:
        heap, current = self._heap, self._current
        while heap:
            deadline, _, owner = heap[0]
            if current.get(owner) == deadline:
                return
            _heappop(heap)

    def earliest(self) -> float | None:
        heap = self._heap
        if heap:  # the usual case, inline: the top entry is still current
            deadline, _, owner = heap[0]
            if self._current.get(owner) == deadline:
                return deadline
            self._prune()
            if heap:
                return heap[0][0]
        return None

    def due(self, now: float) -> list[K]:
        """Pop and return, earliest first, every owner whose deadline is at or before ``now``."""
        out: list[K] = []
        heap, current = self._heap, self._current
        while heap:
            deadline, _, owner = heap[0]
            if deadline > now:
                break
            _heappop(heap)
            if current.get(owner) == deadline:  # else a stale entry: skip it
                del current[owner]
                out.append(owner)
        return out


def fire_due(timers: dict[str, float], now: float, retransmit: frozenset[str],
             fire: Callable[[str, float], None]) -> None:
    """Fire the named timers of one machine that are due at or before ``now``.

    The policy shared by every machine (late fires are tolerated, early calls ignored):

    - timers fire one at a time, earliest deadline first, each removed before it fires;
    - a due timer that is *not* a retransmission timer wins over a due retransmission timer, so a
      machine that is late enough to be both due to retransmit and due to time out just times out
      (a burst of stale retransmissions helps nobody);
    - a retransmission timer fires at most once per call: its handler reschedules it relative to
      ``now``, which is in the future of this call, so missed intervals are skipped, not replayed.
    """
    if len(timers) == 1:  # the usual case (one linger timer): nothing to choose between
        for name, deadline in timers.items():
            if deadline <= now:
                del timers[name]
                fire(name, now)
                break
            return
    while timers:
        best_name = None
        best_key: tuple[int, float] | None = None
        for name, deadline in timers.items():
            if deadline <= now:
                key = (1 if name in retransmit else 0, deadline)
                if best_key is None or key < best_key:
                    best_key, best_name = key, name
        if best_name is None:
            return
        del timers[best_name]
        fire(best_name, now)

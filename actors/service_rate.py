"""The emulated capacity of an NF instance: a service rate with a bounded queue, sans-IO.

The papers give each NF instance a capacity in transactions per second (``001`` Table II:
P-CSCF 500 tran/s, S-CSCF 200 tran/s). DESIGN.md enforces it "as a service rate with a queue, so
overload and scaling behave as in the papers at small absolute rates"; when the queue is full the
module answers 503 with Retry-After, like a real overloaded server.

:class:`ServiceRate` is a single-server queue with deterministic service (G/D/1/K): each admitted
item takes exactly ``1 / rate_per_s`` seconds of service, starting when the previous one finishes,
or at its arrival if the server is idle. :meth:`ServiceRate.admit` returns the instant the item
*will have been served*, or ``None`` when ``queue_limit`` items (the one in service included) are
admitted but not yet finished. Finish instants within one busy period are computed as
``period_start + k / rate_per_s`` (one correctly rounded division, no accumulated float drift),
so at 200/s three items arriving at 0 finish at exactly 0.005, 0.01 and 0.015.
``rate_per_s=None`` is unlimited: every item is admitted and served at its arrival
(``admit(now) == now``).

Nothing here reads a clock or does I/O: every method takes ``now`` (the owner's clock, seconds,
any monotonic origin) and ``now`` must never go backwards (``ValueError``).

How a :class:`~actors.sip_actor.SipActor` uses it (the actor wiring is the SipActor's, not this
module's; all of it runs on the actor's loop):

1. **Only new transactions count.** The transaction layer sees every datagram first, so
   retransmissions are absorbed by their server transaction and never reach the rate. On a
   ``RequestReceived`` event (a request that created a new server transaction; ACK is no
   transaction and is not rate-limited, and neither is any response: the papers count
   transactions per second) call ``finish = rate.admit(now)``. CANCEL counts like any request,
   which also keeps it behind the INVITE it cancels.
2. **Hold, then handle.** If ``finish`` is a number, hold the request and run the module's hook
   (``on_request``) at ``finish``: ``clock.call_at(finish, dispatch, event)``; skip the
   ``call_at`` when ``rate.limited`` is false (or ``finish <= now``) and dispatch at once, so the
   unlimited default costs nothing. While a request is held the server transaction keeps
   working: an INVITE's 100 Trying goes out on its own after ``trying_delay``, and retransmissions
   are absorbed. Hooks run in admission order because finish instants are increasing.
3. **Reject at once.** If ``finish`` is ``None``, answer 503 Service Unavailable with
   ``Retry-After: rate.retry_after(now)`` immediately, without handing the request to the module
   (no proxy, dialog or registration state is created: stateless as far as the module is
   concerned) and count it (``stats["rejected_503"]``). Answering it through the server
   transaction the layer just created costs one short-lived transaction and is what makes the
   wire right: the 503 is retransmitted if lost and the ACK a client sends for a 503 to an
   INVITE (same branch as the INVITE) is absorbed by that transaction. A truly stateless 503
   (``send_stateless``) must instead drop that ACK itself: it matches no transaction and would
   otherwise reach ``on_ack`` as if it acknowledged a 2xx.
4. **Choose the queue so waits stay under T1.** ``queue_limit / rate_per_s`` is the longest wait
   in the queue; keeping it below T1 (0.5 s) keeps clients from retransmitting into the queue.
   The default (100) is 0.2 s at the P-CSCF's 500/s, 0.5 s at the S-CSCF's 200/s.

Counters for the experiments: ``admitted``, ``rejected``, :meth:`busy_time` (service completed
by ``now``), :meth:`utilisation`, :meth:`queue_length`, and :meth:`stats` with all of them.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["ServiceRate", "DEFAULT_QUEUE_LIMIT"]

#: Items admitted but not yet served, the one in service included.
DEFAULT_QUEUE_LIMIT = 100


class ServiceRate:
    """``ServiceRate(rate_per_s=None, queue_limit=100)``: see the module docstring."""

    __slots__ = ("rate_per_s", "queue_limit", "service_time", "admitted", "rejected",
                 "_finishes", "_busy_until", "_period_start", "_period_count", "_busy_total",
                 "_last_now", "_origin")

    def __init__(self, rate_per_s: float | None = None,
                 queue_limit: int = DEFAULT_QUEUE_LIMIT) -> None:
        if rate_per_s is not None and (
                isinstance(rate_per_s, bool) or not isinstance(rate_per_s, (int, float))
                or not math.isfinite(rate_per_s) or rate_per_s <= 0):
            raise ValueError(f"rate_per_s must be None (unlimited) or a finite number > 0, "
                             f"got {rate_per_s!r}")
        if isinstance(queue_limit, bool) or not isinstance(queue_limit, int) or queue_limit < 1:
            raise ValueError(f"queue_limit must be an int >= 1, got {queue_limit!r}")
        self.rate_per_s: float | None = None if rate_per_s is None else float(rate_per_s)
        self.queue_limit = queue_limit
        #: seconds of service per item (0.0 when unlimited)
        self.service_time = 0.0 if rate_per_s is None else 1.0 / float(rate_per_s)
        self.admitted = 0
        self.rejected = 0
        self._finishes: deque[float] = deque()  # finish instants of items not yet served
        self._busy_until = -math.inf
        self._period_start = 0.0
        self._period_count = 0
        self._busy_total = 0.0  # service time of every admitted item, served or not
        self._last_now = -math.inf
        self._origin: float | None = None  # the first instant seen, for utilisation()

    def __repr__(self) -> str:
        rate = "unlimited" if self.rate_per_s is None else f"{self.rate_per_s:g}/s"
        return (f"<ServiceRate {rate} queue_limit={self.queue_limit} "
                f"admitted={self.admitted} rejected={self.rejected}>")

    @property
    def limited(self) -> bool:
        return self.rate_per_s is not None

    # -- the queue -----------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        if not now >= self._last_now:
            raise ValueError(f"now={now!r} is earlier than a previous now={self._last_now!r}")
        self._last_now = now
        if self._origin is None:
            self._origin = now
        finishes = self._finishes
        while finishes and finishes[0] <= now:
            finishes.popleft()

    def admit(self, now: float) -> float | None:
        """Admit an item arriving at ``now``: the instant it will have been served, or
        ``None`` (counted in ``rejected``) when the queue is full."""
        self._advance(now)
        if self.rate_per_s is None:
            self.admitted += 1
            return now
        finishes = self._finishes
        if len(finishes) >= self.queue_limit:
            self.rejected += 1
            return None
        if now >= self._busy_until:  # idle: a new busy period starts now
            self._period_start = now
            self._period_count = 1
        else:
            self._period_count += 1
        finish = self._period_start + self._period_count / self.rate_per_s
        self._busy_until = finish
        finishes.append(finish)
        self.admitted += 1
        self._busy_total += self.service_time
        return finish

    def queue_length(self, now: float) -> int:
        """Items admitted and not yet served at ``now`` (the one in service included)."""
        self._advance(now)
        return len(self._finishes)

    def retry_after(self, now: float) -> int:
        """Seconds for a Retry-After header: the time until a queue slot frees, rounded up,
        at least 1 (1 as well when a slot is free now, or when unlimited)."""
        self._advance(now)
        finishes = self._finishes
        if self.rate_per_s is None or len(finishes) < self.queue_limit:
            return 1
        return max(1, math.ceil(finishes[0] - now - 1e-9))

    # -- counters ------------------------------------------------------------------------

    def busy_time(self, now: float) -> float:
        """Seconds of service completed by ``now`` (0.0 when unlimited). The server is work
        conserving, so the work left at ``now`` is ``busy_until - now``."""
        return self._busy_total - max(0.0, self._busy_until - now)

    def utilisation(self, now: float) -> float:
        """Fraction of the time since the first :meth:`admit` (or other call with ``now``)
        that the server was busy; 0.0 before any time has passed. For a window, take two
        :meth:`stats` and divide the ``busy_time`` difference by the elapsed time."""
        if self._origin is None or now <= self._origin:
            return 0.0
        return self.busy_time(now) / (now - self._origin)

    def stats(self, now: float) -> dict[str, float | int]:
        """``admitted``, ``rejected``, ``queue_length``, ``busy_time``, ``utilisation``."""
        return {
            "admitted": self.admitted,
            "rejected": self.rejected,
            "queue_length": self.queue_length(now),
            "busy_time": self.busy_time(now),
            "utilisation": self.utilisation(now),
        }

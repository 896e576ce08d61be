"""``HopSupervisor``: the Fig. 8 failure detector on every request a module forwards to a
neighbour module, as a small asyncio layer over the sans-IO :class:`HopMonitor`.

The module calls :meth:`HopSupervisor.watch` right after its transaction layer sent a request
(the key is the client transaction). No keep-alive pings: detection rides on the traffic.

Cost on the hot path: a watched request is only appended to a FIFO with its Timer A deadline
(Timer A is the same for every request, so the FIFO is in deadline order). When its Timer A
comes due, a request that was answered meanwhile is dropped; only an unanswered one gets a
Fig. 8 detector in the :class:`HopMonitor`, created as forwarded at its real send time, so it
enters Fast Retry at once. One ``clock.call_at`` is kept armed for the earliest of the FIFO's
head and the monitor's next deadline. When it fires, the requests behind the due ones that are
already answered (or whose hop was heard from since) are dropped too: their Timer A would drop
them all the same, since neither an answer nor a later heard time is ever taken back, and the
timer is then armed for the first request still waiting rather than once per request.

Coexistence with the RFC 3261 transaction timers (the decision):

* The transaction layer sends the request and keeps its own retransmissions (INVITE Timer A
  at 0.5, 1.5, 3.5 s...; non-INVITE Timer E) and its Timer B/F (32 s). The detector's first
  send is therefore not sent again: the transaction's send is the Fig. 8 "forward".
* "Any response" is read from the client transaction itself: a transaction that left Calling
  (INVITE) or Trying (non-INVITE) got a response, 100 Trying included, so a slow but alive
  hop is never declared failed. This also covers subclasses whose ``on_response`` does not
  pass every response on (the Media Policy's MRF leg).
* The fast retries (Timer A expiry, then every ``retry_interval`` until Timer B) are sent by
  the supervisor with the transaction's exact bytes (same branch: the receiver's server
  transaction absorbs them as retransmissions). A fast retry whose slot the transaction's own
  retransmission falls into (its next Timer A/E within half a retry interval) is not sent
  again: with the defaults the hop gets copies at 0, 0.5 (RFC), 1.0, 1.2, 1.5 (RFC, covering
  the 1.4 slot), 1.6, 1.8, and the hop is declared failed at 2.0.

Only the dead hop is declared failed (a module waiting on a dead hop further on is alive):

* ``heard(next_hop)``: the last time the module received anything from that address. A request
  whose hop was heard from after the request was sent is treated as answered at its Timer A,
  fast-retry and Timer B deadlines: a hop that talks is alive, whatever it says.
* ``on_fast_retry(key)``: called when the request ``key`` enters Fast Retry (its Timer A found
  it unanswered and its hop silent). The module uses it to tell its own upstream that it is
  alive (a 100 Trying on the upstream non-INVITE server transaction, ``ims_module``), so the
  upstream's detector, whose Timer A started a few ms earlier, sees an answer before its
  Timer B and only the silent hop further on is declared failed.

Runs entirely on the owning actor's loop; ``on_events`` is called there with the monitor's
``HopFailed`` / ``Failover`` events.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Hashable
from typing import Any

from actors.clock import Cancellable, Clock
from actors.sip.failure_detector import (
    DetectorState,
    Failover,
    FailureDetectorConfig,
    HopFailed,
    HopMonitor,
    heard_since,
)
from actors.sip.timers import Address

__all__ = ["HopSupervisor"]


class HopSupervisor:
    """``HopSupervisor(clock, send, on_events, *, config, answered, retransmission_due, heard,
    on_fast_retry)``.

    * ``send(data, next_hop)``: puts a fast retry on the wire.
    * ``on_events(events)``: the monitor's events (``HopFailed`` then ``Failover`` s).
    * ``answered(key) -> bool``: has the request ``key`` had any response yet?
    * ``retransmission_due(key) -> float | None``: when the transaction layer next retransmits
      ``key`` (``None``: never); a fast retry that it covers is not sent twice.
    * ``heard(next_hop) -> float | None``: when anything last arrived from ``next_hop``
      (``clock`` time; ``None``: never); heard after the request was sent means alive.
    * ``on_fast_retry(key)``: the request ``key`` entered Fast Retry (called once per request,
      before its first fast retry is sent).
    """

    def __init__(
        self,
        clock: Clock,
        send: Callable[[bytes, Address], None],
        on_events: Callable[[list[Failover | HopFailed]], None],
        *,
        config: FailureDetectorConfig = FailureDetectorConfig(),
        answered: Callable[[Hashable], bool] | None = None,
        retransmission_due: Callable[[Hashable], float | None] | None = None,
        heard: Callable[[Address], float | None] | None = None,
        on_fast_retry: Callable[[Hashable], None] | None = None,
    ) -> None:
        self.clock = clock
        self.config = config
        self.monitor = HopMonitor(config=config)
        self.stats: Counter[str] = Counter()
        self._send = send
        self._on_events = on_events
        self._answered = answered
        self._retransmission_due = retransmission_due
        self._heard = heard
        self._on_fast_retry = on_fast_retry
        self._handle: Cancellable | None = None
        self._armed_at: float | None = None
        self._closed = False
        self._fifo: deque[tuple[float, float, Hashable, Any, Address]] = deque()

    def watch(self, key: Hashable, request: Any, next_hop: Address) -> None:
        """``request`` (bytes or SipMessage) was just sent to ``next_hop``: supervise it."""
        if self._closed:
            return
        now = self.clock.now()
        deadline = now + self.config.timer_a
        self._fifo.append((deadline, now, key, request, next_hop))
        if self._armed_at is None or deadline < self._armed_at:
            self._arm()

    def in_flight(self) -> int:
        """Requests watched and not yet known answered (FIFO and detectors)."""
        return len(self._fifo) + self.monitor.in_flight()

    def is_failed(self, next_hop: Address) -> bool:
        return self.monitor.is_failed(next_hop)

    def mark_recovered(self, next_hop: Address) -> None:
        self.monitor.mark_recovered(next_hop)

    def close(self) -> None:
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    # -- the one timer ------------------------------------------------------------------

    def _next_deadline(self) -> float | None:
        deadline = self.monitor.get_timer()
        if self._fifo:
            head = self._fifo[0][0]
            deadline = head if deadline is None else min(deadline, head)
        return deadline

    def _arm(self) -> None:
        deadline = self._next_deadline()
        if deadline is None or (self._armed_at is not None and self._armed_at <= deadline):
            return  # already armed no later than needed: it re-arms itself when it fires
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = deadline
        self._handle = self.clock.call_at(deadline, self._fired)

    def _fired(self) -> None:
        self._handle = None
        self._armed_at = None
        if self._closed:
            return
        now = self.clock.now()
        fifo, answered, heard, monitor = self._fifo, self._answered, self._heard, self.monitor
        entered: list[Hashable] = []
        watched = alive = 0
        while fifo and fifo[0][0] <= now:
            _, sent_at, key, request, hop = fifo.popleft()
            watched += 1
            if answered is not None and answered(key):
                continue
            if heard is not None and heard_since(heard, hop, sent_at):
                alive += 1
                continue
            # Unanswered at Timer A: a Fig. 8 detector, forwarded at its real send time.
            monitor.forward(key, request, hop, sent_at, send=False)
            entered.append(key)
        # Not yet due, but already answered or heard from: what their Timer A would do (see the
        # module docstring), now, up to the first request still waiting (the FIFO stays in order).
        while fifo:
            _, sent_at, key, _, hop = fifo[0]
            if answered is not None and answered(key):
                pass
            elif heard is not None and heard_since(heard, hop, sent_at):
                alive += 1
            else:
                break
            fifo.popleft()
            watched += 1
        stats = self.stats
        if watched:
            stats["watched"] += watched
        if alive:
            stats["alive_by_traffic"] += alive
        monitor.handle_timer(now, answered, heard)
        if entered and self._on_fast_retry is not None:
            for key in entered:
                det = monitor.detector(key)
                if det is not None and det.state is DetectorState.FAST_RETRY:
                    self._on_fast_retry(key)
        half = self.config.retry_interval / 2
        for key, data, hop in self.monitor.keyed_datagrams_to_send():
            due = self._retransmission_due(key) if self._retransmission_due is not None else None
            if due is not None and now - 1e-9 <= due <= now + half:
                self.stats["fast_retry_covered"] += 1
                continue
            self.stats["fast_retry"] += 1
            self._send(data, hop)
        events = self.monitor.events()
        if events:
            self.stats["failovers"] += sum(1 for e in events if isinstance(e, Failover))
            self._on_events(events)
        self._arm()

"""The failure detector of the paper's Fig. 8 / Algorithm 2, sans-IO.

One :class:`FailureDetector` watches one forwarded request::

    SIP_RECEIVED --forward--> SIP_FORWARDED             (send; Timer A = timer_a, default 1 s)
    SIP_FORWARDED --any response (100 Trying too)--> DONE
    SIP_FORWARDED --Timer A--> FAST_RETRY               (resend at once; Timer B = timer_b,
                                                         default 1 s, from this moment)
    FAST_RETRY --retry timer--> FAST_RETRY              (resend every retry_interval, 0.2 s)
    FAST_RETRY --any response--> DONE
    FAST_RETRY --Timer B--> FAILED                      (event "failover" naming the next hop)
    SIP_FORWARDED/FAST_RETRY --hop declared failed--> FAILED (event "failover", see HopMonitor)
    DONE/FAILED --response--> unchanged                 (late or repeated responses)

Resends happen at the entry of FAST_RETRY and then every ``retry_interval`` *strictly before*
Timer B expires: the paper resends "at an interval of 200 msec until Timer B expires", so at the
instant B expires the request is declared failed, not resent. With the defaults, a request
forwarded at t=0 and never answered is resent at 1.0, 1.2, 1.4, 1.6 and 1.8 (the paper's
"5 retries") and fails over at 2.0. Retry deadlines are computed as
``fast_retry_start + k * retry_interval`` (no accumulated float drift), and the number of
resends is ``ceil(timer_b / retry_interval)`` computed with a 1e-9 tolerance.

Same sans-IO conventions as the transactions (:mod:`actors.sip.transaction`): ``now`` is
passed in, ``get_timer()``/``handle_timer(now)`` (early calls ignored; a late call fires what is
due once, new timers start from ``now``, a due Timer B wins over a due resend), and
``datagrams_to_send()`` drains ``(bytes, next_hop)``. Events are drained with ``events()``.
A late Timer A still enters FAST_RETRY at ``now``: a busy event loop never declares a
neighbour failed without the fast retries.

:class:`HopMonitor` runs the detectors of every in-flight request of an actor, grouped by next
hop, declares a hop failed once (on its first failover), fails over the other requests still in
flight to that hop at the same moment, and answers "which hops are failed".

An owner that cannot see every response as it arrives (a subclass hook that does not pass it on)
gives :meth:`HopMonitor.handle_timer` an ``answered(key)`` predicate: a due detector whose request
was answered meanwhile is closed as answered before any of its timers fires. The asyncio layer
(``nf_modules.hop_supervisor``) reads the client transaction's state that way.

Liveness from any traffic: the owner may also give ``heard(next_hop)``, the last time anything
(a datagram of any kind) arrived from that address. A due detector whose hop was heard from
*strictly after* its request was forwarded is closed as answered too: the hop is alive, so
only a hop that has gone silent since the request left is ever declared failed. A module that
is itself waiting on a dead hop further on is then not mistaken for the dead one as long as it
says anything at all (see ``nf_modules.ims_module``: it answers 100 Trying upstream when its own
detector enters fast retry).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Hashable

from actors.sip.timers import Address, Datagram, DeadlineQueue, fire_due

if TYPE_CHECKING:  # pragma: no cover
    from actors.sip.message import SipMessage

__all__ = [
    "FailureDetectorConfig",
    "DetectorState",
    "DetectorInput",
    "FAILURE_DETECTOR_TABLE",
    "FailureDetector",
    "FailureDetectorStateError",
    "Failover",
    "HopFailed",
    "HopMonitor",
    "heard_since",
]

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class FailureDetectorConfig:
    """Timer A (silence before fast retry), the fast-retry interval and Timer B (length of
    fast retry), in seconds. Raises ValueError naming the field unless positive and finite."""

    timer_a: float = 1.0
    retry_interval: float = 0.2
    timer_b: float = 1.0

    def __post_init__(self) -> None:
        for name in ("timer_a", "retry_interval", "timer_b"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number of seconds, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number of seconds, "
                                 f"got {value!r}")

    @property
    def fast_retries(self) -> int:
        """Resends in FAST_RETRY: one at entry, then one per interval strictly before B."""
        return max(1, math.ceil(self.timer_b / self.retry_interval - _EPS))


class FailureDetectorStateError(Exception):
    """The owner asked for something the detector's state does not allow."""

    def __init__(self, state: "DetectorState", event: str) -> None:
        self.state = state
        self.event = event
        super().__init__(f"FailureDetector: cannot {event} in state {state.name}")


@dataclass(frozen=True, eq=False, slots=True)
class Failover:
    """A forwarded request got no response: replay it elsewhere. ``reason`` is ``"timer_b"``
    (its own Timer B expired) or ``"hop_failed"`` (another request declared the hop failed)."""

    name: ClassVar[str] = "failover"
    key: Hashable
    next_hop: Address
    request: bytes
    at: float
    resends: int
    reason: str = "timer_b"
    forwarded_at: float | None = None


@dataclass(frozen=True, eq=False, slots=True)
class HopFailed:
    """A next hop was declared failed (once, on the first failover towards it)."""

    name: ClassVar[str] = "hop_failed"
    next_hop: Address
    at: float
    key: Hashable


class DetectorState(enum.Enum):
    SIP_RECEIVED = "SIP Received"
    SIP_FORWARDED = "SIP Forwarded"
    FAST_RETRY = "Fast Retry"
    FAILED = "Failed"
    DONE = "Done"


class DetectorInput(enum.Enum):
    FORWARD = "forward the request"
    RESPONSE = "receive a response"
    TIMER_A = "fire Timer A"
    RETRY = "fire the fast-retry timer"
    TIMER_B = "fire Timer B"
    HOP_FAILED = "fail over because the hop failed"


_D = DetectorState
_DI = DetectorInput

#: (state, input) -> (new state, action). Every missing row raises FailureDetectorStateError.
FAILURE_DETECTOR_TABLE: dict[tuple[DetectorState, DetectorInput],
                             tuple[DetectorState, str | None]] = {
    (_D.SIP_RECEIVED, _DI.FORWARD): (_D.SIP_FORWARDED, "_send_first"),
    (_D.SIP_FORWARDED, _DI.RESPONSE): (_D.DONE, "_answered"),
    (_D.SIP_FORWARDED, _DI.TIMER_A): (_D.FAST_RETRY, "_start_fast_retry"),
    (_D.SIP_FORWARDED, _DI.HOP_FAILED): (_D.FAILED, "_failover"),
    (_D.FAST_RETRY, _DI.RETRY): (_D.FAST_RETRY, "_resend"),
    (_D.FAST_RETRY, _DI.RESPONSE): (_D.DONE, "_answered"),
    (_D.FAST_RETRY, _DI.TIMER_B): (_D.FAILED, "_failover"),
    (_D.FAST_RETRY, _DI.HOP_FAILED): (_D.FAILED, "_failover"),
    (_D.DONE, _DI.RESPONSE): (_D.DONE, None),
    (_D.DONE, _DI.HOP_FAILED): (_D.DONE, None),
    (_D.FAILED, _DI.RESPONSE): (_D.FAILED, "_late_response"),
    (_D.FAILED, _DI.HOP_FAILED): (_D.FAILED, None),
}

_STATE_TIMERS = {
    _D.SIP_FORWARDED: frozenset({"A"}),
    _D.FAST_RETRY: frozenset({"retry", "B"}),
}
_TIMER_INPUTS = {"A": _DI.TIMER_A, "retry": _DI.RETRY, "B": _DI.TIMER_B}
_RETRANSMIT = frozenset({"retry"})


class FailureDetector:
    """``FailureDetector(request, next_hop, *, config=FailureDetectorConfig(), key=None)``.

    ``request`` (bytes or a SipMessage, encoded once, on the first resend) is what is sent to ``next_hop`` (an
    opaque address) by :meth:`forward` and every resend. ``key`` names the request in events
    (e.g. its branch). Events: :class:`Failover` ("failover").
    """

    def __init__(self, request: "bytes | SipMessage", next_hop: Address, *,
                 config: FailureDetectorConfig = FailureDetectorConfig(),
                 key: Hashable = None) -> None:
        if not isinstance(config, FailureDetectorConfig):
            raise TypeError(f"config must be a FailureDetectorConfig, got {type(config).__name__}")
        self._request = request
        self.next_hop = next_hop
        self.config = config
        self.key = key
        self.state = DetectorState.SIP_RECEIVED
        #: resends during fast retry (the first send is not counted)
        self.resends = 0
        self.forwarded_at: float | None = None
        self.fast_retry_at: float | None = None
        self.answered_at: float | None = None
        self.failed_at: float | None = None
        #: responses that came after the failover
        self.late_responses = 0
        self._deadlines: dict[str, float] = {}
        self._retry_index = 0
        self._outbox: list[Datagram] = []
        self._events: list[Failover] = []

    def __repr__(self) -> str:
        return f"<FailureDetector {self.key!r} -> {self.next_hop!r} {self.state.name}>"

    @property
    def request(self) -> bytes:
        """The request's bytes, encoded once, when first needed (a request answered before
        Timer A is never encoded here)."""
        request = self._request
        if not isinstance(request, bytes):
            request = self._request = bytes(request)
        return request

    # -- inputs ----------------------------------------------------------------------------

    def forward(self, now: float, *, send: bool = True) -> None:
        """Send the request to the next hop and arm Timer A. ``send=False``: the owner's
        transport has already sent it (nothing is queued, nothing encoded)."""
        self._step(_DI.FORWARD, now, send)

    def response_received(self, now: float) -> None:
        """Any response from the next hop, provisional or final, ends the watch."""
        self._step(_DI.RESPONSE, now)

    def hop_failed(self, now: float) -> None:
        """Another request declared the next hop failed: fail over now, without waiting."""
        self._step(_DI.HOP_FAILED, now, "hop_failed")

    def handle_timer(self, now: float) -> None:
        fire_due(self._deadlines, now, _RETRANSMIT,
                 lambda name, t: self._step(_TIMER_INPUTS[name], t))

    # -- outputs ---------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        return min(self._deadlines.values(), default=None)

    def timer_deadlines(self) -> dict[str, float]:
        return dict(self._deadlines)

    def datagrams_to_send(self) -> list[Datagram]:
        out, self._outbox = self._outbox, []
        return out

    def events(self) -> list[Failover]:
        out, self._events = self._events, []
        return out

    @property
    def finished(self) -> bool:
        return self.state in (DetectorState.DONE, DetectorState.FAILED)

    # -- machinery -------------------------------------------------------------------------

    def _step(self, inp: DetectorInput, now: float, arg: Any = None) -> None:
        row = FAILURE_DETECTOR_TABLE.get((self.state, inp))
        if row is None:
            raise FailureDetectorStateError(self.state, inp.value)
        new_state, action = row
        if new_state is not self.state:
            allowed = _STATE_TIMERS.get(new_state, frozenset())
            for name in [n for n in self._deadlines if n not in allowed]:
                del self._deadlines[name]
        self.state = new_state
        if action is not None:
            getattr(self, action)(now, arg)

    def _send_first(self, now: float, send: Any) -> None:
        self.forwarded_at = now
        if send:
            self._outbox.append((self.request, self.next_hop))
        self._deadlines["A"] = now + self.config.timer_a

    def _start_fast_retry(self, now: float, _: Any) -> None:
        self.fast_retry_at = now
        self._deadlines["B"] = now + self.config.timer_b
        self._retry_index = 0
        self._resend(now, None)

    def _resend(self, now: float, _: Any) -> None:
        self.resends += 1
        self._outbox.append((self.request, self.next_hop))
        start, interval = self.fast_retry_at, self.config.retry_interval
        assert start is not None
        # the first grid slot strictly after now (skips slots a late call missed)
        k = max(self._retry_index + 1, math.floor((now - start) / interval + _EPS) + 1)
        self._retry_index = k
        if k < self.config.fast_retries:
            self._deadlines["retry"] = start + k * interval

    def _answered(self, now: float, _: Any) -> None:
        self.answered_at = now

    def _failover(self, now: float, reason: Any) -> None:
        self.failed_at = now
        self._events.append(Failover(self.key, self.next_hop, self.request, now, self.resends,
                                     reason or "timer_b", self.forwarded_at))

    def _late_response(self, now: float, _: Any) -> None:
        self.late_responses += 1


def heard_since(heard: Callable[[Address], float | None], next_hop: Address,
                since: float | None) -> bool:
    """Did anything arrive from ``next_hop`` strictly after ``since`` (per ``heard``)?"""
    last = heard(next_hop)
    return last is not None and since is not None and last > since


class HopMonitor:
    """``HopMonitor(*, config=FailureDetectorConfig())``: the detectors of every request an
    actor has forwarded and not yet seen answered, grouped by next hop.

    Drive it, not the detectors: :meth:`forward`, :meth:`response_received`,
    :meth:`handle_timer`; read :meth:`get_timer`, :meth:`datagrams_to_send`, :meth:`events`.
    A detector is dropped when it is answered or fails over.

    Events, in order: when a request fails over towards a hop not yet failed, ``HopFailed``
    ("hop_failed") for the hop, then its ``Failover``, then a ``Failover`` with reason
    ``"hop_failed"`` for every other request in flight to that hop (they would only time out
    too). A hop stays failed until :meth:`mark_recovered`; requests can still be forwarded to
    it (the actor chooses the route), and their failovers do not repeat ``HopFailed``.
    """

    def __init__(self, *, config: FailureDetectorConfig = FailureDetectorConfig()) -> None:
        if not isinstance(config, FailureDetectorConfig):
            raise TypeError(f"config must be a FailureDetectorConfig, got {type(config).__name__}")
        self.config = config
        self._detectors: dict[Hashable, FailureDetector] = {}
        self._by_hop: dict[Address, dict[Hashable, FailureDetector]] = {}
        self._failed: dict[Address, float] = {}
        self._deadlines: DeadlineQueue[Hashable] = DeadlineQueue()
        self._outbox: list[Datagram] = []
        self._outbox_keys: list[Hashable] = []
        self._events: list[Failover | HopFailed] = []

    # -- inputs ----------------------------------------------------------------------------

    def forward(self, key: Hashable, request: "bytes | SipMessage", next_hop: Address,
                now: float, *, send: bool = True) -> FailureDetector:
        """Send ``request`` to ``next_hop`` and watch it under ``key`` (e.g. the branch).
        ``send=False``: already sent by the owner's transaction layer; only watch it."""
        if key in self._detectors:
            raise ValueError(f"a request with key {key!r} is already in flight")
        det = FailureDetector(request, next_hop, config=self.config, key=key)
        self._detectors[key] = det
        self._by_hop.setdefault(next_hop, {})[key] = det
        det.forward(now, send=send)
        self._collect(det, now)
        return det

    def response_received(self, key: Hashable, now: float) -> bool:
        """A response for the request ``key`` arrived. False when no such request is watched
        (already answered, already failed over, or never forwarded)."""
        det = self._detectors.get(key)
        if det is None:
            return False
        det.response_received(now)
        self._collect(det, now)
        return True

    def handle_timer(self, now: float, answered: Callable[[Hashable], bool] | None = None,
                     heard: Callable[[Address], float | None] | None = None) -> None:
        """Fire what is due at ``now``. ``answered(key)``, when given, is asked first for each
        due request: True closes it as answered (no resend, no failover). ``heard(next_hop)``,
        when given, is the last time anything arrived from the hop (``None``: never); a due
        request whose hop was heard from after it was forwarded is closed as answered too."""
        for key in self._deadlines.due(now):
            det = self._detectors.get(key)
            if det is not None:
                if (answered is not None and answered(key)) or (
                        heard is not None and heard_since(heard, det.next_hop, det.forwarded_at)):
                    det.response_received(now)
                else:
                    det.handle_timer(now)
                self._collect(det, now)

    def mark_recovered(self, next_hop: Address) -> None:
        """Forget that ``next_hop`` failed (e.g. after it was restarted or replaced)."""
        self._failed.pop(next_hop, None)

    # -- outputs ---------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        return self._deadlines.earliest()

    def datagrams_to_send(self) -> list[Datagram]:
        out, self._outbox = self._outbox, []
        self._outbox_keys = []
        return out

    def keyed_datagrams_to_send(self) -> list[tuple[Hashable, bytes, Address]]:
        """Like :meth:`datagrams_to_send`, each datagram with the key of its request."""
        if not self._outbox:
            return []  # the common case (asked on every supervisor wake-up): nothing queued
        out = [(key, data, hop) for key, (data, hop) in zip(self._outbox_keys, self._outbox)]
        self._outbox, self._outbox_keys = [], []
        return out

    def events(self) -> list[Failover | HopFailed]:
        if not self._events:
            return []
        out, self._events = self._events, []
        return out

    def failed_hops(self) -> frozenset:
        return frozenset(self._failed)

    def is_failed(self, next_hop: Address) -> bool:
        return next_hop in self._failed

    def failed_at(self, next_hop: Address) -> float | None:
        return self._failed.get(next_hop)

    def in_flight(self, next_hop: Address | None = None) -> int:
        if next_hop is None:
            return len(self._detectors)
        return len(self._by_hop.get(next_hop, ()))

    def detector(self, key: Hashable) -> FailureDetector | None:
        return self._detectors.get(key)

    # -- machinery -------------------------------------------------------------------------

    def _collect(self, det: FailureDetector, now: float) -> None:
        sent = det.datagrams_to_send()
        self._outbox.extend(sent)
        self._outbox_keys.extend([det.key] * len(sent))
        failovers = det.events()
        if det.finished:
            self._drop(det)
        else:
            self._deadlines.update(det.key, det.get_timer())
        for ev in failovers:
            hop = ev.next_hop
            if hop in self._failed:
                self._events.append(ev)
                continue
            self._failed[hop] = now
            self._events.append(HopFailed(hop, now, ev.key))
            self._events.append(ev)
            for other in list(self._by_hop.get(hop, {}).values()):
                other.hop_failed(now)
                self._collect(other, now)

    def _drop(self, det: FailureDetector) -> None:
        self._detectors.pop(det.key, None)
        self._deadlines.discard(det.key)
        group = self._by_hop.get(det.next_hop)
        if group is not None:
            group.pop(det.key, None)
            if not group:
                del self._by_hop[det.next_hop]

"""Sans-IO SIP transactions (RFC 3261 section 17 over UDP, with RFC 6026): shared parts.

The four machines live one per file with their own transition tables:

- :mod:`actors.sip.transaction_client`: :class:`InviteClientTransaction`,
  :class:`NonInviteClientTransaction`
- :mod:`actors.sip.transaction_server`: :class:`InviteServerTransaction`,
  :class:`NonInviteServerTransaction`
- :mod:`actors.sip.transaction_layer`: :class:`TransactionLayer`, which matches messages to
  transactions and is what an actor normally talks to.

This module holds what they share: errors, the events handed to the TU, the base class and the
matching keys.

Conventions, the same for every machine here (and for :mod:`actors.sip.failure_detector`):

- **Time.** Nothing reads a clock. Every method that depends on time takes ``now`` (seconds, any
  monotonic origin). ``get_timer()`` returns the next absolute deadline or ``None``;
  ``handle_timer(now)`` fires everything due at or before ``now`` and does nothing when called
  early. A late call is tolerated: a retransmission timer fires once and is rescheduled from
  ``now`` (missed intervals are skipped, not replayed in a burst), and a timeout that is due wins
  over a retransmission that is due at the same call.
- **Output.** ``datagrams_to_send()`` drains a list of ``(bytes, destination)``. Messages are
  encoded once when first sent; retransmissions resend the very same bytes. The destination is the
  opaque address given at construction (for server transactions: where the request came from).
- **Events.** Everything for the TU is queued and drained with ``events()`` (a list of the
  dataclasses below, in the order they happened; read-only by convention: they are not frozen
  because a frozen dataclass's ``__init__`` costs several times more, and several are made per
  message); methods return ``None``. Each event has a
  ``name`` class attribute (``"response"``, ``"timeout"``, ...) for logs and ``match`` statements.
- **Errors.** A TU call the current state does not allow (a second final response, sending in
  Terminated, ...) raises :class:`TransactionStateError`. Messages from the network never raise
  for being unexpected: a response or request the state table has no row for is absorbed (and
  counted in ``ignored``), because the network is allowed to duplicate and reorder.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from actors.sip.headers import MAGIC_COOKIE
from actors.sip.message import _VIA_FAST, branch_of
from actors.sip.timers import Address, Datagram, SipTimers, fire_due

if TYPE_CHECKING:  # pragma: no cover
    from actors.sip.message import SipMessage

__all__ = [
    "TransactionError",
    "TransactionStateError",
    "TransactionMatchError",
    "TransactionEvent",
    "RequestReceived",
    "ResponseReceived",
    "AckReceived",
    "StrayResponse",
    "TimedOut",
    "TransportFailed",
    "TransactionTerminated",
    "Transaction",
    "client_key",
    "server_key",
    "MAGIC_COOKIE",
]



# --------------------------------------------------------------------------------------- errors


class TransactionError(Exception):
    """Base class of the errors raised by the transaction machines."""


class TransactionStateError(TransactionError):
    """The TU asked for something the transaction's current state does not allow."""

    def __init__(self, machine: str, state: enum.Enum, event: str) -> None:
        self.machine = machine
        self.state = state
        self.event = event
        super().__init__(f"{machine}: cannot {event} in state {state.name}")


class TransactionMatchError(TransactionError, ValueError):
    """A message was handed to a transaction it does not belong to (a bug in the caller)."""


# --------------------------------------------------------------------------------------- events


@dataclass(eq=False, slots=True)
class TransactionEvent:
    name: ClassVar[str] = "event"


@dataclass(eq=False, slots=True)
class RequestReceived(TransactionEvent):
    """A new request created a server transaction (only the layer emits this)."""

    name: ClassVar[str] = "request"
    request: "SipMessage"
    transaction: "Transaction"
    source: Address


@dataclass(eq=False, slots=True)
class ResponseReceived(TransactionEvent):
    """A response a client transaction passes up to the TU (1xx, the first non-2xx final, every
    2xx: in the RFC 6026 Accepted state 2xx retransmissions and forked 2xx still reach the TU,
    which owns the ACK for a 2xx)."""

    name: ClassVar[str] = "response"
    response: "SipMessage"
    transaction: "Transaction"


@dataclass(eq=False, slots=True)
class AckReceived(TransactionEvent):
    """An ACK for a 2xx: either one that matched an INVITE server transaction in Accepted
    (``transaction`` set) or, from the layer, one that matched none (``transaction`` None)."""

    name: ClassVar[str] = "ack"
    request: "SipMessage"
    transaction: "Transaction | None"
    source: Address = None


@dataclass(eq=False, slots=True)
class StrayResponse(TransactionEvent):
    """A response that matched no client transaction (only the layer emits this): a 2xx
    retransmission after Timer M, or a response a proxy must forward statelessly."""

    name: ClassVar[str] = "stray_response"
    response: "SipMessage"
    source: Address


@dataclass(eq=False, slots=True)
class TimedOut(TransactionEvent):
    """Timer B or F (client: the TU answers 408) or Timer H (server: the ACK never came)."""

    name: ClassVar[str] = "timeout"
    transaction: "Transaction"
    timer: str


@dataclass(eq=False, slots=True)
class TransportFailed(TransactionEvent):
    """The owner reported a transport error (e.g. ICMP unreachable) via ``transport_error()``."""

    name: ClassVar[str] = "transport_error"
    transaction: "Transaction"


@dataclass(eq=False, slots=True)
class TransactionTerminated(TransactionEvent):
    """The transaction reached Terminated (always the last event of a transaction)."""

    name: ClassVar[str] = "terminated"
    transaction: "Transaction"


# ------------------------------------------------------------------------------------- matching


#: RFC 3261 method names as constants: ``_METHODS.get(m) or m.upper()`` is ``m.upper()``, but
#: keys built with it hold one shared string per method instead of a fresh upper-cased copy per
#: message (lingering transactions keep their keys).
_METHODS = {m: m for m in ("INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "PRACK",
                           "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "INFO",
                           "PUBLISH")}


#: "SIP/2.0/UDP host:port" (a canonical top Via up to its parameters) -> its sent-by tuple: the
#: handful of peers a module talks to, each seen on every request; bounded (cleared when full).
_SENT_BY_CACHE: dict[str, tuple[str, int]] = {}
_SENT_BY_CACHE_MAX = 1024


def _sent_by(msg: "SipMessage", top: str | None = None) -> tuple[str, int] | None:
    """The top Via's sent-by (host lower-cased, default port filled in); ``top``: that Via's
    value when the caller has it already."""
    if top is None:
        try:
            top = msg.get("Via")
        except ValueError:  # SipParseError: a malformed top Via never matches anything else
            return None
        if top is None:
            return None
    if _VIA_FAST(top) is not None:
        # the canonical shape (what the codec's fast check accepts): no full Via parse needed;
        # everything before the first ";" is "SIP/2.0/<transport> <host>[:<port>]"
        prefix = top.partition(";")[0]
        cached = _SENT_BY_CACHE.get(prefix)
        if cached is not None:
            return cached
        transport, _, hostport = prefix[8:].partition(" ")
        if "[" not in hostport:
            host, colon, port = hostport.partition(":")
            if colon:
                sent_by = (host.lower(), int(port))
            else:
                sent_by = (host.lower(), 5061 if transport.upper() == "TLS" else 5060)
            if len(_SENT_BY_CACHE) >= _SENT_BY_CACHE_MAX:
                _SENT_BY_CACHE.clear()
            _SENT_BY_CACHE[prefix] = sent_by
            return sent_by
    try:
        via = msg.top_via
    except ValueError:  # SipParseError: a malformed top Via never matches anything else
        return None
    if via is None:
        return None
    port = via.port
    if port is None:
        port = 5061 if str(via.transport).upper() == "TLS" else 5060
    return (str(via.host).lower(), int(port))


def client_key(msg: "SipMessage") -> tuple[str, str] | None:
    """RFC 3261 17.1.3: a response (or the request itself) matches a client transaction by the
    top Via branch and the CSeq method. ``None`` when the message has no branch."""
    branch = msg.branch
    if not branch:
        return None
    method = msg.cseq[1]
    return (branch, _METHODS.get(method) or method.upper())


def server_key(msg: "SipMessage") -> tuple[Any, ...]:
    """RFC 3261 17.2.3: a request matches a server transaction by top Via branch, sent-by and
    method, with ACK matching the INVITE. CANCEL keeps its own method, so it gets a transaction of
    its own with the same branch as the INVITE it cancels.

    A request whose branch lacks the magic cookie (RFC 2543 peers) falls back to Call-ID, CSeq
    number, From tag and the raw top Via; that is enough for retransmissions and for the ACK of a
    non-2xx response, which is all this emulator meets.
    """
    method = msg.method
    method = _METHODS.get(method) or method.upper()
    if method == "ACK":
        method = "INVITE"
    try:
        top = msg.get("Via")
    except ValueError:  # SipParseError: a malformed top Via never matches anything else
        top = None
    branch = branch_of(top)
    if branch and branch.startswith(MAGIC_COOKIE):
        return ("3261", branch, _sent_by(msg, top), method)
    return ("2543", msg.call_id, msg.cseq[0], msg.from_tag, top, method)


# ----------------------------------------------------------------------------------------- base


class Transaction:
    """What the four machines share: timers, outbox, events, the table-driven step.

    Subclasses set ``_TABLE`` (``{(state, input): (new_state, action or None)}``),
    ``_LOCAL_INPUTS`` (inputs that come from the TU and raise when the table has no row),
    ``_STATE_TIMERS`` (the timers that may run in each state; leaving a state cancels the others),
    ``_RETRANSMIT_TIMERS`` and ``_TIMER_INPUTS`` (timer name -> input).

    Every machine is on the hot path (several per module hop), hence ``__slots__`` throughout
    the hierarchy, a ``_step`` that does no work for a transition that keeps the state, action
    names resolved to functions once per class (``_ROWS``), and a ``_dirty`` flag so that the
    layer is told about a transaction only when its timers or its state changed.
    """

    __slots__ = ("state", "destination", "timers", "ignored", "key", "_deadlines", "_outbox",
                 "_events", "_on_change", "_dirty", "_queued", "__weakref__")

    _TABLE: ClassVar[dict[tuple[Any, Any], tuple[Any, str | None]]]
    #: ``_TABLE`` with each action name resolved to the function (built per subclass)
    _ROWS: ClassVar[dict[tuple[Any, Any], tuple[Any, Callable[..., None] | None]]]
    _LOCAL_INPUTS: ClassVar[frozenset[Any]]
    _STATE_TIMERS: ClassVar[dict[Any, frozenset[str]]]
    _RETRANSMIT_TIMERS: ClassVar[frozenset[str]]
    _TIMER_INPUTS: ClassVar[dict[str, Any]]
    _TERMINATED: ClassVar[Any]
    #: True for the client machines (the layer files a terminated transaction by this)
    _IS_CLIENT: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table = getattr(cls, "_TABLE", None)
        if table is not None:  # resolved per class, so an override of an action is honoured
            cls._ROWS = {key: (new_state, None if action is None else getattr(cls, action))
                         for key, (new_state, action) in table.items()}

    def __init__(self, state: enum.Enum, destination: Address, timers: SipTimers) -> None:
        if type(timers) is not SipTimers and not isinstance(timers, SipTimers):
            raise TypeError(f"timers must be a SipTimers, got {type(timers).__name__}")
        self.state = state
        self.destination = destination
        self.timers = timers
        #: how many network messages the state table absorbed without a row (diagnostics)
        self.ignored = 0
        self.key: Any = None
        self._deadlines: dict[str, float] = {}
        self._outbox: list[Datagram] = []
        self._events: list[TransactionEvent] = []
        self._on_change: Callable[["Transaction"], None] | None = None
        #: the state or the timers changed since ``_on_change`` was last called
        self._dirty = False
        #: the deadline the layer has queued for this transaction (kept by the layer)
        self._queued: float | None = None

    # -- sans-IO surface ---------------------------------------------------------------------

    @property
    def terminated(self) -> bool:
        return self.state is self._TERMINATED

    def get_timer(self) -> float | None:
        """The next absolute deadline, or ``None`` when no timer runs."""
        deadlines = self._deadlines
        if not deadlines:
            return None
        return min(deadlines.values())

    def timer_deadlines(self) -> dict[str, float]:
        """Running timers by RFC name (a copy; for tests and logs)."""
        return dict(self._deadlines)

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at or before ``now`` (see the module docstring for late fires)."""
        deadlines = self._deadlines
        if len(deadlines) == 1:
            # the usual case (one linger timer: D, I, J, K, L or M): fire_due's own fast path,
            # inlined, since every transaction ends this way
            for name, deadline in deadlines.items():
                if deadline <= now:
                    del deadlines[name]
                    self._step(self._TIMER_INPUTS[name], now, name)
                break
        else:
            fire_due(deadlines, now, self._RETRANSMIT_TIMERS, self._fire_timer)
        self._dirty = True
        self._changed()

    def datagrams_to_send(self) -> list[Datagram]:
        """Drain the ``(bytes, destination)`` pairs queued since the last call."""
        out = self._outbox[:]
        self._outbox.clear()
        return out

    def events(self) -> list[TransactionEvent]:
        """Drain the events queued for the TU since the last call."""
        out = self._events[:]
        self._events.clear()
        return out

    def transport_error(self, now: float) -> None:
        """The owner learnt that sending failed (e.g. ICMP port unreachable)."""
        self._step(self._TRANSPORT_ERROR, now, None)
        self._changed()

    _TRANSPORT_ERROR: ClassVar[Any]

    # -- machinery ---------------------------------------------------------------------------

    def _attach(self, outbox: list[Datagram], events: list[TransactionEvent],
                on_change: Callable[["Transaction"], None]) -> None:
        """Used by the layer: share its outbox and event list, and report timer changes."""
        outbox.extend(self._outbox)
        events.extend(self._events)
        self._outbox = outbox
        self._events = events
        self._on_change = on_change

    def _changed(self) -> None:
        """Tell the owner (the layer), if the state or the timers changed since last time."""
        if self._dirty:
            self._dirty = False
            on_change = self._on_change
            if on_change is not None:
                on_change(self)

    def _fire_timer(self, name: str, now: float) -> None:
        self._step(self._TIMER_INPUTS[name], now, name)

    def _step(self, inp: Any, now: float, arg: Any) -> bool:
        """Apply one input. Returns False when a network input was absorbed (no table row)."""
        old_state = self.state
        row = self._ROWS.get((old_state, inp))
        if row is None:
            if inp in self._LOCAL_INPUTS:
                raise TransactionStateError(type(self).__name__, old_state, inp.value)
            self.ignored += 1
            return False
        new_state, action = row
        if new_state is old_state:
            if action is not None:
                action(self, now, arg)
            return True
        self.state = new_state
        self._dirty = True
        deadlines = self._deadlines
        if deadlines:
            allowed = self._STATE_TIMERS.get(new_state)
            if allowed is None:
                deadlines.clear()
            else:
                for name in [n for n in deadlines if n not in allowed]:
                    del deadlines[name]
        if action is not None:
            action(self, now, arg)
        self._enter(new_state, now)
        if new_state is self._TERMINATED:
            self._deadlines.clear()
            self._events.append(TransactionTerminated(self))
        return True

    def _enter(self, state: Any, now: float) -> None:
        """Start the timers that run from the entry of ``state`` (subclasses override)."""

    def _arm(self, name: str, deadline: float) -> None:
        self._deadlines[name] = deadline
        self._dirty = True

    def _send(self, data: bytes) -> None:
        self._outbox.append((data, self.destination))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key!r} {self.state.name}>"

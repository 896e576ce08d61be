"""Server transactions (RFC 3261 17.2 over UDP, with RFC 6026's Accepted state).

Both machines are created with the request that started them and the address it came from
(responses go back there, as with rport). The TU answers with ``send_response(response, now)``;
the network feeds retransmissions and ACKs with ``receive_request(request, now)``. See
:mod:`actors.sip.transaction` for the shared conventions (time, output, events, errors).

INVITE server transaction (RFC 6026 Fig. 7)::

    Proceeding --1xx from TU--> Proceeding (send; remembered for retransmitted INVITEs)
    Proceeding --Trying timer (200 ms, no response from the TU yet)--> Proceeding (send 100)
    Proceeding --INVITE--> Proceeding (resend the last provisional, if any)
    Proceeding --2xx from TU--> Accepted      --300-699 from TU--> Completed
    Completed  --INVITE--> Completed (resend final)   --Timer G--> Completed (resend final)
    Completed  --ACK--> Confirmed      --Timer H--> Terminated (event "timeout")
    Confirmed  --ACK/INVITE--> Confirmed (absorbed)    --Timer I--> Terminated
    Accepted   --INVITE--> Accepted (absorbed)  --ACK--> Accepted (event "ack")
    Accepted   --2xx from TU--> Accepted (send: the TU retransmits its 2xx)
    Accepted   --Timer L--> Terminated

Non-INVITE server transaction (RFC 3261 Fig. 8)::

    Trying     --request--> Trying (absorbed)   --1xx from TU--> Proceeding
    Trying/Proceeding --200-699 from TU--> Completed
    Proceeding --request--> Proceeding (resend last provisional)
    Completed  --request--> Completed (resend final)   --Timer J--> Terminated
"""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING, Any

from actors.sip.timers import Address, SipTimers
from actors.sip.transaction import (
    AckReceived,
    TimedOut,
    Transaction,
    TransactionMatchError,
    TransactionStateError,
    TransportFailed,
    _METHODS,
    server_key,
)

if TYPE_CHECKING:  # pragma: no cover
    from actors.sip.message import SipMessage

__all__ = [
    "ServerInput",
    "InviteServerState",
    "NonInviteServerState",
    "InviteServerTransaction",
    "NonInviteServerTransaction",
    "ServerTransaction",
    "DEFAULT_TRYING_DELAY",
]

#: RFC 3261 17.2.1: send 100 Trying unless the TU answers within 200 ms.
DEFAULT_TRYING_DELAY = 0.2


class ServerInput(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: identity hash, no Python-level call
    REQUEST = "receive a request retransmission"
    ACK = "receive an ACK"
    TU_PROVISIONAL = "send a 1xx"
    TU_SUCCESS = "send a 2xx"
    TU_FAILURE = "send a 300-699"
    TIMER_TRYING = "fire the 100 Trying timer"
    TIMER_G = "fire Timer G"
    TIMER_H = "fire Timer H"
    TIMER_I = "fire Timer I"
    TIMER_J = "fire Timer J"
    TIMER_L = "fire Timer L"
    TRANSPORT_ERROR = "report a transport error"


_SI = ServerInput
_TU_INPUTS = frozenset({_SI.TU_PROVISIONAL, _SI.TU_SUCCESS, _SI.TU_FAILURE})


def _parse_cseq(value: str | None) -> tuple[int, str] | None:
    """A raw CSeq value as ``SipMessage.cseq`` reads it (only for a response whose raw value
    differs from the request's)."""
    if value is None:
        return None
    from actors.sip.message import SipMessage

    return SipMessage(headers=[("CSeq", value)]).cseq


def _classify(status: int) -> ServerInput:
    if 100 <= status <= 199:
        return _SI.TU_PROVISIONAL
    if 200 <= status <= 299:
        return _SI.TU_SUCCESS
    if 300 <= status <= 699:
        return _SI.TU_FAILURE
    raise ValueError(f"cannot send a response with status {status}")


class _ServerTransaction(Transaction):
    __slots__ = ("request", "method", "_last_response", "_last_bytes", "_cseq", "_branch")
    _LOCAL_INPUTS = _TU_INPUTS
    _TRANSPORT_ERROR = _SI.TRANSPORT_ERROR

    def __init__(self, request: "SipMessage", destination: Address, now: float,
                 state: enum.Enum, timers: SipTimers, key: Any = None) -> None:
        Transaction.__init__(self, state, destination, timers)
        if request.method is None:
            raise ValueError("a server transaction is created with a request, not a response")
        self.request = request
        self.key = key = server_key(request) if key is None else key
        method = request.method
        self.method = _METHODS.get(method) or method.upper()  # one shared string per method
        # what every response of the TU must repeat (checked in send_response), read once: the
        # raw CSeq value (parsed only if a response's differs) and the top Via's branch (an
        # RFC 3261 key holds it already)
        self._cseq = request.get("CSeq")
        self._branch = key[1] if key[0] == "3261" else request.branch
        # the last response passed to the transport (see ``last_response``) and its bytes,
        # resent on request retransmissions
        self._last_response: "SipMessage | None" = None
        self._last_bytes: bytes | None = None

    @property
    def last_response(self) -> "SipMessage | None":
        """The last response passed to the transport (``None`` before the first)."""
        response = self._last_response
        if response is None and self._last_bytes is not None:
            # the automatic 100 Trying, sent as bytes only (see _send_trying): built on demand
            response = self._last_response = self.request.make_response(100, "Trying")
        return response

    @last_response.setter
    def last_response(self, response: "SipMessage | None") -> None:
        self._last_response = response

    def matches(self, request: "SipMessage") -> bool:
        """RFC 3261 17.2.3 (branch, sent-by, method; ACK matches INVITE)."""
        return request.is_request and server_key(request) == self.key

    def receive_request(self, request: "SipMessage", now: float) -> None:
        """Feed a request that matched this transaction: a retransmission or an ACK."""
        if not self.matches(request):
            raise TransactionMatchError(
                f"request {server_key(request)!r} does not match transaction {self.key!r}")
        self._receive_matched(request, now)

    def _receive_matched(self, request: "SipMessage", now: float) -> None:
        """:meth:`receive_request` for a request already matched by its key (the layer)."""
        method = request.method
        inp = _SI.ACK if method == "ACK" or method.upper() == "ACK" else _SI.REQUEST
        self._step(inp, now, request)
        self._changed()

    def send_response(self, response: "SipMessage", now: float) -> None:
        """The TU answers. Raises :class:`TransactionStateError` when the state forbids it (e.g.
        a second final response) and :class:`TransactionMatchError` for someone else's response."""
        status = response.status
        if status is None:
            raise ValueError("send_response needs a response")
        cseq = response.get("CSeq")
        # the same raw CSeq value is the usual case (make_response copies it); else compare
        # them parsed, as RFC 3261 does (e.g. "1  INVITE" is "1 INVITE")
        if ((cseq != self._cseq and _parse_cseq(cseq) != _parse_cseq(self._cseq))
                or response.branch != self._branch):
            raise TransactionMatchError(
                "the response's CSeq and top Via branch must be those of the request")
        if 200 <= status <= 299:
            inp = _SI.TU_SUCCESS
        elif 100 <= status <= 199:
            inp = _SI.TU_PROVISIONAL
        else:
            inp = _classify(status)
        self._step(inp, now, response)
        self._changed()

    # actions
    def _send_response(self, now: float, response: "SipMessage") -> None:
        data = bytes(response)
        self._last_response = response
        self._last_bytes = data
        self._outbox.append((data, self.destination))  # _send, inlined

    def _resend_last(self, now: float, _: Any) -> None:
        if self._last_bytes is not None:
            self._send(self._last_bytes)

    def _timeout(self, now: float, timer: str) -> None:
        self._events.append(TimedOut(self, timer))

    def _report_transport_error(self, now: float, _: Any) -> None:
        self._events.append(TransportFailed(self))


# ------------------------------------------------------------------------------------ INVITE


class InviteServerState(enum.Enum):
    __hash__ = object.__hash__
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


_IS = InviteServerState

#: (state, input) -> (new state, action). A TU input without a row raises
#: TransactionStateError; a network input without a row is absorbed.
INVITE_SERVER_TABLE: dict[tuple[InviteServerState, ServerInput],
                          tuple[InviteServerState, str | None]] = {
    (_IS.PROCEEDING, _SI.TU_PROVISIONAL): (_IS.PROCEEDING, "_send_provisional"),
    (_IS.PROCEEDING, _SI.TIMER_TRYING): (_IS.PROCEEDING, "_send_trying"),
    (_IS.PROCEEDING, _SI.REQUEST): (_IS.PROCEEDING, "_resend_provisional"),
    (_IS.PROCEEDING, _SI.TU_SUCCESS): (_IS.ACCEPTED, "_send_response"),
    (_IS.PROCEEDING, _SI.TU_FAILURE): (_IS.COMPLETED, "_send_response"),
    (_IS.PROCEEDING, _SI.TRANSPORT_ERROR): (_IS.TERMINATED, "_report_transport_error"),
    (_IS.COMPLETED, _SI.REQUEST): (_IS.COMPLETED, "_resend_last"),
    (_IS.COMPLETED, _SI.TIMER_G): (_IS.COMPLETED, "_retransmit_final"),
    (_IS.COMPLETED, _SI.ACK): (_IS.CONFIRMED, None),
    (_IS.COMPLETED, _SI.TIMER_H): (_IS.TERMINATED, "_timeout"),
    (_IS.COMPLETED, _SI.TRANSPORT_ERROR): (_IS.TERMINATED, "_report_transport_error"),
    (_IS.CONFIRMED, _SI.ACK): (_IS.CONFIRMED, None),
    (_IS.CONFIRMED, _SI.REQUEST): (_IS.CONFIRMED, None),
    (_IS.CONFIRMED, _SI.TIMER_I): (_IS.TERMINATED, None),
    (_IS.ACCEPTED, _SI.REQUEST): (_IS.ACCEPTED, None),
    (_IS.ACCEPTED, _SI.ACK): (_IS.ACCEPTED, "_ack_to_tu"),
    (_IS.ACCEPTED, _SI.TU_SUCCESS): (_IS.ACCEPTED, "_send_response"),
    (_IS.ACCEPTED, _SI.TRANSPORT_ERROR): (_IS.TERMINATED, "_report_transport_error"),
    (_IS.ACCEPTED, _SI.TIMER_L): (_IS.TERMINATED, None),
}


class InviteServerTransaction(_ServerTransaction):
    """RFC 3261 17.2.1 INVITE server transaction over UDP, with RFC 6026's Accepted state.

    ``InviteServerTransaction(request, destination, now, *, timers=SipTimers(),
    trying_delay=0.2)``: a 100 Trying is sent automatically when the TU has sent no response
    ``trying_delay`` seconds after creation (``0``: at once, in the constructor; ``None``: never;
    :meth:`send_trying` sends one explicitly). A 300-699 response is retransmitted on Timer G
    (T1 doubling up to T2) until the ACK comes or Timer H (64*T1) fires; after the ACK the
    transaction absorbs ACK retransmissions until Timer I (T4). After a 2xx it waits in Accepted
    until Timer L (64*T1), absorbing INVITE retransmissions; the TU retransmits its own 2xx
    through :meth:`send_response`.

    Events: ``TimedOut`` (timer "H": the ACK never came), ``AckReceived`` ("ack", in Accepted),
    ``TransportFailed``, ``TransactionTerminated``.
    """

    __slots__ = ("_provisional_bytes", "_g_interval")
    _TABLE = INVITE_SERVER_TABLE
    _STATE_TIMERS = {
        _IS.PROCEEDING: frozenset({"Trying"}),
        _IS.COMPLETED: frozenset({"G", "H"}),
        _IS.CONFIRMED: frozenset({"I"}),
        _IS.ACCEPTED: frozenset({"L"}),
    }
    _RETRANSMIT_TIMERS = frozenset({"G"})
    _TIMER_INPUTS = {"Trying": _SI.TIMER_TRYING, "G": _SI.TIMER_G, "H": _SI.TIMER_H,
                     "I": _SI.TIMER_I, "L": _SI.TIMER_L}
    _TERMINATED = _IS.TERMINATED

    def __init__(self, request: "SipMessage", destination: Address, now: float, *,
                 timers: SipTimers = SipTimers(),
                 trying_delay: float | None = DEFAULT_TRYING_DELAY, key: Any = None) -> None:
        """``key``: ``server_key(request)`` when the caller has computed it already."""
        method = request.method
        if method != "INVITE" and method.upper() != "INVITE":  # the usual case: one compare
            raise ValueError(f"InviteServerTransaction needs an INVITE, got {request.method}")
        if trying_delay is not None and not (
                # the usual case first, one comparison: a plain float, finite and >= 0
                type(trying_delay) is float and 0.0 <= trying_delay < math.inf) and (
                isinstance(trying_delay, bool) or not isinstance(trying_delay, (int, float))
                or not math.isfinite(trying_delay) or trying_delay < 0):
            raise ValueError(f"trying_delay must be None or a number >= 0, got {trying_delay!r}")
        _ServerTransaction.__init__(self, request, destination, now, _IS.PROCEEDING, timers, key)
        self._provisional_bytes: bytes | None = None
        self._g_interval = timers.g
        if trying_delay == 0:
            self._send_trying(now, None)
        elif trying_delay is not None:
            self._arm("Trying", now + trying_delay)

    def send_trying(self, now: float) -> None:
        """Send 100 Trying now, unless a provisional response has already been sent (then this
        does nothing). Raises TransactionStateError once a final response has been sent."""
        if self.state is not _IS.PROCEEDING:
            raise TransactionStateError(type(self).__name__, self.state, "send 100 Trying")
        if self._provisional_bytes is None:
            self._step(_SI.TU_PROVISIONAL, now, self._make_trying())
        self._changed()

    def _make_trying(self) -> "SipMessage":
        return self.request.make_response(100, "Trying")

    def _send_trying(self, now: float, _: Any) -> None:
        # every proxy hop sends one at once and nothing reads it: serialised straight from the
        # request (the same bytes as the response _make_trying builds; ``last_response`` builds
        # that response only if asked)
        if self._deadlines.pop("Trying", None) is not None:
            self._dirty = True
        self._provisional_bytes = self._last_bytes = data = self.request.response_bytes(
            100, "Trying")
        self._last_response = None
        self._outbox.append((data, self.destination))

    def _send_provisional(self, now: float, response: "SipMessage") -> None:
        if self._deadlines.pop("Trying", None) is not None:
            self._dirty = True
        # _send_response, inlined
        self._provisional_bytes = self._last_bytes = data = bytes(response)
        self._last_response = response
        self._outbox.append((data, self.destination))

    def _resend_provisional(self, now: float, _: Any) -> None:
        if self._provisional_bytes is not None:
            self._send(self._provisional_bytes)

    def _retransmit_final(self, now: float, _: Any) -> None:
        self._resend_last(now, None)
        self._g_interval = self.timers.next_capped(self._g_interval)
        self._arm("G", now + self._g_interval)

    def _ack_to_tu(self, now: float, ack: "SipMessage") -> None:
        self._events.append(AckReceived(ack, self, self.destination))

    def _enter(self, state: enum.Enum, now: float) -> None:
        timers = self.timers
        if state is _IS.COMPLETED:
            self._arm("G", now + self._g_interval)
            self._arm("H", now + timers.h)
        elif state is _IS.CONFIRMED:
            self._arm("I", now + timers.i)
        elif state is _IS.ACCEPTED:
            self._arm("L", now + timers.l)


# -------------------------------------------------------------------------------- non-INVITE


class NonInviteServerState(enum.Enum):
    __hash__ = object.__hash__
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


_NS = NonInviteServerState

NON_INVITE_SERVER_TABLE: dict[tuple[NonInviteServerState, ServerInput],
                              tuple[NonInviteServerState, str | None]] = {
    (_NS.TRYING, _SI.REQUEST): (_NS.TRYING, None),
    (_NS.TRYING, _SI.TU_PROVISIONAL): (_NS.PROCEEDING, "_send_response"),
    (_NS.TRYING, _SI.TU_SUCCESS): (_NS.COMPLETED, "_send_response"),
    (_NS.TRYING, _SI.TU_FAILURE): (_NS.COMPLETED, "_send_response"),
    (_NS.PROCEEDING, _SI.REQUEST): (_NS.PROCEEDING, "_resend_last"),
    (_NS.PROCEEDING, _SI.TU_PROVISIONAL): (_NS.PROCEEDING, "_send_response"),
    (_NS.PROCEEDING, _SI.TU_SUCCESS): (_NS.COMPLETED, "_send_response"),
    (_NS.PROCEEDING, _SI.TU_FAILURE): (_NS.COMPLETED, "_send_response"),
    (_NS.PROCEEDING, _SI.TRANSPORT_ERROR): (_NS.TERMINATED, "_report_transport_error"),
    (_NS.COMPLETED, _SI.REQUEST): (_NS.COMPLETED, "_resend_last"),
    (_NS.COMPLETED, _SI.TRANSPORT_ERROR): (_NS.TERMINATED, "_report_transport_error"),
    (_NS.COMPLETED, _SI.TIMER_J): (_NS.TERMINATED, None),
}


class NonInviteServerTransaction(_ServerTransaction):
    """RFC 3261 17.2.2 non-INVITE server transaction over UDP.

    ``NonInviteServerTransaction(request, destination, now, *, timers=SipTimers())``.
    Retransmissions of the request are absorbed in Trying and answered with the last response
    in Proceeding and Completed; Completed lasts Timer J (64*T1).

    Events: ``TransportFailed``, ``TransactionTerminated``.
    """

    __slots__ = ()
    _TABLE = NON_INVITE_SERVER_TABLE
    _STATE_TIMERS = {_NS.COMPLETED: frozenset({"J"})}
    _RETRANSMIT_TIMERS = frozenset()
    _TIMER_INPUTS = {"J": _SI.TIMER_J}
    _TERMINATED = _NS.TERMINATED

    def __init__(self, request: "SipMessage", destination: Address, now: float, *,
                 timers: SipTimers = SipTimers(), key: Any = None) -> None:
        """``key``: ``server_key(request)`` when the caller has computed it already."""
        method = request.method.upper()
        if method in ("INVITE", "ACK"):
            raise ValueError(f"NonInviteServerTransaction cannot carry {method}")
        _ServerTransaction.__init__(self, request, destination, now, _NS.TRYING, timers, key)

    def _enter(self, state: enum.Enum, now: float) -> None:
        if state is _NS.COMPLETED:
            self._arm("J", now + self.timers.j)


ServerTransaction = InviteServerTransaction | NonInviteServerTransaction

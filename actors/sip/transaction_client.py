"""Client transactions (RFC 3261 17.1 over UDP, with RFC 6026's Accepted state).

Both machines are created with the request and send it at construction; after that the only
inputs are responses from the network (``receive_response``), timers (``handle_timer``) and
``transport_error``. See :mod:`actors.sip.transaction` for the shared conventions (time, output,
events, errors).

INVITE client transaction (RFC 6026 Fig. 5)::

    Calling    --1xx--> Proceeding    Calling --2xx--> Accepted   Calling --300-699--> Completed
    Calling    --Timer A--> Calling (retransmit, interval doubles, no cap)
    Calling    --Timer B--> Terminated (event "timeout")
    Proceeding --1xx--> Proceeding, --2xx--> Accepted, --300-699--> Completed
    Completed  --300-699--> Completed (resend the ACK), --Timer D--> Terminated
    Accepted   --2xx--> Accepted (to TU), --Timer M--> Terminated

Non-INVITE client transaction (RFC 3261 Fig. 6)::

    Trying     --1xx--> Proceeding, --200-699--> Completed
    Trying     --Timer E--> Trying (retransmit, interval doubles up to T2)
    Proceeding --Timer E--> Proceeding (retransmit, interval T2)
    Trying/Proceeding --Timer F--> Terminated (event "timeout")
    Completed  --Timer K--> Terminated
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

from actors.sip.timers import Address, SipTimers
from actors.sip.transaction import (
    ResponseReceived,
    TimedOut,
    Transaction,
    TransactionMatchError,
    TransactionStateError,
    TransportFailed,
    client_key,
)

if TYPE_CHECKING:  # pragma: no cover
    from actors.sip.message import SipMessage

__all__ = [
    "ClientInput",
    "InviteClientState",
    "NonInviteClientState",
    "InviteClientTransaction",
    "NonInviteClientTransaction",
    "ClientTransaction",
    "build_ack",
    "build_cancel",
]


class ClientInput(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: identity hash, no Python-level call
    PROVISIONAL = "receive a 1xx"
    SUCCESS = "receive a 2xx"
    FAILURE = "receive a 300-699"
    TIMER_A = "fire Timer A"
    TIMER_B = "fire Timer B"
    TIMER_D = "fire Timer D"
    TIMER_E = "fire Timer E"
    TIMER_F = "fire Timer F"
    TIMER_K = "fire Timer K"
    TIMER_M = "fire Timer M"
    TRANSPORT_ERROR = "report a transport error"


def _classify(status: int) -> ClientInput:
    if 100 <= status <= 199:
        return ClientInput.PROVISIONAL
    if 200 <= status <= 299:
        return ClientInput.SUCCESS
    return ClientInput.FAILURE


def _first_via(request: "SipMessage") -> str:
    via = request.get("Via")  # the first value even of a "Via: a, b" line
    if via is None:
        raise ValueError("request has no Via header")
    return via


def _copy_for(request: "SipMessage", method: str, to_value: str) -> "SipMessage":
    """RFC 3261 17.1.1.3 (ACK) and 9.1 (CANCEL): same Request-URI, Call-ID, From, CSeq number,
    the single top Via of the request, its Route headers; To as given."""
    from actors.sip.message import SipMessage

    headers: list[tuple[str, str]] = [("Via", _first_via(request))]
    max_forwards = request.get("Max-Forwards")
    if max_forwards is not None:
        headers.append(("Max-Forwards", max_forwards))
    for route in request.get_all("Route"):
        headers.append(("Route", route))
    headers.append(("From", request.get("From")))
    headers.append(("To", to_value))
    headers.append(("Call-ID", request.get("Call-ID")))
    headers.append(("CSeq", f"{request.cseq[0]} {method}"))
    return SipMessage.request(method, request.uri, headers=headers)


def build_ack(request: "SipMessage", response: "SipMessage") -> "SipMessage":
    """The ACK a client transaction sends for a 300-699 response (RFC 3261 17.1.1.3)."""
    return _copy_for(request, "ACK", response.get("To"))


def build_cancel(request: "SipMessage") -> "SipMessage":
    """A CANCEL for ``request`` (RFC 3261 9.1); it has the request's branch, so it matches the
    same server transaction's sibling on the far side. Send it with a new client transaction."""
    return _copy_for(request, "CANCEL", request.get("To"))


class _ClientTransaction(Transaction):
    __slots__ = ("request", "method", "_request_bytes")
    _LOCAL_INPUTS = frozenset()
    _TRANSPORT_ERROR = ClientInput.TRANSPORT_ERROR
    _IS_CLIENT = True

    def __init__(self, request: "SipMessage", destination: Address, now: float,
                 state: enum.Enum, timers: SipTimers, key: Any = None) -> None:
        Transaction.__init__(self, state, destination, timers)
        if request.method is None:
            raise ValueError("a client transaction is created with a request, not a response")
        if key is None:
            key = client_key(request)
        if key is None or (key[1] != request.method and key[1] != request.method.upper()):
            raise ValueError("the request needs a top Via with a branch and a CSeq matching its "
                             "method to start a client transaction")
        self.request = request
        self.key = key
        self.method = key[1]
        self._request_bytes = bytes(request)
        self._send(self._request_bytes)

    def matches(self, response: "SipMessage") -> bool:
        """RFC 3261 17.1.3: same top Via branch and same CSeq method."""
        return not response.is_request and client_key(response) == self.key

    def receive_response(self, response: "SipMessage", now: float) -> None:
        """Feed a response that matched this transaction (see :meth:`matches`)."""
        if not self.matches(response):
            raise TransactionMatchError(
                f"response {client_key(response)!r} does not match transaction {self.key!r}")
        self._receive_matched(response, now)

    def _receive_matched(self, response: "SipMessage", now: float) -> None:
        """:meth:`receive_response` for a response already matched by its key (the layer)."""
        status = response.status
        self._step(_PROVISIONAL if status < 200 else _SUCCESS if status < 300 else _FAILURE,
                   now, response)
        self._changed()

    # actions shared by both machines
    def _pass_up(self, now: float, response: "SipMessage") -> None:
        self._events.append(ResponseReceived(response, self))

    def _timeout(self, now: float, timer: str) -> None:
        self._events.append(TimedOut(self, timer))

    def _report_transport_error(self, now: float, _: Any) -> None:
        self._events.append(TransportFailed(self))


# ------------------------------------------------------------------------------------ INVITE


class InviteClientState(enum.Enum):
    __hash__ = object.__hash__
    CALLING = "Calling"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


_IC = InviteClientState
_CI = ClientInput
_PROVISIONAL, _SUCCESS, _FAILURE = _CI.PROVISIONAL, _CI.SUCCESS, _CI.FAILURE

#: (state, input) -> (new state, action). A response without a row is absorbed.
INVITE_CLIENT_TABLE: dict[tuple[InviteClientState, ClientInput],
                          tuple[InviteClientState, str | None]] = {
    (_IC.CALLING, _CI.TIMER_A): (_IC.CALLING, "_retransmit_request"),
    (_IC.CALLING, _CI.TIMER_B): (_IC.TERMINATED, "_timeout"),
    (_IC.CALLING, _CI.PROVISIONAL): (_IC.PROCEEDING, "_pass_up"),
    (_IC.CALLING, _CI.SUCCESS): (_IC.ACCEPTED, "_pass_up"),
    (_IC.CALLING, _CI.FAILURE): (_IC.COMPLETED, "_pass_up_and_ack"),
    (_IC.CALLING, _CI.TRANSPORT_ERROR): (_IC.TERMINATED, "_report_transport_error"),
    (_IC.PROCEEDING, _CI.PROVISIONAL): (_IC.PROCEEDING, "_pass_up"),
    (_IC.PROCEEDING, _CI.SUCCESS): (_IC.ACCEPTED, "_pass_up"),
    (_IC.PROCEEDING, _CI.FAILURE): (_IC.COMPLETED, "_pass_up_and_ack"),
    (_IC.COMPLETED, _CI.FAILURE): (_IC.COMPLETED, "_resend_ack"),
    (_IC.COMPLETED, _CI.TRANSPORT_ERROR): (_IC.TERMINATED, "_report_transport_error"),
    (_IC.COMPLETED, _CI.TIMER_D): (_IC.TERMINATED, None),
    (_IC.ACCEPTED, _CI.SUCCESS): (_IC.ACCEPTED, "_pass_up"),
    (_IC.ACCEPTED, _CI.TIMER_M): (_IC.TERMINATED, None),
}


class InviteClientTransaction(_ClientTransaction):
    """RFC 3261 17.1.1 INVITE client transaction over UDP, with RFC 6026's Accepted state.

    ``InviteClientTransaction(request, destination, now, *, timers=SipTimers())`` sends the
    INVITE at once, arms Timer A (T1) and Timer B (64*T1). For a 300-699 response it builds and
    sends the ACK itself (:func:`build_ack`) and resends it for every retransmission of the
    final response while Completed. Each 2xx goes to the TU (which sends the ACK for a 2xx);
    the transaction then waits in Accepted for Timer M so 2xx retransmissions still match it.

    Events: ``ResponseReceived`` ("response"), ``TimedOut`` ("timeout", timer "B"),
    ``TransportFailed`` ("transport_error"), ``TransactionTerminated`` ("terminated").
    """

    __slots__ = ("ack", "_ack_bytes", "_a_interval")
    _TABLE = INVITE_CLIENT_TABLE
    _STATE_TIMERS = {
        _IC.CALLING: frozenset({"A", "B"}),
        _IC.COMPLETED: frozenset({"D"}),
        _IC.ACCEPTED: frozenset({"M"}),
    }
    _RETRANSMIT_TIMERS = frozenset({"A"})
    _TIMER_INPUTS = {"A": _CI.TIMER_A, "B": _CI.TIMER_B, "D": _CI.TIMER_D, "M": _CI.TIMER_M}
    _TERMINATED = _IC.TERMINATED

    def __init__(self, request: "SipMessage", destination: Address, now: float, *,
                 timers: SipTimers = SipTimers(), key: Any = None) -> None:
        """``key``: ``client_key(request)`` when the caller has computed it already."""
        method = request.method
        if method != "INVITE" and method.upper() != "INVITE":  # the usual case: one compare
            raise ValueError(f"InviteClientTransaction needs an INVITE, got {request.method}")
        _ClientTransaction.__init__(self, request, destination, now, _IC.CALLING, timers, key)
        self.ack: "SipMessage | None" = None
        self._ack_bytes: bytes | None = None
        self._a_interval = a = timers.a
        deadlines = self._deadlines  # _arm("A", ...), _arm("B", ...), inlined
        deadlines["A"] = now + a
        deadlines["B"] = now + timers.b
        self._dirty = True

    def make_cancel(self) -> "SipMessage":
        """The CANCEL for this INVITE (RFC 3261 9.1). Only allowed in Proceeding: before a
        provisional response the CANCEL must not be sent, after a final one it is pointless."""
        if self.state is not _IC.PROCEEDING:
            raise TransactionStateError(type(self).__name__, self.state, "build a CANCEL")
        return build_cancel(self.request)

    def _retransmit_request(self, now: float, _: Any) -> None:
        self._send(self._request_bytes)
        self._a_interval = self.timers.next_a(self._a_interval)
        self._arm("A", now + self._a_interval)

    def _pass_up_and_ack(self, now: float, response: "SipMessage") -> None:
        self._pass_up(now, response)
        self.ack = build_ack(self.request, response)
        self._ack_bytes = bytes(self.ack)
        self._send(self._ack_bytes)

    def _resend_ack(self, now: float, response: "SipMessage") -> None:
        assert self._ack_bytes is not None
        self._send(self._ack_bytes)

    def _enter(self, state: enum.Enum, now: float) -> None:
        if state is _IC.COMPLETED:
            self._arm("D", now + self.timers.d)
        elif state is _IC.ACCEPTED:
            self._arm("M", now + self.timers.m)


# -------------------------------------------------------------------------------- non-INVITE


class NonInviteClientState(enum.Enum):
    __hash__ = object.__hash__
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


_NC = NonInviteClientState

NON_INVITE_CLIENT_TABLE: dict[tuple[NonInviteClientState, ClientInput],
                              tuple[NonInviteClientState, str | None]] = {
    (_NC.TRYING, _CI.TIMER_E): (_NC.TRYING, "_retransmit_request"),
    (_NC.TRYING, _CI.TIMER_F): (_NC.TERMINATED, "_timeout"),
    (_NC.TRYING, _CI.PROVISIONAL): (_NC.PROCEEDING, "_pass_up"),
    (_NC.TRYING, _CI.SUCCESS): (_NC.COMPLETED, "_pass_up"),
    (_NC.TRYING, _CI.FAILURE): (_NC.COMPLETED, "_pass_up"),
    (_NC.TRYING, _CI.TRANSPORT_ERROR): (_NC.TERMINATED, "_report_transport_error"),
    (_NC.PROCEEDING, _CI.TIMER_E): (_NC.PROCEEDING, "_retransmit_request"),
    (_NC.PROCEEDING, _CI.TIMER_F): (_NC.TERMINATED, "_timeout"),
    (_NC.PROCEEDING, _CI.PROVISIONAL): (_NC.PROCEEDING, "_pass_up"),
    (_NC.PROCEEDING, _CI.SUCCESS): (_NC.COMPLETED, "_pass_up"),
    (_NC.PROCEEDING, _CI.FAILURE): (_NC.COMPLETED, "_pass_up"),
    (_NC.PROCEEDING, _CI.TRANSPORT_ERROR): (_NC.TERMINATED, "_report_transport_error"),
    (_NC.COMPLETED, _CI.TIMER_K): (_NC.TERMINATED, None),
}


class NonInviteClientTransaction(_ClientTransaction):
    """RFC 3261 17.1.2 non-INVITE client transaction over UDP.

    ``NonInviteClientTransaction(request, destination, now, *, timers=SipTimers())`` sends the
    request at once and arms Timer E (T1) and Timer F (64*T1). E doubles up to T2 while Trying;
    once Proceeding, each firing of E re-arms it with T2 (the pending E is not moved when the
    provisional arrives, RFC 3261 17.1.2.2). Final responses go to the TU once; retransmissions
    of them are absorbed in Completed until Timer K (T4).

    Events: ``ResponseReceived``, ``TimedOut`` (timer "F"), ``TransportFailed``,
    ``TransactionTerminated``.
    """

    __slots__ = ("_e_interval",)
    _TABLE = NON_INVITE_CLIENT_TABLE
    _STATE_TIMERS = {
        _NC.TRYING: frozenset({"E", "F"}),
        _NC.PROCEEDING: frozenset({"E", "F"}),
        _NC.COMPLETED: frozenset({"K"}),
    }
    _RETRANSMIT_TIMERS = frozenset({"E"})
    _TIMER_INPUTS = {"E": _CI.TIMER_E, "F": _CI.TIMER_F, "K": _CI.TIMER_K}
    _TERMINATED = _NC.TERMINATED

    def __init__(self, request: "SipMessage", destination: Address, now: float, *,
                 timers: SipTimers = SipTimers(), key: Any = None) -> None:
        """``key``: ``client_key(request)`` when the caller has computed it already."""
        method = request.method.upper()
        if method in ("INVITE", "ACK"):
            raise ValueError(f"NonInviteClientTransaction cannot carry {method}")
        _ClientTransaction.__init__(self, request, destination, now, _NC.TRYING, timers, key)
        self._e_interval = e = timers.e
        deadlines = self._deadlines  # _arm("E", ...), _arm("F", ...), inlined
        deadlines["E"] = now + e
        deadlines["F"] = now + timers.f
        self._dirty = True

    def _retransmit_request(self, now: float, _: Any) -> None:
        self._send(self._request_bytes)
        if self.state is _NC.TRYING:
            self._e_interval = self.timers.next_capped(self._e_interval)
        else:
            self._e_interval = self.timers.t2
        self._arm("E", now + self._e_interval)

    def _enter(self, state: enum.Enum, now: float) -> None:
        if state is _NC.COMPLETED:
            self._arm("K", now + self.timers.k)


ClientTransaction = InviteClientTransaction | NonInviteClientTransaction

"""Sans-IO SIP dialogs (RFC 3261 section 12; BYE as in section 15).

A :class:`Dialog` is the state two UAs share between an INVITE (or another dialog-creating
request) and its BYE: the dialog id (Call-ID, local tag, remote tag), the sequence numbers, the
local and remote URIs, the remote target and the route set. It builds in-dialog requests
(:meth:`Dialog.create_request`, with the loose/strict routing rules of 12.2.1.1) and checks
in-dialog requests it receives (:meth:`Dialog.receive_request`, CSeq ordering of 12.2.2 and
target refresh).

A dialog has no timers and sends nothing itself, so it has no ``get_timer``/``handle_timer``:
requests it builds are handed to a transaction (or, for the ACK of a 2xx, sent statelessly) by
the owner. It reports by return values and exceptions, never through an event list:

- :class:`DialogStateError`: the owner asked for something the state forbids (a request on a
  terminated dialog, a BYE from the callee on an early dialog).
- :class:`DialogRequestError` (from :meth:`receive_request`): the request must be rejected;
  ``status_hint`` is the response to send (500 out-of-order CSeq, 481 terminated dialog).
- :class:`DialogMatchError`: the message does not belong to this dialog (an owner bug, or a
  forked 2xx that needs a dialog of its own).

States (``DIALOG_TABLE``)::

    Early     --1xx--> Early              Early --2xx to INVITE--> Confirmed
    Early     --non-2xx final to the initial INVITE--> Terminated
    Early/Confirmed --BYE sent or received, 481/408 response, terminate()--> Terminated
    Confirmed --2xx to INVITE--> Confirmed (re-INVITE, or a 2xx retransmission)
"""

from __future__ import annotations

import enum
from functools import lru_cache
from dataclasses import dataclass
from typing import Iterable

from actors.sip.headers import TOKEN_CHARS, SipUri, new_branch, parse_name_addr, parse_via
from actors.sip.message import SipMessage

__all__ = [
    "DialogState",
    "DialogInput",
    "DIALOG_TABLE",
    "DialogId",
    "Dialog",
    "DialogError",
    "DialogStateError",
    "DialogRequestError",
    "DialogMatchError",
    "TARGET_REFRESH_METHODS",
]

#: Requests whose Contact replaces the remote target (RFC 3261 12.2, RFC 3311 UPDATE,
#: RFC 6665 SUBSCRIBE/NOTIFY, RFC 3515 REFER).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})

#: URI parameters not allowed in a Request-URI (RFC 3261 19.1.1 Table 1): stripped when a
#: strict router's URI becomes the Request-URI.
_NOT_IN_REQUEST_URI = frozenset({"method"})

DEFAULT_MAX_FORWARDS = 70


# --------------------------------------------------------------------------------------- errors


class DialogError(Exception):
    """Base class of the dialog errors."""


class DialogStateError(DialogError):
    """The owner asked for something the dialog's state does not allow."""

    def __init__(self, state: "DialogState", event: str) -> None:
        self.state = state
        self.event = event
        super().__init__(f"Dialog: cannot {event} in state {state.name}")


class DialogRequestError(DialogError):
    """An in-dialog request that must be rejected; answer it with ``status_hint``."""

    def __init__(self, reason: str, status_hint: int) -> None:
        self.reason = reason
        self.status_hint = status_hint
        super().__init__(f"{status_hint} {reason}")


class DialogMatchError(DialogError, ValueError):
    """The message does not belong to this dialog."""


# ---------------------------------------------------------------------------------- the table


class DialogState(enum.Enum):
    EARLY = "Early"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class DialogInput(enum.Enum):
    PROVISIONAL = "receive or send a 1xx to the INVITE"
    CONFIRM = "receive or send a 2xx to an INVITE"
    REJECT = "receive or send a non-2xx final response to the initial INVITE"
    END = "end on a 481/408 response or a transaction timeout"
    SEND_REQUEST = "send an in-dialog request"
    RECEIVE_REQUEST = "receive an in-dialog request"
    SEND_BYE = "send BYE"
    RECEIVE_BYE = "receive BYE"


_S = DialogState
_I = DialogInput

#: (state, input) -> new state. Missing rows raise DialogStateError for the owner's own
#: actions; responses without a row are ignored; a request on a terminated dialog is 481.
DIALOG_TABLE: dict[tuple[DialogState, DialogInput], DialogState] = {
    (_S.EARLY, _I.PROVISIONAL): _S.EARLY,
    (_S.EARLY, _I.CONFIRM): _S.CONFIRMED,
    (_S.EARLY, _I.REJECT): _S.TERMINATED,
    (_S.EARLY, _I.END): _S.TERMINATED,
    (_S.EARLY, _I.SEND_REQUEST): _S.EARLY,
    (_S.EARLY, _I.RECEIVE_REQUEST): _S.EARLY,
    (_S.EARLY, _I.SEND_BYE): _S.TERMINATED,
    (_S.EARLY, _I.RECEIVE_BYE): _S.TERMINATED,
    (_S.CONFIRMED, _I.CONFIRM): _S.CONFIRMED,
    (_S.CONFIRMED, _I.END): _S.TERMINATED,
    (_S.CONFIRMED, _I.SEND_REQUEST): _S.CONFIRMED,
    (_S.CONFIRMED, _I.RECEIVE_REQUEST): _S.CONFIRMED,
    (_S.CONFIRMED, _I.SEND_BYE): _S.TERMINATED,
    (_S.CONFIRMED, _I.RECEIVE_BYE): _S.TERMINATED,
    (_S.TERMINATED, _I.END): _S.TERMINATED,
}

_RESPONSE_INPUTS = frozenset({_I.PROVISIONAL, _I.CONFIRM, _I.REJECT})

# DIALOG_TABLE by member names, {state name: {input name: new state}}: what the per-message
# look-ups use (an enum member's hash is a Python-level call; its ``_name_`` is a plain str).
_ROWS: dict[str, dict[str, DialogState]] = {state._name_: {} for state in DialogState}
for (_state, _input), _new in DIALOG_TABLE.items():
    _ROWS[_state._name_][_input._name_] = _new
del _state, _input, _new


# ---------------------------------------------------------------------------------- dialog id


@dataclass(frozen=True, slots=True)
class DialogId:
    """RFC 3261 12: Call-ID plus local and remote tag, seen from one UA."""

    call_id: str
    local_tag: str | None
    remote_tag: str | None

    @classmethod
    def of_request_received(cls, request: SipMessage) -> "DialogId":
        """The id an incoming in-dialog request names at its recipient (local = To tag)."""
        return cls(request.call_id, request.to_tag, request.from_tag)

    @classmethod
    def of_response_received(cls, response: SipMessage) -> "DialogId":
        """The id a response names at the UAC that sent the request (local = From tag)."""
        return cls(response.call_id, response.from_tag, response.to_tag)


# ---------------------------------------------------------------------------------- helpers


def _contact_uri(msg: SipMessage) -> str | None:
    contact = msg.get("Contact")
    if contact is None or contact.strip() == "*":
        return None
    return _uri_of(contact)


#: value -> str(parse_name_addr(value).uri) for the last few hundred distinct values: a UA's
#: Contact (and a peer's) is the same in every dialog it makes, and parsing it is most of the
#: cost of building a dialog. Only values that parsed are kept (a bad one raises each time).
@lru_cache(maxsize=512)
def _uri_of(value: str) -> str:
    return str(parse_name_addr(value).uri)


#: first route value -> None (its URI has ``lr``: loose routing) or the Request-URI a strict
#: router's route gives (RFC 3261 12.2.1.1), for the last few hundred distinct values: every
#: dialog through the same proxies has the same first route, and parsing it was most of
#: ``_routing``. Only values that parsed are kept (a bad one raises each time).
@lru_cache(maxsize=512)
def _strict_uri_of(route: str) -> str | None:
    first = parse_name_addr(route).uri
    return None if first.has_param("lr") else _request_uri_from_route(first)


def _own_request(method: str, uri: str, headers: list[tuple[str, str]], body: bytes) -> SipMessage:
    """``SipMessage.request(method, uri, headers, body)`` for the headers ``create_request``
    builds itself: their names are already canonical (literals), so the per-header
    canonicalisation is skipped. The values (tags, parties, Call-ID, routes, Contact, mostly
    copied from parsed messages) are checked in one pass: any CR, LF or NUL anywhere, or a
    value that is not a str, and the request is built by ``SipMessage.request`` after all,
    with its checks and errors. The method and Request-URI are checked as it checks them."""
    try:
        joined = "".join([v for _, v in headers])
    except TypeError:  # a value that is not a str
        return SipMessage.request(method, uri, headers=headers, body=body)
    if "\r" in joined or "\n" in joined or "\x00" in joined or not method \
            or type(uri) is not str or not TOKEN_CHARS.issuperset(method):
        return SipMessage.request(method, uri, headers=headers, body=body)
    if not uri or not uri.isprintable() or " " in uri:
        raise ValueError(f"bad Request-URI {uri!r}")
    return SipMessage(method, uri, None, None, headers, bytes(body))


def _via_prefix(value: str) -> str:
    via = parse_via(value)
    hp = via.host if via.port is None else f"{via.host}:{via.port}"
    return f"SIP/2.0/{via.transport} {hp}"


def _request_uri_from_route(uri: SipUri) -> str:
    params = {k: v for k, v in uri.params.items() if k.lower() not in _NOT_IN_REQUEST_URI}
    return str(SipUri(uri.scheme, uri.user, uri.password, uri.host, uri.port, params, {}))


# ----------------------------------------------------------------------------------- Dialog


class Dialog:
    """One dialog as seen by one UA. Build it with :meth:`from_uac` or :meth:`from_uas`.

    Attributes (RFC 3261 12.1): ``call_id``, ``local_tag``, ``remote_tag``, ``local_seq``
    (``None`` while empty), ``remote_seq`` (``None`` while empty), ``local_uri``,
    ``remote_uri``, ``remote_target`` (URI strings), ``route_set`` (list of Route values, in
    the order they go into requests), ``local_target`` (our Contact URI or ``None``),
    ``is_uac``, ``state``.
    """

    def __init__(self, *, call_id: str, local_tag: str, remote_tag: str,
                 local_seq: int | None, remote_seq: int | None,
                 local_party: str, remote_party: str, remote_target: str,
                 route_set: Iterable[str], local_target: str | None, is_uac: bool,
                 state: DialogState, via: str | None = None,
                 invite_seq: int | None = None,
                 initial_invite_seq: int | None = None) -> None:
        if not call_id or not local_tag or not remote_tag:
            raise DialogError("a dialog needs a Call-ID, a local tag and a remote tag")
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        #: the From value of our requests (local URI with our tag) and their To value
        self.local_party = local_party
        self.remote_party = remote_party
        self.local_uri = _uri_of(local_party)
        self.remote_uri = _uri_of(remote_party)
        self.remote_target = remote_target
        self.route_set = list(route_set)
        self.local_target = local_target
        self.is_uac = is_uac
        self.state = state
        #: ``SIP/2.0/UDP host:port`` for the Via of requests we build (None: the owner adds Via)
        self.via = via
        #: CSeq of the last INVITE we sent (what an ACK reuses)
        self._invite_seq = invite_seq
        #: CSeq of the INVITE that created the dialog (its non-2xx final ends an early dialog)
        self._initial_invite_seq = initial_invite_seq

    def __repr__(self) -> str:
        return (f"<Dialog {self.call_id!r} local={self.local_tag!r} remote={self.remote_tag!r} "
                f"{self.state.name}>")

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_uac(cls, request: SipMessage, response: SipMessage, *,
                 via: str | None = None) -> "Dialog":
        """The dialog a UAC gets from the request it sent and a 101-199 (with To tag, early)
        or 2xx (confirmed) response. The route set is the response's Record-Route, reversed;
        the remote target its Contact (the Request-URI when a provisional has none). ``via``
        defaults to the transport and sent-by of the request's top Via."""
        status = response.status or 0
        if not 101 <= status <= 299:
            raise DialogError(f"a {status} response does not create a dialog")
        if not response.to_tag:
            raise DialogError("the response has no To tag")
        if response.call_id != request.call_id or response.from_tag != request.from_tag:
            raise DialogMatchError("the response does not answer this request")
        seq, method = request.cseq
        remote_target = _contact_uri(response)
        if remote_target is None:
            if status >= 200:
                raise DialogError("a 2xx that creates a dialog needs a Contact")
            remote_target = request.uri
        top_via = request.get("Via")
        return cls(
            call_id=request.call_id,
            local_tag=request.from_tag,
            remote_tag=response.to_tag,
            local_seq=seq,
            remote_seq=None,
            local_party=request.get("From"),
            remote_party=response.get("To"),
            remote_target=remote_target,
            route_set=reversed(response.get_all("Record-Route")),
            local_target=_contact_uri(request),
            is_uac=True,
            state=DialogState.CONFIRMED if status >= 200 else DialogState.EARLY,
            via=via if via is not None else (_via_prefix(top_via) if top_via else None),
            invite_seq=seq if method.upper() == "INVITE" else None,
            initial_invite_seq=seq if method.upper() == "INVITE" else None,
        )

    @classmethod
    def from_uas(cls, request: SipMessage, response: SipMessage, *,
                 via: str | None = None) -> "Dialog":
        """The dialog a UAS gets from the request it received and the 101-199 or 2xx response
        it sends (which carries our To tag and Contact). The route set is the request's
        Record-Route in order; the remote target the request's Contact. ``via`` is our
        ``SIP/2.0/UDP host:port`` for requests we send in the dialog (``None``: the owner adds
        the Via). Our first request starts our CSeq at 1."""
        status = response.status or 0
        if not 101 <= status <= 299:
            raise DialogError(f"a {status} response does not create a dialog")
        if not response.to_tag:
            raise DialogError("the response has no To tag")
        if not request.from_tag:
            raise DialogError("the request has no From tag")
        remote_target = _contact_uri(request)
        if remote_target is None:
            raise DialogError("a dialog-creating request needs a Contact")
        seq, method = request.cseq
        return cls(
            call_id=request.call_id,
            local_tag=response.to_tag,
            remote_tag=request.from_tag,
            local_seq=None,
            remote_seq=seq,
            local_party=response.get("To"),
            remote_party=request.get("From"),
            remote_target=remote_target,
            route_set=request.get_all("Record-Route"),
            local_target=_contact_uri(response),
            is_uac=False,
            state=DialogState.CONFIRMED if status >= 200 else DialogState.EARLY,
            via=via,
            initial_invite_seq=seq if method.upper() == "INVITE" else None,
        )

    # -- identity --------------------------------------------------------------------------

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    def matches_request(self, request: SipMessage) -> bool:
        """An incoming request belongs to this dialog (Call-ID, To tag = ours, From tag)."""
        # The comparison of DialogId.of_request_received(request) with self.id, field by field.
        return (request.call_id == self.call_id and request.to_tag == self.local_tag
                and request.from_tag == self.remote_tag)

    def matches_response(self, response: SipMessage) -> bool:
        """A response to one of our requests belongs to this dialog."""
        return (response.call_id == self.call_id and response.from_tag == self.local_tag
                and response.to_tag == self.remote_tag)

    # -- the table -------------------------------------------------------------------------

    def _step(self, inp: DialogInput) -> bool:
        new = _ROWS[self.state._name_].get(inp._name_)  # DIALOG_TABLE.get((self.state, inp))
        if new is None:
            if inp in _RESPONSE_INPUTS:
                return False
            raise DialogStateError(self.state, inp.value)
        self.state = new
        return True

    @property
    def terminated(self) -> bool:
        return self.state is DialogState.TERMINATED

    def terminate(self) -> None:
        """End the dialog (e.g. an in-dialog request timed out, RFC 3261 12.2.1.2)."""
        self._step(_I.END)

    # -- requests we send ------------------------------------------------------------------

    def create_request(self, method: str, body: bytes = b"",
                       headers: Iterable[tuple[str, str]] = ()) -> SipMessage:
        """Build an in-dialog request (RFC 3261 12.2.1.1).

        CSeq: ACK reuses the number of the last INVITE we sent in this dialog; every other
        method takes the local sequence number plus one. CANCEL is not built here (it copies
        the INVITE it cancels: ``InviteClientTransaction.make_cancel()``).

        Routing: an empty route set sends to the remote target. If the first route has ``lr``
        (loose routing) the Request-URI is the remote target and Route is the route set; else
        (strict routing) the first route's URI, stripped of parameters a Request-URI may not
        carry, becomes the Request-URI, and Route is the rest of the route set followed by the
        remote target.

        Headers: Via (``self.via`` with a new branch, when set), Max-Forwards 70, Route, From
        (local URI, local tag), To (remote URI, remote tag), Call-ID, CSeq, Contact for target
        refresh requests (when we know our Contact and ``headers`` has none), then ``headers``.
        Sending BYE terminates the dialog (section 15.1.1); a UAS must not send BYE on an early
        dialog (section 15).
        """
        method = method.upper()
        if method == "CANCEL":
            raise DialogError("CANCEL is not an in-dialog request: build it from the INVITE "
                              "(InviteClientTransaction.make_cancel())")
        if method == "BYE":
            if self.state is DialogState.EARLY and not self.is_uac:
                raise DialogStateError(self.state, "send BYE as the callee")
            inp = _I.SEND_BYE
        else:
            inp = _I.SEND_REQUEST
        if _ROWS[self.state._name_].get(inp._name_) is None:  # no DIALOG_TABLE row
            raise DialogStateError(self.state, inp.value)
        if method == "ACK":
            if self._invite_seq is None:
                raise DialogStateError(self.state, "send ACK without an INVITE")
            seq = self._invite_seq
        else:
            seq = 1 if self.local_seq is None else self.local_seq + 1
        extra = list(headers)
        extra_names = {name.lower() for name, _ in extra}

        request_uri, routes = self._routing()
        out: list[tuple[str, str]] = []
        if self.via is not None and "via" not in extra_names and "v" not in extra_names:
            out.append(("Via", f"{self.via};branch={new_branch()}"))
        if "max-forwards" not in extra_names:
            out.append(("Max-Forwards", str(DEFAULT_MAX_FORWARDS)))
        out.extend(("Route", r) for r in routes)
        out.append(("From", self.local_party))
        out.append(("To", self.remote_party))
        out.append(("Call-ID", self.call_id))
        out.append(("CSeq", f"{seq} {method}"))
        if (method in TARGET_REFRESH_METHODS and self.local_target is not None
                and "contact" not in extra_names and "m" not in extra_names):
            out.append(("Contact", f"<{self.local_target}>"))
        if extra:
            out.extend(extra)
            request = SipMessage.request(method, request_uri, headers=out, body=body)
        else:
            request = _own_request(method, request_uri, out, body)

        # Only now that the request is built does the dialog state move.
        if method != "ACK":
            self.local_seq = seq
        if method == "INVITE":
            self._invite_seq = seq
        self._step(inp)
        return request

    def _routing(self) -> tuple[str, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        strict_uri = _strict_uri_of(self.route_set[0])
        if strict_uri is None:  # the first route has lr: loose routing
            return self.remote_target, list(self.route_set)
        return (strict_uri, list(self.route_set[1:]) + [f"<{self.remote_target}>"])

    # -- requests we receive ---------------------------------------------------------------

    def receive_request(self, request: SipMessage) -> None:
        """Check and apply an incoming in-dialog request (RFC 3261 12.2.2).

        Raises :class:`DialogRequestError` with ``status_hint`` 500 when its CSeq is lower
        than the remote sequence number (out of order) and 481 when the dialog is terminated;
        the state is then unchanged. Otherwise records the CSeq (ACK and CANCEL carry the
        number of the request they refer to and are not checked), replaces the remote target
        with the Contact of a target refresh request, and terminates the dialog on BYE.
        """
        if not request.is_request:
            raise ValueError("receive_request needs a request")
        if not self.matches_request(request):
            raise DialogMatchError(
                f"request {DialogId.of_request_received(request)} is not for dialog {self.id}")
        if self.state is DialogState.TERMINATED:
            raise DialogRequestError("dialog terminated", 481)
        method = request.method.upper()
        seq = request.cseq[0]
        if method not in ("ACK", "CANCEL"):
            if self.remote_seq is not None and seq < self.remote_seq:
                raise DialogRequestError(
                    f"CSeq {seq} is lower than the remote sequence number {self.remote_seq}",
                    500)
            self.remote_seq = seq
        if method in TARGET_REFRESH_METHODS:
            contact = _contact_uri(request)
            if contact is not None:
                self.remote_target = contact
        self._step(_I.RECEIVE_BYE if method == "BYE" else _I.RECEIVE_REQUEST)

    # -- responses -------------------------------------------------------------------------

    def receive_response(self, response: SipMessage) -> None:
        """Apply a response to a request we sent in (or to create) this dialog (UAC side).

        A 2xx to an INVITE confirms an early dialog and then recomputes the route set from the
        2xx's Record-Route (RFC 3261 13.2.2.4); a 2xx to a target refresh request replaces the
        remote target with its Contact; a non-2xx final response to the initial INVITE ends an
        early dialog; a 481 or 408 ends the dialog (12.2.1.2). A 2xx from another To tag is a
        different (forked) dialog: :class:`DialogMatchError`.
        """
        if response.is_request:
            raise ValueError("receive_response needs a response")
        if not self.matches_response(response):
            raise DialogMatchError(
                f"response {DialogId.of_response_received(response)} is not for dialog "
                f"{self.id}")
        self._apply_response(response, received=True)

    def response_sent(self, response: SipMessage) -> None:
        """Record a response we (the UAS) send in this dialog: our 2xx to an INVITE confirms an
        early dialog, our non-2xx final response to the initial INVITE ends it."""
        if response.is_request:
            raise ValueError("response_sent needs a response")
        if not self.matches_request(response):  # our tag is the To tag, theirs the From tag
            raise DialogMatchError(f"response is not for dialog {self.id}")
        self._apply_response(response, received=False)

    def _apply_response(self, response: SipMessage, *, received: bool) -> None:
        status = response.status
        seq, method = response.cseq
        method = method.upper()
        if status in (481, 408):
            self._step(_I.END)
            return
        if method == "INVITE":
            if status < 200:
                self._step(_I.PROVISIONAL)
                return
            if status >= 300:
                if seq == self._initial_invite_seq and self.state is DialogState.EARLY:
                    self._step(_I.REJECT)
                return
            was_early = self.state is DialogState.EARLY
            if not self._step(_I.CONFIRM):
                return
            if received and was_early:
                self.route_set = list(reversed(response.get_all("Record-Route")))
        if received and 200 <= status < 300 and method in TARGET_REFRESH_METHODS:
            contact = _contact_uri(response)
            if contact is not None:
                self.remote_target = contact

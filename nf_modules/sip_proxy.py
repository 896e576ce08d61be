"""``StatefulProxy``: the transaction-stateful forwarding every IMS proxy module shares.

RFC 3261 section 16 for one target per request: each request that arrives in a
server transaction is forwarded in a client transaction of its own, with
Max-Forwards decremented (483 at zero), our own Via on top, a Record-Route for
dialog-creating requests, and our Route entry removed; responses come back
with our Via popped; CANCEL is answered here and sent on for the pending
INVITE; a downstream timeout becomes 408 upstream; the ACK for a 2xx and stray
2xx retransmissions are forwarded statelessly.

Subclasses choose the next hop by overriding ``next_hop(request)``. All code
runs on the actor's loop.

``aliases``: addresses this proxy also answers for (a local replacement of a failed module,
see ``failover.py``): a top Route naming an alias is ours, and a response whose top Via is an
alias's (sent by the failed module's neighbours to the failed module, rerouted here) is relayed
statelessly to the next Via, so in-flight calls complete through the replacement.
"""

from __future__ import annotations

from functools import lru_cache
from operator import itemgetter
from typing import Any

from actors.sip.headers import SipParseError, parse_name_addr, parse_uri, parse_via
from actors.sip.message import SipMessage
from actors.sip.transaction import Transaction
from actors.sip_actor import Address, SipActor

__all__ = ["StatefulProxy", "top_route", "uri_address"]

_NAME = itemgetter(0)
_WS = " \t"  # what the codec strips around a header value (``SipMessage.get_all``)

DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER"})


class StatefulProxy(SipActor):
    """Forwards requests to ``next_hop(request)`` and relays the responses back."""

    record_route = True

    def __init__(self, name: str, bind: Address = ("127.0.0.1", 0), *,
                 aliases: tuple[Address, ...] | list[Address] = (), **kwargs: Any) -> None:
        kwargs.setdefault("trying_delay", 0.0)  # a proxy answers 100 Trying at once
        super().__init__(name, bind, **kwargs)
        self.aliases: frozenset[Address] = frozenset(tuple(a) for a in aliases)  # type: ignore[misc]
        self._upstream: dict[Transaction, Transaction] = {}  # client tx -> server tx
        self._downstream: dict[Transaction, Transaction] = {}  # INVITE server tx -> client tx
        self._own_uri: tuple[Address, str] | None = None  # (address, own_uri()): formatted once

    def next_hop(self, request: SipMessage) -> Address | None:
        """Where to send ``request`` after our Route entry was removed.

        Default: the top Route if any, else the Request-URI's host and port.
        ``None`` answers 404.
        """
        route = top_route(request)
        return uri_address(route if route is not None else request.uri)

    # -- requests ------------------------------------------------------------------

    def on_request(self, request: SipMessage, transaction: Transaction, source: Address) -> Any:
        if request.method == "CANCEL":
            return self._cancel(request, transaction)
        max_forwards = request.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            self.send_response(transaction, request.make_response(483))
            return None
        forward = request.copy()
        self.pop_own_route(forward)
        destination = self.next_hop(forward)
        if destination is None:
            self.send_response(transaction, request.make_response(404))
            return None
        if destination == self.address:  # nowhere to go but back to ourselves: a loop
            self.stats["loops"] += 1
            self.send_response(transaction, request.make_response(482))
            return None
        self.forward(forward, transaction, destination)
        return None

    def forward(self, forward: SipMessage, transaction: Transaction, destination: Address) -> Transaction:
        """Send ``forward`` (already re-targeted) downstream on behalf of ``transaction``."""
        _decrement_max_forwards(forward)
        if self.record_route and forward.method in DIALOG_CREATING:
            forward.add("Record-Route", self.own_uri(), first=True)
        forward.add("Via", self.via_for(forward), first=True)
        client = self.send_request(forward, destination)
        self._upstream[client] = transaction
        if forward.method == "INVITE":
            self._downstream[transaction] = client
        return client

    def via_for(self, request: SipMessage) -> str:
        """The Via value we put on ``request`` as we forward it (a fresh branch)."""
        return self.new_via()

    def _cancel(self, cancel: SipMessage, transaction: Transaction) -> None:
        invite_server = self.layer.find_invite_for_cancel(cancel)
        client = self._downstream.get(invite_server) if invite_server is not None else None
        if client is None:
            self.send_response(transaction, cancel.make_response(481))
            return
        self.send_response(transaction, cancel.make_response(200))
        try:
            downstream_cancel = client.make_cancel()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001  (no provisional yet or already final: nothing to cancel)
            return
        self.send_request(downstream_cancel, client.destination)  # type: ignore[attr-defined]

    def on_ack(self, request: SipMessage, transaction: Transaction | None, source: Address) -> Any:
        if transaction is not None:
            return None  # ACK for a non-2xx: hop by hop, absorbed by the transaction
        forward = request.copy()
        self.pop_own_route(forward)
        destination = self.next_hop(forward)
        max_forwards = forward.max_forwards
        if destination is None or destination == self.address or (max_forwards is not None and max_forwards <= 0):
            self.stats["ack_dropped"] += 1  # an ACK gets no answer: it can only be dropped
            return None
        _decrement_max_forwards(forward)
        forward.add("Via", self.new_via(), first=True)
        self.send_stateless(forward, destination)
        return None

    # -- responses -------------------------------------------------------------------

    def on_response(self, response: SipMessage, transaction: Transaction) -> Any:
        server = self._upstream.get(transaction)
        if server is None or response.status == 100:
            return None
        relayed = response.copy()
        relayed.pop_first("Via")
        try:
            self.send_response(server, relayed)
        except Exception:  # noqa: BLE001  (a 2xx retransmission after the final: send statelessly)
            self._relay_stateless(relayed)
        return None

    def on_stray_response(self, response: SipMessage, source: Address) -> Any:
        """2xx retransmissions arrive after the INVITE client transaction has gone; any response
        addressed to an alias (the failed module we replace) is relayed on."""
        if response.status is None or ((response.status < 200 or response.status >= 300) and not self.aliases):
            return None
        try:
            top = response.top_via
            if top is None:
                return None
            if (top.host, top.port) != self.address:
                if (top.host, top.port) in self.aliases:
                    self.stats["alias_relayed"] += 1
                    relayed = response.copy()
                    relayed.pop_first("Via")
                    self._relay_stateless(relayed)
                return None
            if response.status < 200 or response.status >= 300:
                return None
            relayed = response.copy()
            relayed.pop_first("Via")
            self._relay_stateless(relayed)
        except SipParseError:  # a Via we cannot read: nowhere to relay it
            self.stats["stray_bad_via"] += 1
        return None

    def _relay_stateless(self, response: SipMessage) -> None:
        via = response.get("Via")
        if via is None:
            return
        parsed = parse_via(via)
        host = parsed.params.get("received") or parsed.host
        port = parsed.params.get("rport")
        port = int(port) if port and port.isdigit() else (parsed.port or 5060)
        self.send_stateless(response, (host, port))

    def on_timeout(self, transaction: Transaction, timer: str) -> Any:
        server = self._upstream.get(transaction)
        if server is None:
            return None
        status = 408 if timer in ("B", "F") else 503
        try:
            self.send_response(server, server.request.make_response(status))  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001  (upstream already has its final response)
            pass
        return None

    def on_transaction_terminated(self, transaction: Transaction) -> Any:
        self._upstream.pop(transaction, None)
        self._downstream.pop(transaction, None)

    # -- helpers -------------------------------------------------------------------------

    def own_uri(self) -> str:
        """Our Record-Route / Path entry, ``<sip:host:port;lr>`` (formatted once per address)."""
        address = self.address
        cached = self._own_uri
        if cached is None or cached[0] is not address:
            host, port = address
            cached = self._own_uri = (address, f"<sip:{host}:{port};lr>")
        return cached[1]

    def pop_own_route(self, request: SipMessage) -> None:
        """Remove the top Route if it names this proxy (loose routing)."""
        route = top_route(request)
        if route is not None:
            top = uri_address(route)
            if top == self.address or (self.aliases and top in self.aliases):
                request.pop_first("Route")


def top_route(request: SipMessage) -> str | None:
    """``request.get_all("Route")[0]`` (``None`` without a Route), without splitting and
    copying the whole Route set: the first Route line, stripped, unless it is empty (skipped)
    or a comma list (left to the codec)."""
    for name, value in request.headers:
        if name == "Route":
            if "," in value:
                routes = request.get_all("Route")
                return routes[0] if routes else None
            value = value.strip(_WS)
            if value:
                return value
    return None


def _decrement_max_forwards(message: SipMessage) -> None:
    """A proxy's Max-Forwards step, in place: one less than the first Max-Forwards (70 when
    absent or not a number), as the only Max-Forwards, where the first was (else appended).
    The same as ``set("Max-Forwards", ...)`` of the decremented ``max_forwards``, with one
    look-up of the header instead of two."""
    headers = message.headers
    names = list(map(_NAME, headers))
    try:
        i = names.index("Max-Forwards")
    except ValueError:
        headers.append(("Max-Forwards", "69"))
        return
    value = headers[i][1]
    number = int(value) if value.isdigit() and value.isascii() and len(value) <= 20 else 70
    headers[i] = ("Max-Forwards", str(number - 1))
    if names.count("Max-Forwards") > 1:  # (rare) duplicates: ``set`` keeps only the first
        headers[i + 1:] = [h for h in headers[i + 1:] if h[0] != "Max-Forwards"]


def uri_address(value: str | None) -> Address | None:
    """``(host, port)`` of a URI or name-addr (``<sip:h:p;lr>``); port 5060 if absent."""
    if not value:
        return None
    if type(value) is str:
        return _uri_address_cached(value)
    return _uri_address(value)


def _uri_address(value: str) -> Address | None:
    try:
        uri = parse_name_addr(value).uri if "<" in value else parse_uri(value)
    except ValueError:
        return None
    return (uri.host, uri.port or 5060)


# Every hop asks this of the same few Route values and Request-URIs (the modules' own
# addresses, the UEs' contacts): a pure function of the string, so its answers are kept.
_uri_address_cached = lru_cache(maxsize=4096)(_uri_address)

"""``ImsModule``: the base of every IMS module that sits on the SIP call path.

Each module is a transaction-stateful proxy on its own UDP port (see
``StatefulProxy``) that Record-Routes, so in-dialog requests (ACK, BYE,
re-INVITE, UPDATE) cross the same modules as the INVITE. Initial requests
(no To tag) go to ``downstream``, the next module on the call path of
DESIGN.md; in-dialog requests follow their Route headers, then the
Request-URI. Subclasses override ``route_initial`` where a module decides
differently (the P-CSCF towards a UE, the S-CSCF Outgoing Leg Control to the
callee's registered contact).

Loop detection (RFC 3261 16.3 step 4): our Via branch carries a hash of the
request's routing state, so a request coming back to us with the same
routing state is a loop (482), while a legitimate spiral (the same module
visited again with a different Request-URI or Route set, as the P-CSCF is
on the originating and the terminating side) passes.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from actors.sip.headers import new_branch, parse_via
from actors.sip.message import SipMessage
from actors.sip.transaction import Transaction
from actors.sip_actor import Address
from nf_modules.sip_proxy import StatefulProxy, uri_address

__all__ = ["ALLOW", "ImsModule"]

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, REGISTER, INFO, PRACK, MESSAGE"


class ImsModule(StatefulProxy):
    """A Record-Routing IMS module that forwards initial requests to ``downstream``."""

    kind: ClassVar[str] = "ims"
    """The topology kind this class implements (``"pcscf"``, ``"scscf.session_controller"``...)."""

    def __init__(
        self,
        name: str,
        bind: Address = ("127.0.0.1", 0),
        *,
        downstream: Address | None = None,
        domain: str = "ims.example",
        **kwargs: Any,
    ) -> None:
        super().__init__(name, bind, **kwargs)
        self.downstream = downstream
        self.domain = domain

    # -- routing -------------------------------------------------------------------

    def set_downstream(self, address: Address) -> None:
        """Point initial requests at another next module (topology wiring, failover)."""
        self.downstream = tuple(address)  # type: ignore[assignment]

    def next_hop(self, request: SipMessage) -> Address | None:
        routes = request.get_all("Route")
        if routes:
            return uri_address(routes[0])
        if request.to_tag is None and request.method != "ACK":
            return self.route_initial(request)
        return uri_address(request.uri)

    def route_initial(self, request: SipMessage) -> Address | None:
        """Where an initial (out-of-dialog) request goes next. Default: ``downstream``."""
        return self.downstream

    # -- loop detection --------------------------------------------------------------------

    def on_request(self, request: SipMessage, transaction: Transaction, source: Address) -> Any:
        if request.to_tag is None and not request.get("Route") and self._addressed_to_us(request):
            # OPTIONS to the module itself (a keep-alive ping): answer here, never forward.
            status = 200 if request.method == "OPTIONS" else 405
            response = request.make_response(status)
            response.set("Allow", "OPTIONS" if status == 405 else ALLOW)  # RFC 3261 21.4.6
            self.send_response(transaction, response)
            return None
        if request.method not in ("ACK", "CANCEL") and self._is_loop(request):
            self.stats["loops"] += 1
            self.send_response(transaction, request.make_response(482))
            return None
        return super().on_request(request, transaction, source)

    @property
    def _own_sent_by(self) -> str:
        host, port = self.address
        return f" {host}:{port};"

    def via_for(self, request: SipMessage) -> str:
        host, port = self.address
        return f"SIP/2.0/UDP {host}:{port};branch={new_branch()}.{_routing_hash(request)};rport"

    def _addressed_to_us(self, request: SipMessage) -> bool:
        uri = request.uri or ""
        return "@" not in uri and uri_address(uri) == self.address and request.method not in ("ACK", "CANCEL")

    def _is_loop(self, request: SipMessage) -> bool:
        own = self._own_sent_by
        # The common case, checked on the raw header lines (each Via element is a substring of
        # its line, so a line without ``own`` has no element with it): not seen here before.
        if not any(own in value for name, value in request.headers if name == "Via"):
            return False
        vias = request.get_all("Via")
        ours = None
        for value in vias:
            try:
                via = parse_via(value)
            except ValueError:
                continue
            if (via.host, via.port) == self.address and via.branch and "." in via.branch:
                ours = ours or []
                ours.append(via.branch.rsplit(".", 1)[1])
        if not ours:
            return False
        probe = request.copy()
        self.pop_own_route(probe)
        return _routing_hash(probe) in ours


def _routing_hash(request: SipMessage) -> str:
    """What makes a spiral differ from a loop: Request-URI, Route set, tags, Call-ID, CSeq."""
    material = "|".join(
        [
            request.uri or "",
            ",".join(request.get_all("Route")),
            request.from_tag or "",
            request.to_tag or "",
            request.call_id or "",
            str(request.cseq[0] if request.cseq else ""),
        ]
    )
    return hashlib.blake2s(material.encode("utf-8", "surrogateescape"), digest_size=6).hexdigest()

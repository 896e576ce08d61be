"""``UserAgent``: a SIP UA actor that places calls and auto-answers them.

As a UAC, ``await call(...)`` sends an INVITE through an outbound proxy,
ACKs the 2xx along the dialog's route set, holds the call and hangs up with
BYE, returning the call's timings. As a UAS it answers INVITE with 180 after
``ring_delay`` and 200 after that, OPTIONS with 200, and BYE with 200. The
hooks run on the actor's loop; ``call`` is ``@concurrent``: several calls can
be in progress at once, each awaited through a proxy (or ``.get()`` from a
plain thread) while the actor goes on handling other messages.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from actors.actor import concurrent
from actors.sip.dialog import Dialog, DialogError
from actors.sip.headers import SipParseError, new_call_id, new_tag
from actors.sip.message import SipMessage
from actors.sip.transaction import Transaction
from actors.sip_actor import Address, SipActor
from nf_modules.sip_proxy import uri_address

__all__ = ["CallResult", "UserAgent"]


@dataclass
class CallResult:
    """What happened to one call placed by ``UserAgent.call`` or ``UePool.call``."""

    call_id: str
    status: int = 0  # final status of the INVITE (0: none, e.g. timeout)
    ringing_after: float | None = None  # INVITE -> first 180, seconds
    answered_after: float | None = None  # INVITE -> 200
    bye_status: int = 0
    timeline: list[tuple[float, str]] = field(default_factory=list)
    # set by ``UePool.call`` (0 / None when not attempted)
    cancel_status: int = 0  # final status of our CANCEL
    reinvite_status: int = 0  # final status of a mid-call re-INVITE
    update_status: int = 0  # final status of a mid-call UPDATE
    ended_by: str | None = None  # "caller" (our BYE) or "callee" (theirs)

    @property
    def completed(self) -> bool:
        return 200 <= self.status < 300 and self.bye_status == 200


class UserAgent(SipActor):
    """A user agent on its own UDP port: calls out through ``outbound_proxy``, answers calls in."""

    def __init__(
        self,
        name: str,
        user: str,
        domain: str = "ims.example",
        bind: Address = ("127.0.0.1", 0),
        *,
        ring_delay: float = 0.05,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, bind, **kwargs)
        self.user = user
        self.domain = domain
        self.ring_delay = ring_delay
        self.dialogs: dict[str, Dialog] = {}
        self._finals: dict[Transaction, asyncio.Future[SipMessage]] = {}
        self._provisionals: dict[Transaction, asyncio.Future[SipMessage]] = {}
        self.answered_calls = 0

    # -- UAC ----------------------------------------------------------------------

    def _contact(self) -> str:
        host, port = self.address
        return f"<sip:{self.user}@{host}:{port}>"

    @concurrent
    async def call(
        self, callee: str, outbound_proxy: Address, *, hold: float = 0.0, timeout: float = 40.0
    ) -> CallResult:
        """Place one call to ``callee`` (``user`` or ``sip:user@domain``) and hang it up."""
        uri = callee if callee.startswith("sip:") else f"sip:{callee}@{self.domain}"
        call_id = new_call_id(self.address[0])
        result = CallResult(call_id)
        start = time.perf_counter()  # latencies are measured, not scheduled: full resolution
        invite = SipMessage.request(
            "INVITE",
            uri,
            [
                ("Via", self.new_via()),
                ("Max-Forwards", "70"),
                ("From", f"<sip:{self.user}@{self.domain}>;tag={new_tag()}"),
                ("To", f"<{uri}>"),
                ("Call-ID", call_id),
                ("CSeq", "1 INVITE"),
                ("Contact", self._contact()),
                ("Content-Type", "application/sdp"),
            ],
            sdp_offer(self.address[0], 40000),
        )
        transaction = self.send_request(invite, outbound_proxy)
        ringing = self._provisionals[transaction] = self.loop.create_future()
        final = self._finals[transaction] = self.loop.create_future()
        ringing.add_done_callback(lambda f: setattr(result, "ringing_after", time.perf_counter() - start) if not f.cancelled() else None)
        try:
            response = await asyncio.wait_for(final, timeout)
        except TimeoutError:
            result.timeline.append((time.perf_counter() - start, "no final response"))
            return result
        finally:
            self._finals.pop(transaction, None)
            self._provisionals.pop(transaction, None)
        result.status = response.status or 0
        result.timeline.append((time.perf_counter() - start, f"INVITE {result.status}"))
        if not 200 <= result.status < 300:
            return result
        result.answered_after = time.perf_counter() - start
        dialog = Dialog.from_uac(invite, response)
        ack = dialog.create_request("ACK")
        self._send_in_dialog(ack, dialog, outbound_proxy, stateless=True)
        if hold > 0:
            await asyncio.sleep(hold / (self.clock.time_scale if self.clock else 1.0))
        bye = dialog.create_request("BYE")
        bye_tx = self._send_in_dialog(bye, dialog, outbound_proxy)
        bye_final = self._finals[bye_tx] = self.loop.create_future()
        try:
            bye_response = await asyncio.wait_for(bye_final, timeout)
            result.bye_status = bye_response.status or 0
        except TimeoutError:
            pass
        finally:
            self._finals.pop(bye_tx, None)
        result.timeline.append((time.perf_counter() - start, f"BYE {result.bye_status}"))
        return result

    def _send_in_dialog(
        self, request: SipMessage, dialog: Dialog, outbound_proxy: Address, *, stateless: bool = False
    ) -> Transaction | None:
        if not request.get("Via"):  # a UAC dialog's create_request already put our one Via
            request.add("Via", self.new_via())
        request.set("Max-Forwards", "70")
        routes = request.get_all("Route")
        destination = uri_address(routes[0]) if routes else uri_address(request.uri)
        destination = destination or outbound_proxy
        if stateless:
            self.send_stateless(request, destination)
            return None
        return self.send_request(request, destination)

    def on_response(self, response: SipMessage, transaction: Transaction) -> Any:
        status = response.status or 0
        if status < 200:
            future = self._provisionals.get(transaction)
            if status >= 180 and future is not None and not future.done():
                future.set_result(response)
            return None
        future = self._finals.get(transaction)
        if future is not None and not future.done():
            future.set_result(response)
        return None

    def on_timeout(self, transaction: Transaction, timer: str) -> Any:
        future = self._finals.get(transaction)
        if future is not None and not future.done():
            future.set_result(transaction.request.make_response(408))  # type: ignore[attr-defined]

    # -- UAS -----------------------------------------------------------------------

    def on_request(self, request: SipMessage, transaction: Transaction, source: Address) -> Any:
        method = request.method
        if method == "INVITE":
            return self._answer(request, transaction)
        if method in ("BYE", "OPTIONS", "UPDATE"):
            if method == "BYE":
                self.dialogs.pop(request.call_id or "", None)
            self.send_response(transaction, request.make_response(200))
            return None
        if method == "CANCEL":
            self.send_response(transaction, request.make_response(200))
            invite_tx = self.layer.find_invite_for_cancel(request)
            if invite_tx is not None:
                try:
                    self.send_response(invite_tx, invite_tx.request.make_response(487))  # type: ignore[attr-defined]
                except Exception:  # noqa: BLE001  (already answered)
                    pass
            return None
        self.send_response(transaction, request.make_response(405))
        return None

    async def _answer(self, request: SipMessage, transaction: Transaction) -> None:
        to_tag = new_tag()
        ok = self._response(request, 200, to_tag)
        ok.set("Content-Type", "application/sdp")
        ok.body = sdp_offer(self.address[0], 41000)
        try:
            dialog = Dialog.from_uas(request, ok)  # before ringing: can this INVITE make a dialog?
        except (DialogError, SipParseError):
            # RFC 3261 12.1.1: no dialog without a From tag and a usable Contact; say so at once.
            self.send_response(transaction, request.make_response(400, "Missing From tag or bad Contact"))
            return
        self.send_response(transaction, self._response(request, 180, to_tag))
        await asyncio.sleep(self.ring_delay / (self.clock.time_scale if self.clock else 1.0))
        try:
            self.send_response(transaction, ok)
        except Exception:  # noqa: BLE001  (cancelled meanwhile: 487 already sent)
            return
        self.dialogs[request.call_id or ""] = dialog
        self.answered_calls += 1

    def _response(self, request: SipMessage, status: int, to_tag: str) -> SipMessage:
        response = request.make_response(status, to_tag=to_tag)
        for record_route in request.get_all("Record-Route"):
            response.add("Record-Route", record_route)
        response.set("Contact", self._contact())
        return response


def sdp_offer(host: str, port: int) -> bytes:
    """A minimal G.711 SDP body (media itself is the media plane's business)."""
    return (
        "v=0\r\n"
        f"o=- 1 1 IN IP4 {host}\r\n"
        "s=vims\r\n"
        f"c=IN IP4 {host}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 8\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
    ).encode()

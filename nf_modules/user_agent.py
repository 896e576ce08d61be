"""``UserAgent``: a SIP UA actor that places calls and auto-answers them.

As a UAC, ``await call(...)`` sends an INVITE through an outbound proxy,
ACKs the 2xx along the dialog's route set (again for each retransmission of the 2xx), holds the
call and hangs up with BYE, returning the call's timings. As a UAS it answers INVITE with 180
after ``ring_delay`` and 200 after that, OPTIONS with 200, and BYE with 200. The 200 is re-sent
(RFC 3261 13.3.1.4: T1, doubling up to T2) until its ACK comes; with no ACK within 64*T1 the UAS
gives up and ends the call with a BYE, so a call whose 200 was lost (a module failing over on the
way) still completes, and one whose ACK never comes is cleared. The
hooks run on the actor's loop; ``call`` is ``@concurrent``: several calls can
be in progress at once, each awaited through a proxy (or ``.get()`` from a
plain thread) while the actor goes on handling other messages.

With ``media`` on (see :mod:`nf_modules.ue_media`) each call leg also carries real RTP: the
SDP offers/answers a port of the UE's media engine, the leg sends a tone (or a WAV file) to
the peer's SDP address from the 2xx (caller) or the ACK (callee) until the BYE, and its
:class:`~nf_modules.ue_media.MediaResult` lands in ``CallResult.media`` (caller) and in
``get_media_results()`` (both sides).
"""

from __future__ import annotations

import asyncio
import random
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
from nf_modules.ue_media import MediaConfig, MediaResult, UeMedia, media_config, peer_media_address

__all__ = ["CallResult", "UserAgent", "via_destination"]


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
    media: MediaResult | None = None  # the caller leg's media, when the UE has media on

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
        media: bool | MediaConfig | dict[str, Any] = False,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        """``media``: send and receive RTP for the calls (``True``, a
        :class:`~nf_modules.ue_media.MediaConfig` or a dict of its fields); ``seed`` for the
        SSRCs and RTCP intervals."""
        super().__init__(name, bind, **kwargs)
        self.media_config = media_config(media)
        self.media: UeMedia | None = None
        self._rng = random.Random(seed)
        self._remote_media: dict[str, tuple[str, int] | None] = {}  # UAS: the caller's SDP address
        self.user = user
        self.domain = domain
        self.ring_delay = ring_delay
        self.dialogs: dict[str, Dialog] = {}
        self._finals: dict[Transaction, asyncio.Future[SipMessage]] = {}
        self._provisionals: dict[Transaction, asyncio.Future[SipMessage]] = {}
        self.answered_calls = 0
        self._unacked: dict[str, _Unacked] = {}  # UAS: Call-ID -> our 2xx waiting for its ACK
        self._acks: dict[str, tuple[SipMessage, Address]] = {}  # UAC: Call-ID -> our ACK, for 2xx resends

    async def on_start(self) -> None:
        await super().on_start()
        if self.media_config is not None:
            self.media = UeMedia(self.name, self.media_config, self.clock, self.loop, self._rng, self.log,  # type: ignore[arg-type]
                                 default_host=self.address[0])

    def on_stop(self) -> None:
        self._close_ua()
        super().on_stop()

    def on_failure(self, *exc_info: Any) -> None:
        self._close_ua()
        super().on_failure(*exc_info)

    def _close_ua(self) -> None:
        for pending in self._unacked.values():
            pending.timer.cancel()
        self._unacked.clear()
        if self.media is not None:
            self.media.close_all()

    def get_media_stats(self) -> dict[str, Any]:
        """The aggregate media figures of the finished call legs (``{}`` without media)."""
        return self.media.stats() if self.media is not None else {}

    def get_live_media(self) -> dict[str, dict[str, int]]:
        """The call legs in progress (``"uac:<call id>"``/``"uas:<call id>"``): packets and bytes
        received so far, packets sent (``{}`` without media)."""
        return self.media.live() if self.media is not None else {}

    def get_media_results(self) -> list[MediaResult]:
        """Every finished leg's media, both sides, oldest first."""
        return list(self.media.results) if self.media is not None else []

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
        port = 40000
        if self.media is not None:
            try:
                port = self.media.open(("uac", call_id), call_id, self.user, "uac")
            except OSError as error:
                result.timeline.append((0.0, f"no RTP port: {error}"))
                return result
        try:
            return await self._place(call_id, uri, port, result, outbound_proxy, hold, timeout)
        finally:
            if self.media is not None:
                result.media = self.media.close(("uac", call_id))

    async def _place(
        self, call_id: str, uri: str, port: int, result: CallResult, outbound_proxy: Address, hold: float, timeout: float
    ) -> CallResult:
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
            sdp_offer(self.media.host if self.media is not None else self.address[0], port),
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
        self._acks[call_id] = (ack, self._in_dialog_destination(ack, outbound_proxy))
        if self.media is not None:
            self.media.connect(("uac", call_id), peer_media_address(response.body))
        if hold > 0:
            await asyncio.sleep(hold / (self.clock.time_scale if self.clock else 1.0))
        if self.media is not None:
            self.media.stop_sending(("uac", call_id))
        self._acks.pop(call_id, None)
        bye = dialog.create_request("BYE")
        bye_tx = self._send_in_dialog(bye, dialog, outbound_proxy)
        bye_final = self._finals[bye_tx] = self.loop.create_future()  # type: ignore[index]
        try:
            bye_response = await asyncio.wait_for(bye_final, timeout)
            result.bye_status = bye_response.status or 0
        except TimeoutError:
            pass
        finally:
            self._finals.pop(bye_tx, None)  # type: ignore[arg-type]
        result.timeline.append((time.perf_counter() - start, f"BYE {result.bye_status}"))
        return result

    def _send_in_dialog(
        self, request: SipMessage, dialog: Dialog, outbound_proxy: Address, *, stateless: bool = False
    ) -> Transaction | None:
        if not request.get("Via"):  # a UAC dialog's create_request already put our one Via
            request.add("Via", self.new_via())
        request.set("Max-Forwards", "70")
        destination = self._in_dialog_destination(request, outbound_proxy)
        if stateless:
            self.send_stateless(request, destination)
            return None
        return self.send_request(request, destination)

    @staticmethod
    def _in_dialog_destination(request: SipMessage, outbound_proxy: Address) -> Address:
        routes = request.get_all("Route")
        destination = uri_address(routes[0]) if routes else uri_address(request.uri)
        return destination or outbound_proxy

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
        elif future is None or future.done():
            self._reack(response)
        return None

    def on_stray_response(self, response: SipMessage, source: Address) -> Any:
        self._reack(response)
        return None

    def _reack(self, response: SipMessage) -> None:
        """A 2xx to our INVITE again: our ACK was lost (the UAS re-sends until it comes)."""
        if not 200 <= (response.status or 0) < 300 or not response.cseq or response.cseq[1] != "INVITE":
            return
        sent = self._acks.get(response.call_id or "")
        if sent is not None:
            self.stats["ack_resent"] += 1
            self.send_stateless(*sent)

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
                pending = self._unacked.pop(request.call_id or "", None)
                if pending is not None:  # a BYE ends the wait for the ACK too
                    pending.timer.cancel()
                self._end_media(request.call_id or "")  # stop sending before the 200 goes out
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
                else:
                    self._end_media(request.call_id or "")
            return None
        self.send_response(transaction, request.make_response(405))
        return None

    async def _answer(self, request: SipMessage, transaction: Transaction) -> None:
        to_tag = new_tag()
        call_id = request.call_id or ""
        ok = self._response(request, 200, to_tag)
        ok.set("Content-Type", "application/sdp")
        ok.body = sdp_offer(self.address[0], 41000)
        try:
            dialog = Dialog.from_uas(request, ok)  # before ringing: can this INVITE make a dialog?
        except (DialogError, SipParseError):
            # RFC 3261 12.1.1: no dialog without a From tag and a usable Contact; say so at once.
            self.send_response(transaction, request.make_response(400, "Missing From tag or bad Contact"))
            return
        if self.media is not None:
            try:
                ok.body = sdp_offer(self.media.host, self.media.open(("uas", call_id), call_id, self.user, "uas"))
            except OSError:
                busy = request.make_response(503, to_tag=to_tag)
                busy.set("Retry-After", "5")
                self.send_response(transaction, busy)
                return
            self._remote_media[call_id] = peer_media_address(request.body)
        self.send_response(transaction, self._response(request, 180, to_tag))
        await asyncio.sleep(self.ring_delay / (self.clock.time_scale if self.clock else 1.0))
        try:
            self.send_response(transaction, ok)
        except Exception:  # noqa: BLE001  (cancelled meanwhile: 487 already sent)
            self._end_media(call_id)
            return
        self.dialogs[call_id] = dialog
        self.answered_calls += 1
        t1 = self.layer.timers.t1
        self._unacked[call_id] = _Unacked(transaction, ok, dialog, self.now + 64 * t1, t1,
                                          self.clock.call_later(t1, self._resend_ok, call_id))  # type: ignore[union-attr]

    def _resend_ok(self, call_id: str) -> None:
        """Clock callback (actor's loop): no ACK yet for our 2xx (RFC 3261 13.3.1.4): re-send it,
        T1 doubling up to T2; at 64*T1 give up and end the call with a BYE."""
        pending = self._unacked.get(call_id)
        if pending is None:
            return
        if self.now >= pending.give_up_at - 1e-6:  # the loop may run a timer a hair early
            del self._unacked[call_id]
            self.stats["ack_timeouts"] += 1
            self._run_task(self._give_up(call_id, pending.dialog))
            return
        self.stats["ok_retransmitted"] += 1
        try:
            self.send_response(pending.transaction, pending.ok)  # the Accepted state sends it again
        except Exception:  # noqa: BLE001  (the transaction is over: along the Via ourselves)
            destination = via_destination(pending.ok)
            if destination is not None:
                self.send_stateless(pending.ok, destination)
        pending.interval = min(2 * pending.interval, self.layer.timers.t2)
        delay = max(min(pending.interval, pending.give_up_at - self.now), 0.0)
        pending.timer = self.clock.call_later(delay, self._resend_ok, call_id)  # type: ignore[union-attr]

    async def _give_up(self, call_id: str, dialog: Dialog) -> None:
        """No ACK came: the call is over for us; BYE the caller along the dialog's route set."""
        self.dialogs.pop(call_id, None)
        self._end_media(call_id)
        try:
            bye = dialog.create_request("BYE")
        except DialogError as error:
            self.log.info("no_bye_after_ack_timeout", call_id=call_id, error=str(error))
            return
        if not bye.get("Via"):
            bye.add("Via", self.new_via())
        routes = bye.get_all("Route")
        destination = uri_address(routes[0]) if routes else uri_address(bye.uri)
        if destination is not None:
            self.send_request(bye, destination)
            self.stats["bye_after_ack_timeout"] += 1

    def _run_task(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        task.add_done_callback(lambda t: t.cancelled() or t.exception() is None or self.log.error(
            "ua_task_failed", error=repr(t.exception())))

    def on_ack(self, request: SipMessage, transaction: Transaction | None, source: Address) -> Any:
        """The ACK of our 2xx: the call is established, the callee's media starts."""
        call_id = request.call_id or ""
        pending = self._unacked.pop(call_id, None) if transaction is None else None
        if pending is not None:
            pending.timer.cancel()
        if transaction is None and self.media is not None and call_id in self.dialogs:
            self.media.connect(("uas", call_id), self._remote_media.get(call_id))
        return None

    def _end_media(self, call_id: str) -> None:
        """The callee's leg of ``call_id`` is over: stop sending and collect its media."""
        self._remote_media.pop(call_id, None)
        if self.media is not None:
            self.media.close(("uas", call_id))

    def _response(self, request: SipMessage, status: int, to_tag: str) -> SipMessage:
        response = request.make_response(status, to_tag=to_tag)
        for record_route in request.get_all("Record-Route"):
            response.add("Record-Route", record_route)
        response.set("Contact", self._contact())
        return response


@dataclass(eq=False)
class _Unacked:
    """A UAS 2xx waiting for its ACK."""

    transaction: Transaction
    ok: SipMessage
    dialog: Dialog
    give_up_at: float
    interval: float
    timer: Any


def via_destination(response: SipMessage) -> Address | None:
    """Where a response goes along its top Via (``received``/``rport`` honoured), or None."""
    via = response.top_via
    if via is None:
        return None
    host = via.params.get("received") or via.host
    rport = via.params.get("rport")
    port = int(rport) if rport and rport.isdigit() else (via.port or 5060)
    return (host, port)


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

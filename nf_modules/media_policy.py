"""``MediaPolicy``: the AS module that anchors a call's media at the MRF (paper ``004`` Fig. 1, 5).

It is an :class:`~nf_modules.ims_module.ImsModule` (a Record-Routing, transaction-stateful proxy)
that, for an initial INVITE with an SDP offer, acts as a B2BUA towards the MRFC before it
forwards the call::

    call INVITE (SDP: UE-A)  --> hold it (100 Trying went upstream already)
        INVITE sip:bridge=<call's Call-ID>@<mrfc>  (a new dialog, the caller's SDP)  --> MRFC
        200 (the MRF's SDP: m= A-side port a=label:A, m= B-side port a=label:B)     <-- MRFC
        ACK                                                                          --> MRFC
    call INVITE, SDP rewritten to MRFP's B side  --> downstream
    18x        --> UPDATE  Mrf-Event: progress[;side=B + UE-B's SDP]  (MRF Progressing)
    2xx        --> UPDATE  Mrf-Event: answer;side=B + UE-B's SDP      (MRF Connected);
                   the 2xx's SDP towards UE-A rewritten to MRFP's A side
    300-699, BYE (either way), CANCEL during the set-up, Timer B --> BYE to the MRFC (Ended,
                   MRFP ports released); the call's messages are forwarded as usual

The MRF INVITE names the call's subscribers (``Mrf-Subscribers: A=<caller>;B=<callee>``, from the
call's From and To) for the MRF's usage reports to the PCRF.

The MRF dialog's in-dialog requests are UPDATEs (RFC 3311: they change session state without
touching the MRFC's offer/answer the way a re-INVITE would, and need no ACK); they are sent one
at a time per call, in order (RFC 3311 5.1: no second UPDATE while one is pending); a BYE
drops the queue. Later SDP in the call (re-INVITE, UPDATE, their answers, an ACK) is rewritten the
same way (towards UE-B: MRFP's B side; towards UE-A: the A side) and, when a UE's address
changed, reported with ``Mrf-Event: update;side=A|B``.

Set-up failures answer the caller: the MRFC timing out (``mrf_timeout``, or its transaction's
Timer B / an ICMP error, whichever comes first) or refusing with 503 -> **503**; any other MRFC
refusal or an unusable 200 -> **500**; the caller's SDP unreadable -> **488**. An initial INVITE
without SDP (a late offer) is not anchored and passes through untouched.

Media scripts (paper ``004`` V-A, Fig. 3a): the Media Policy runs the AS's HTTP script server
(:class:`~nf_modules.media_scripts.ScriptServer`, aiohttp on the actor's loop) and puts its root
script's URL in the MRF INVITE (``Mrf-Script``); the MRFC fetches from there. Options:
``scripts`` (a :class:`~nf_modules.media_scripts.ScriptLibrary` or its mapping; default: the
built-in library), ``script_server`` (``False``: none, the MRFC runs its built-in script),
``script_capacity`` (HTTP requests served per second, ``None``: unlimited),
``script_queue_limit``, ``script_port``.

Per-call state (:class:`MrfCall`) lives in ``calls`` keyed by the call's Call-ID from the initial
INVITE until the call ends; our transactions towards the MRFC are in ``_mrf`` until they
terminate. Everything runs on the actor's loop. The set-up is callback-driven (no task or future
per call): ``_anchor`` sends the MRF INVITE and parks the call INVITE in ``_setups`` with an
``mrf_timeout`` timer; ``_setup_finished`` runs once, on the MRFC's final response
(``on_response``), on its transaction's Timer B / ICMP error (``on_timeout``, as a 408) or when
the timer fires, and forwards the INVITE or answers the caller.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from actors.sip.dialog import Dialog, DialogError
from actors.sip.headers import new_call_id, new_tag, parse_name_addr
from actors.sip.message import SipMessage
from actors.sip.transaction import RequestReceived, Transaction
from actors.sip_actor import Address
from nf_modules.ims_module import ImsModule
from nf_modules.media_scripts import ScriptLibrary, ScriptServer
from nf_modules.mrfc import MRF_EVENT_HEADER, MRF_SCRIPT_HEADER, MRF_SUBSCRIBERS_HEADER, bridge_uri
from nf_modules.sdp import SdpError, audio_address, is_sdp, mrf_sides, rewrite_audio
from nf_modules.sip_proxy import uri_address

__all__ = ["MediaPolicy", "MrfCall"]


@dataclass(eq=False)
class MrfCall:
    """One anchored call as the Media Policy sees it."""

    call_id: str
    caller_tag: str
    server: Transaction  # the call's INVITE server transaction (upstream)
    started_at: float
    phase: str = "setup"  # setup -> created -> progressing -> connected; ended
    client: Transaction | None = None  # the call's INVITE client transaction (downstream)
    mrf_dialog: Dialog | None = None
    mrf_ack: SipMessage | None = None
    sides: dict[str, tuple[str, int]] = field(default_factory=dict)  # MRFP's port per side
    remotes: dict[str, tuple[str, int]] = field(default_factory=dict)  # each UE's address
    cancelled: bool = False
    bye_sent: bool = False
    pending: deque[tuple[str, str | None, bytes]] = field(default_factory=deque)  # queued UPDATEs
    update_tx: Transaction | None = None

    @property
    def ended(self) -> bool:
        return self.phase == "ended"


_UPDATE_STAT_KEYS = {event: f"mrf_update_{event}" for event in ("progress", "answer", "update")}  # not per UPDATE


class _SetupFailed(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class MediaPolicy(ImsModule):
    """The AS's Media Policy (``kind = "as.media_policy"``); see the module docstring.

    ``mrfc``: the MRFC's SIP address (``None``: calls pass through unanchored);
    ``mrf_timeout``: how long the set-up may wait for the MRFC's final response.
    """

    kind: ClassVar[str] = "as.media_policy"

    def __init__(
        self,
        name: str,
        bind: Address = ("127.0.0.1", 0),
        *,
        mrfc: Address | None = None,
        mrf_timeout: float = 2.0,
        scripts: ScriptLibrary | Mapping[str, Any] | None = None,
        script_server: bool = True,
        script_capacity: float | None = None,
        script_queue_limit: int = 100,
        script_port: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, bind, **kwargs)
        self.mrfc = tuple(mrfc) if mrfc else None
        self.mrf_timeout = mrf_timeout
        library = scripts if isinstance(scripts, ScriptLibrary) else ScriptLibrary(scripts)
        self.scripts: ScriptServer | None = (
            ScriptServer(library, capacity=script_capacity, queue_limit=script_queue_limit)
            if script_server else None)
        self.script_url: str | None = None
        self._script_port = script_port
        self.calls: dict[str, MrfCall] = {}
        self._mrf: dict[Transaction, MrfCall] = {}  # our client transactions towards the MRFC
        # MRF INVITEs awaiting their final answer: MRF transaction -> (call, the call's INVITE,
        # where it came from, the mrf_timeout timer).
        self._setups: dict[Transaction, tuple[MrfCall, SipMessage, Address, asyncio.TimerHandle]] = {}

    async def on_start(self) -> None:
        await super().on_start()
        if self.scripts is not None:
            self.scripts.clock = self.clock
            self.script_url = await self.scripts.start(self.address[0], self._script_port)

    async def on_stop(self) -> None:
        await super().on_stop()
        if self.scripts is not None:
            await self.scripts.close()

    async def on_failure(self, *exc_info: Any) -> None:
        super().on_failure(*exc_info)
        if self.scripts is not None:
            await self.scripts.close()

    def _close(self) -> None:
        # Like the hook tasks SipActor._close cancels: no set-up resumes on its timer afterwards.
        for *_, timer in self._setups.values():
            timer.cancel()
        self._setups.clear()
        super()._close()

    def get_script_url(self) -> str | None:
        """The root media script's URL (what the MRF INVITE carries), or ``None``."""
        return self.script_url

    def get_script_stats(self) -> dict[str, Any]:
        """The script server's counters: ``fetches``, ``fetch_<name>``, ``rejected_503`` ...,
        and its queue (``admitted``, ``queue_length``, ``utilisation``)."""
        if self.scripts is None:
            return {}
        return {**self.scripts.stats, **self.scripts.rate.stats(self.now)}

    def set_mrfc(self, address: Address | None) -> None:
        """Point the MRF set-up at another MRFC (topology wiring, failover)."""
        self.mrfc = tuple(address) if address else None  # type: ignore[assignment]

    # -- queries (asks) ------------------------------------------------------------------

    def get_calls(self) -> dict[str, str]:
        """The anchored calls in progress: Call-ID -> phase."""
        return {call_id: call.phase for call_id, call in self.calls.items()}

    def get_stats(self) -> dict[str, int]:
        out = super().get_stats()
        out["calls_active"] = len(self.calls)
        out["mrf_transactions"] = len(self._mrf)
        return out

    # -- requests ----------------------------------------------------------------------------

    def on_request(self, request: SipMessage, transaction: Transaction, source: Address) -> Any:
        method = request.method
        call = self.calls.get(request.call_id or "")
        if method == "INVITE" and request.to_tag is None:
            if call is None and self.mrfc is not None and is_sdp(request) and self._forwardable(request):
                return self._anchor(request, transaction, source)
            return super().on_request(request, transaction, source)
        if call is None:
            return super().on_request(request, transaction, source)
        if method == "CANCEL":
            if call.phase == "setup" and self.layer.find_invite_for_cancel(request) is call.server:
                self.send_response(transaction, request.make_response(200))
                self._reply(call.server, call.server.request, 487)  # type: ignore[attr-defined]
                call.cancelled = True  # _anchor ends the call when the MRFC has answered
                return None
            return super().on_request(request, transaction, source)
        if method == "BYE":
            self._end(call)
            return super().on_request(request, transaction, source)
        if is_sdp(request):
            request = self._media(call, request, self._sender(call, request, is_request=True), "update")
        return super().on_request(request, transaction, source)

    def on_ack(self, request: SipMessage, transaction: Transaction | None, source: Address) -> Any:
        call = self.calls.get(request.call_id or "")
        if transaction is None and call is not None and is_sdp(request):
            request = self._media(call, request, self._sender(call, request, is_request=True), "update")
        return super().on_ack(request, transaction, source)

    def _forwardable(self, request: SipMessage) -> bool:
        """Worth an MRF set-up: not a loop, Max-Forwards left (else the proxy answers 482/483)."""
        max_forwards = request.max_forwards
        return (max_forwards is None or max_forwards > 0) and not self._is_loop(request)

    def _anchor(self, request: SipMessage, transaction: Transaction, source: Address) -> None:
        """Start the MRF set-up; :meth:`_setup_finished` forwards the INVITE with its SDP
        pointed at MRFP's B side (or answers the caller) once the MRFC has answered."""
        try:
            caller_media = audio_address(request.body)
        except SdpError as error:
            self.stats["sdp_unreadable"] += 1
            self._reply(transaction, request, 488, warning=str(error))
            return
        call_id = request.call_id or ""
        call = self.calls[call_id] = MrfCall(call_id, request.from_tag or "", transaction, self.now)
        call.remotes["A"] = caller_media
        self._setup_mrf(call, request, source)

    def _setup_finished(self, call: MrfCall, request: SipMessage, source: Address, response: SipMessage | None) -> None:
        """The MRFC answered ``response`` (``None``: nothing within ``mrf_timeout``)."""
        transaction = call.server
        try:
            self._check_setup(call, response)
        except _SetupFailed as failure:
            self.stats[f"mrf_setup_failed_{failure.status}"] += 1
            self.log.info("mrf_setup_failed", call_id=call.call_id, status=failure.status, reason=str(failure))
            self._end(call)
            self._reply(transaction, request, failure.status, warning=str(failure))
            return
        if call.cancelled or call.ended:
            self._end(call)
            return
        call.phase = "created"
        self.stats["mrf_setups"] += 1
        forward = request.copy()
        forward.body = rewrite_audio(request.body, *call.sides["B"])
        super().on_request(forward, transaction, source)
        call.client = self._downstream.get(transaction)
        if call.client is None:  # answered here (404, 483...): nothing will come back
            self._end(call)

    def _resume_setup(self, mrf_transaction: Transaction, response: SipMessage | None) -> bool:
        """End the set-up waiting on ``mrf_transaction`` (once); ``False`` if none was waiting.

        Runs :meth:`_setup_finished` the way ``SipActor`` runs a hook for the call's INVITE:
        a bug in it is logged, counted and answered 500 (``_hook_failed``)."""
        setup = self._setups.pop(mrf_transaction, None)
        if setup is None:
            return False
        call, request, source, timer = setup
        timer.cancel()  # (a no-op when it is the timer that fired)
        try:
            self._setup_finished(call, request, source, response)
        except Exception as error:  # noqa: BLE001
            self._hook_failed(RequestReceived(request, call.server, source), error)
            self._flush()
        return True

    def _setup_mrf(self, call: MrfCall, request: SipMessage, source: Address) -> None:
        """Send the MRF INVITE; the set-up waits in ``_setups`` (see :meth:`_resume_setup`)."""
        assert self.mrfc is not None
        host, port = self.address
        local = f"<sip:media-policy@{host}:{port}>"
        uri = bridge_uri(call.call_id, self.mrfc)
        invite = SipMessage.request(
            "INVITE",
            uri,
            [
                ("Via", self.new_via()),
                ("Max-Forwards", "70"),
                ("From", f"{local};tag={new_tag()}"),
                ("To", f"<{uri}>"),
                ("Call-ID", new_call_id(host)),
                ("CSeq", "1 INVITE"),
                ("Contact", local),
                *([(MRF_SCRIPT_HEADER, self.script_url)] if self.script_url else []),
                *([(MRF_SUBSCRIBERS_HEADER, subscribers)] if (subscribers := _subscribers(request)) else []),
                ("Content-Type", "application/sdp"),
            ],
            request.body,
        )
        transaction = self.send_request(invite, self.mrfc)
        self._mrf[transaction] = call
        timer = self.loop.call_later(self.mrf_timeout, self._resume_setup, transaction, None)
        self._setups[transaction] = (call, request, source, timer)

    def _check_setup(self, call: MrfCall, response: SipMessage | None) -> None:
        """Take the MRFC's final answer to the MRF INVITE (``None``: none within ``mrf_timeout``):
        the MRFP's ports into ``call.sides``, else :class:`_SetupFailed`."""
        if response is None:
            raise _SetupFailed(503, f"no answer from the MRFC within {self.mrf_timeout} s")
        status = response.status or 0
        if status >= 300:
            if status in (408, 503):  # 408: our own, from Timer B or a transport error
                raise _SetupFailed(503, f"MRFC unavailable ({status})")
            raise _SetupFailed(500, f"MRFC refused the bridge ({status})")
        if call.mrf_dialog is None:
            raise _SetupFailed(500, "MRFC's 200 does not make a dialog")
        try:
            call.sides = mrf_sides(response.body)
        except SdpError as error:
            raise _SetupFailed(500, f"MRFC's SDP: {error}") from None

    # -- responses ---------------------------------------------------------------------------------

    def on_response(self, response: SipMessage, transaction: Transaction) -> Any:
        call = self._mrf.get(transaction)
        if call is not None:
            return self._mrf_response(call, response, transaction)
        call = self.calls.get(response.call_id or "")
        if call is not None and response.status != 100:
            response = self._call_response(call, response, transaction)
        return super().on_response(response, transaction)

    def on_stray_response(self, response: SipMessage, source: Address) -> Any:
        call = self.calls.get(response.call_id or "")
        if call is not None and is_sdp(response):  # a 2xx retransmission: same rewrite, no news
            response = self._media(call, response, self._sender(call, response, is_request=False), None)
        return super().on_stray_response(response, source)

    def _call_response(self, call: MrfCall, response: SipMessage, transaction: Transaction) -> SipMessage:
        if transaction is not call.client:  # a response to an in-dialog request
            if is_sdp(response):
                return self._media(call, response, self._sender(call, response, is_request=False), "update")
            return response
        status = response.status or 0
        if status >= 300:
            self._end(call)
            return response
        event = None
        if status < 200 and call.phase == "created":
            call.phase, event = "progressing", "progress"
        elif status >= 200 and call.phase in ("created", "progressing"):
            call.phase, event = "connected", "answer"
        if is_sdp(response):
            sender = self._sender(call, response, is_request=False)
            return self._media(call, response, sender, event, always=event is not None)
        if event is not None:
            self._queue_update(call, event, None, b"")
        return response

    def _media(
        self, call: MrfCall, message: SipMessage, sender: str, event: str | None, *, always: bool = False
    ) -> SipMessage:
        """``message`` with its SDP pointed at MRFP's port for the receiving UE; the MRFC hears
        of the sender's address with ``event`` if ``always`` or when the address changed."""
        receiver = "B" if sender == "A" else "A"
        if receiver not in call.sides:  # the set-up has not finished: nothing to point at
            return message
        try:
            address = audio_address(message.body)
            body = rewrite_audio(message.body, *call.sides[receiver])
        except SdpError as error:
            self.stats["sdp_unreadable"] += 1
            self.log.info("sdp_unreadable", call_id=call.call_id, error=str(error))
            return message
        if event is not None and (always or call.remotes.get(sender) != address):
            call.remotes[sender] = address
            self._queue_update(call, event, sender, message.body)
        rewritten = message.copy()
        rewritten.body = body
        return rewritten

    @staticmethod
    def _sender(call: MrfCall, message: SipMessage, *, is_request: bool) -> str:
        """Which UE sent ``message``: a request comes from its From party, a response from the other."""
        from_caller = message.from_tag == call.caller_tag
        return ("A" if from_caller else "B") if is_request else ("B" if from_caller else "A")

    # -- the MRF dialog ------------------------------------------------------------------------------

    def _mrf_response(self, call: MrfCall, response: SipMessage, transaction: Transaction) -> None:
        status = response.status or 0
        if status < 200:
            return
        method = transaction.request.method  # type: ignore[attr-defined]
        if method == "INVITE":
            if 200 <= status < 300:
                self._mrf_accepted(call, response, transaction)
            if not self._resume_setup(transaction, response) and call.ended and call.mrf_dialog is not None:
                self._end(call)  # a late 200: nobody wants it any more
        elif method == "UPDATE":
            if status >= 300:
                self.stats["mrf_update_failed"] += 1
            if call.update_tx is transaction:
                call.update_tx = None
                self._send_next_update(call)
        elif method == "BYE":
            self.stats["mrf_released" if status < 300 else "mrf_release_failed"] += 1

    def _mrf_accepted(self, call: MrfCall, response: SipMessage, transaction: Transaction) -> None:
        """ACK the MRFC's 2xx (again, for a retransmission); the first one makes the MRF dialog."""
        if call.mrf_dialog is None:
            try:
                call.mrf_dialog = Dialog.from_uac(transaction.request, response)  # type: ignore[attr-defined]
            except DialogError as error:
                self.log.info("mrf_dialog_refused", call_id=call.call_id, error=str(error))
                return
            call.mrf_ack = call.mrf_dialog.create_request("ACK")
        assert call.mrf_ack is not None
        self.send_stateless(call.mrf_ack, self._mrf_destination(call.mrf_ack))

    def _queue_update(self, call: MrfCall, event: str, side: str | None, body: bytes) -> None:
        call.pending.append((event, side, body))
        self._send_next_update(call)

    def _send_next_update(self, call: MrfCall) -> None:
        if call.update_tx is not None or not call.pending or call.mrf_dialog is None or call.ended:
            return
        event, side, body = call.pending.popleft()
        headers = [(MRF_EVENT_HEADER, event if side is None else f"{event};side={side}")]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        update = call.mrf_dialog.create_request("UPDATE", body, headers)
        call.update_tx = self._send_mrf(call, update)
        self.stats[_UPDATE_STAT_KEYS.get(event) or f"mrf_update_{event}"] += 1

    def _end(self, call: MrfCall) -> None:
        """Forget the call; BYE the MRF dialog if there is one (the MRFC releases the ports)."""
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
        call.phase = "ended"
        call.pending.clear()
        if call.mrf_dialog is not None and not call.bye_sent:
            call.bye_sent = True
            self._send_mrf(call, call.mrf_dialog.create_request("BYE"))
            self.stats["mrf_bye"] += 1

    def _send_mrf(self, call: MrfCall, request: SipMessage) -> Transaction:
        transaction = self.send_request(request, self._mrf_destination(request))
        self._mrf[transaction] = call
        return transaction

    def _mrf_destination(self, request: SipMessage) -> Address:
        routes = request.get_all("Route")
        return uri_address(routes[0] if routes else request.uri) or self.mrfc  # type: ignore[return-value]

    # -- timeouts and clean-up ------------------------------------------------------------------------

    def on_timeout(self, transaction: Transaction, timer: str) -> Any:
        call = self._mrf.get(transaction)
        if call is not None:
            self.stats[f"mrf_timeout_{transaction.request.method.lower()}"] += 1  # type: ignore[attr-defined]
            if transaction in self._setups:
                self._resume_setup(transaction, transaction.request.make_response(408))  # type: ignore[attr-defined]
            if call.update_tx is transaction:
                call.update_tx = None
                self._send_next_update(call)
            return None
        result = super().on_timeout(transaction, timer)
        call = self.calls.get(transaction.request.call_id or "")  # type: ignore[attr-defined]
        if call is not None and transaction is call.client:
            self._end(call)  # Timer B of the call's INVITE: the proxy answered 408 upstream
        return result

    def on_transaction_terminated(self, transaction: Transaction) -> Any:
        self._mrf.pop(transaction, None)
        return super().on_transaction_terminated(transaction)

    def _reply(self, transaction: Transaction, request: SipMessage, status: int, *, warning: str | None = None) -> None:
        response = request.make_response(status, to_tag=new_tag())
        if warning:
            response.set("Warning", f'399 media-policy "{warning[:200].replace(chr(34), chr(39))}"')
        try:
            self.send_response(transaction, response)
        except Exception:  # noqa: BLE001  (already answered: 487 after CANCEL)
            pass


def _subscribers(request: SipMessage) -> str:
    """``A=<caller>;B=<callee>`` from the call INVITE's From and To users ('' if neither)."""
    parts = []
    for side, header in (("A", "From"), ("B", "To")):
        try:
            user = parse_name_addr(request.get(header) or "").uri.user
        except ValueError:
            user = None
        if user and ";" not in user and "=" not in user:
            parts.append(f"{side}={user}")
    return ";".join(parts)

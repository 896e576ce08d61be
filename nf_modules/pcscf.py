"""``PCscf``: the Proxy-CSCF, the UEs' first and last hop into the IMS.

From the UE side it sends REGISTER (with a Path header naming itself) and
initial requests to the S-CSCF Session Controller; from the core side it
delivers requests to the UE's contact in the Request-URI. A Request-URI
addressed to the P-CSCF's own address (SIPp's ``sip:ue0002@127.0.0.1:5060``)
is read as addressed to the home domain.

It keeps a dialog per originating call through the states of ``004`` Fig. 5
(``pcscf_dialog.py``), queryable with ``get_dialog_states()``. From the 2xx
it learns the call's route set and remote target, so in-dialog requests that
arrive without Route headers (SIPp's stock ``uac`` sends ACK and BYE to the
P-CSCF's address that way) are routed by dialog state.

Baseline failure (``mode="baseline"``, paper ``004`` V-B, Fig. 4-6): an originating INVITE the
S-CSCF leaves without an answer beyond its 100 Trying is retried ``baseline_retries`` times
(5), ``baseline_retry_interval`` (1 s) apart; when the last retry is unanswered as well the
P-CSCF declares the S-CSCF busy: it answers 600 Busy Everywhere upstream for every call still
being set up and, acting as a UA, clears every call it holds: BYE to the originating device
and BYE towards the S-CSCF along the dialog's route set (event RELEASE: Mortal). That BYE is
lost at the failed module, so the terminating side keeps its dialog. Events go to the same
log as the failover's (``get_failover_events()``: "baseline_retry", "busy_everywhere",
"release_bye").

Charging (optional ``pcrf``; paper ``004`` VIII-C, Fig. 12): the P-CSCF is the AF. At session
set-up it asks the PCRF (``authorize_media``, Rx-like, over the control protocol) for a bearer
for each UE's media stream: the caller's from the originating INVITE's SDP, the callee's from the
2xx its UE answers on the terminating leg. The PCRF has the PGW open it, and the P-CSCF rewrites
the UE's SDP (``c=``/``m=``) to the bearer's address before passing it on, so the MRFP sends that
UE's downlink to the PGW, which relays it to the UE and charges it. A PCRF that does not answer
leaves the SDP as it is (counted, ``pcrf_errors``). When a call it holds is over (Morgue: its
BYE answered, or it failed) or released by the P-CSCF itself (Mortal by RELEASE, the baseline's
failure), the P-CSCF tells the PCRF ``session_ended(subscriber, call_id)``; the PCRF has the PGW
release the call's bearers.

All hooks run on the actor's loop.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from actors.control import ControlFailure, ControlPeer
from actors.sip.headers import new_branch, parse_name_addr, parse_uri
from actors.sip.message import SipMessage
from actors.sip.transaction import Transaction
from actors.sip_actor import Address
from nf_modules.ims_module import ImsModule
from nf_modules.pcscf_dialog import (
    DialogTransitionError,
    PcscfDialog,
    PcscfDialogTable,
    PcscfEvent,
    PcscfState,
    event_for_request,
    event_for_response,
)
from nf_modules.sdp import SdpError, audio_address, is_sdp, rewrite_audio
from nf_modules.sip_proxy import uri_address

__all__ = ["PCscf"]


class PCscf(ImsModule):
    """P-CSCF: Path on REGISTER, Fig. 5 dialog states, routing by dialog state."""

    kind: ClassVar[str] = "pcscf"

    def __init__(self, name: str, bind: Address = ("127.0.0.1", 0), *, baseline_retries: int = 5,
                 baseline_retry_interval: float = 1.0, pcrf: Address | None = None, **kwargs: Any) -> None:
        super().__init__(name, bind, **kwargs)
        self.pcrf = tuple(pcrf) if pcrf is not None else None
        self.control: ControlPeer | None = None
        if isinstance(baseline_retries, bool) or not isinstance(baseline_retries, int) or baseline_retries < 0:
            raise ValueError(f"baseline_retries must be a non-negative integer, got {baseline_retries!r}")
        if not baseline_retry_interval > 0:
            raise ValueError(f"baseline_retry_interval must be positive, got {baseline_retry_interval!r}")
        self.baseline_retries = baseline_retries
        self.baseline_retry_interval = float(baseline_retry_interval)
        self._retrying: dict[Transaction, list[Any]] = {}  # INVITE client tx -> [retries, timer]
        self.dialogs = PcscfDialogTable()
        self._originating: dict[Transaction, PcscfDialog] = {}  # INVITE client tx -> dialog
        self._in_dialog: dict[Transaction, tuple[PcscfDialog, str]] = {}  # BYE etc. -> dialog
        self._terminating = False  # set per request by on_request, read by route_initial
        self._callee_invites: dict[Transaction, str] = {}  # terminating INVITE client tx -> callee
        self._bearers: dict[tuple[str, tuple[str, int]], tuple[str, int]] = {}  # (call, UE media) -> bearer

    async def on_start(self) -> None:
        await super().on_start()
        if self.pcrf is not None:
            self.control = await ControlPeer.open(self, (self.address[0], 0), name=f"{self.name}.control", clock=self.clock)

    def _close(self) -> None:
        for entry in self._retrying.values():
            entry[1].cancel()
        if self.control is not None:
            self.control.close()
        super()._close()

    # -- requests ----------------------------------------------------------------------

    def on_request(self, request: SipMessage, transaction: Transaction, source: Address) -> Any:
        to_tag = request.to_tag
        if to_tag is None:  # (_home_domain leaves in-dialog requests alone)
            self._home_domain(request)
        # The top Route value: get() gives the first element of the first Route line (parsed
        # values are stripped), what get_all("Route")[0] is, without building the list; when it
        # has none (no Route, or a first Route line with only empty elements) get_all reads it.
        route = request.get("Route")
        if route:
            top_route: str | None = route
        else:
            routes = request.get_all("Route")
            top_route = routes[0] if routes else None
        # Terminating requests come from the S-CSCF through the Path we registered: their top
        # Route is us. Anything else out of dialog comes from a UE and goes to the S-CSCF, whatever
        # its Request-URI and whatever Route it preloaded (TS 24.229 5.2.6.3).
        self._terminating = top_route is not None and uri_address(top_route) == self.address
        if to_tag is None and not self._terminating and top_route is not None:
            request.remove("Route")
        if to_tag is not None and not route:
            # A UA that ignored the route set (SIPp's stock uac): route by dialog state.
            dialog = self._dialog_for(request)
            if dialog is not None:
                self._apply_dialog_route(request, dialog)
        if (self.control is not None and request.method == "INVITE" and to_tag is None
                and not self._terminating and is_sdp(request)):
            caller = _user(request.get("From"))
            if caller is not None:
                return self._through_bearer(request, transaction, source, caller)
        return super().on_request(request, transaction, source)

    async def _through_bearer(self, request: SipMessage, transaction: Transaction, source: Address, caller: str) -> None:
        """The caller's INVITE: its SDP pointed at the caller's PGW bearer, then forwarded."""
        body = await self._bearer_sdp(request, caller)
        if body is not None:
            request.body = body
        self._terminating = False  # other requests ran meanwhile; route_initial reads it
        result = super().on_request(request, transaction, source)
        if asyncio.iscoroutine(result):
            await result

    async def _bearer_sdp(self, message: SipMessage, subscriber: str) -> bytes | None:
        """``message``'s SDP with the UE's media address replaced by its bearer's at the PGW
        (asked of the PCRF once per call and UE address), or None to leave it as it is."""
        try:
            ue = audio_address(message.body)
        except SdpError:
            self.stats["sdp_unreadable"] += 1
            return None
        key = (message.call_id or "", ue)
        bearer = self._bearers.get(key)
        if bearer is None:
            try:
                reply = await self.control.request(self.pcrf, "authorize_media", subscriber=subscriber,  # type: ignore[union-attr,arg-type]
                                                   ue_host=ue[0], ue_port=ue[1], call_id=message.call_id or "")
                bearer = self._bearers[key] = (str(reply["host"]), int(reply["port"]))
                self.stats["pcrf_bearers"] += 1
            except (ControlFailure, KeyError, TypeError, ValueError) as error:
                self.stats["pcrf_errors"] += 1
                self.log.info("pcrf_authorize_failed", call_id=message.call_id, error=str(error))
                return None
        return rewrite_audio(message.body, *bearer)

    def route_initial(self, request: SipMessage) -> Address | None:
        if self._terminating and request.method != "REGISTER":
            return uri_address(request.uri)  # the UE's registered contact
        return self.downstream

    def forward(self, forward: SipMessage, transaction: Transaction, destination: Address) -> Transaction:
        method = forward.method
        if method == "REGISTER":
            forward.add("Path", self.own_uri(), first=True)
            forward.add("Supported", "path")
        to_tag = forward.to_tag
        in_dialog = to_tag is not None
        dialog = self.dialogs.find(forward.call_id or "", forward.from_tag, to_tag) if in_dialog else None
        client = super().forward(forward, transaction, destination)
        if self._terminating and method == "INVITE" and not in_dialog and self.control is not None:
            callee = _user(forward.uri)
            if callee is not None:
                self._callee_invites[client] = callee  # its 2xx gets the callee's bearer
        if method == "INVITE" and not in_dialog and destination == self.downstream:
            dialog = self._new_dialog(forward)
            if dialog is not None:
                self._originating[client] = dialog
                dialog.data["invite"] = forward
            if self.mode == "baseline":
                self._retrying[client] = [0, self.clock.call_later(  # type: ignore[union-attr]
                    self.baseline_retry_interval, self._baseline_retry, client)]
        elif dialog is not None:
            self._event(dialog, event_for_request(method, in_dialog=True))
            self._in_dialog[client] = (dialog, method)
        return client

    def on_ack(self, request: SipMessage, transaction: Transaction | None, source: Address) -> Any:
        if transaction is None:
            dialog = self._dialog_for(request)
            if dialog is not None:
                self._event(dialog, PcscfEvent.ACK)
                if not request.get("Route"):
                    self._apply_dialog_route(request, dialog)
        return super().on_ack(request, transaction, source)

    def _cancel(self, cancel: SipMessage, transaction: Transaction) -> None:
        dialog = self.dialogs.get(cancel.call_id or "", cancel.from_tag or "")
        if dialog is not None:
            self._event(dialog, PcscfEvent.CANCEL)
        super()._cancel(cancel, transaction)

    # -- responses -------------------------------------------------------------------------

    def on_response(self, response: SipMessage, transaction: Transaction) -> Any:
        callee = self._callee_invites.get(transaction)
        if callee is not None and 200 <= (response.status or 0) < 300 and is_sdp(response):
            return self._answer_through_bearer(response, transaction, callee)
        return self._on_response(response, transaction)

    async def _answer_through_bearer(self, response: SipMessage, transaction: Transaction, callee: str) -> None:
        """The callee's 2xx: its SDP pointed at the callee's PGW bearer, then relayed."""
        body = await self._bearer_sdp(response, callee)
        if body is not None:
            response.body = body
        self._on_response(response, transaction)

    def on_stray_response(self, response: SipMessage, source: Address) -> Any:
        """A 2xx retransmission of the callee: the same bearer rewrite as its first copy."""
        if self._bearers and 200 <= (response.status or 0) < 300 and is_sdp(response):
            try:
                bearer = self._bearers.get((response.call_id or "", audio_address(response.body)))
            except SdpError:
                bearer = None
            if bearer is not None:
                response.body = rewrite_audio(response.body, *bearer)
        return super().on_stray_response(response, source)

    def _on_response(self, response: SipMessage, transaction: Transaction) -> Any:
        status = response.status
        if self._retrying and (status or 0) > 100:
            entry = self._retrying.pop(transaction, None)
            if entry is not None:
                entry[1].cancel()
        dialog = self._originating.get(transaction)
        if dialog is not None and status:
            to_tag = response.to_tag
            event = event_for_response(status, "INVITE", has_to_tag=to_tag is not None)
            if event is not None:
                if to_tag and dialog.to_tag is None:
                    dialog.to_tag = to_tag
                if event is PcscfEvent.SUCCESS and dialog.route_set is None:
                    self._learn_route(dialog, response)
                self._event(dialog, event)
        else:
            entry = self._in_dialog.get(transaction)
            if entry is not None and status and status >= 200:
                dialog, method = entry
                event = event_for_response(status, method, has_to_tag=True, initial_invite=False)
                if event is not None:
                    self._event(dialog, event)
        return super().on_response(response, transaction)

    def on_timeout(self, transaction: Transaction, timer: str) -> Any:
        dialog = self._originating.get(transaction)
        entry = self._in_dialog.get(transaction)
        if dialog is None and entry is not None:
            dialog = entry[0]
        if dialog is not None:
            self._event(dialog, PcscfEvent.TIMEOUT)
        return super().on_timeout(transaction, timer)

    def on_transaction_terminated(self, transaction: Transaction) -> Any:
        entry = self._retrying.pop(transaction, None)
        if entry is not None:
            entry[1].cancel()
        self._originating.pop(transaction, None)
        self._in_dialog.pop(transaction, None)
        self._callee_invites.pop(transaction, None)
        return super().on_transaction_terminated(transaction)

    # -- the baseline's failure (Fig. 4-6) ------------------------------------------------------

    def _baseline_retry(self, client: Transaction) -> None:
        """A retry interval passed without an answer beyond 100 Trying (on the loop)."""
        entry = self._retrying.get(client)
        if entry is None:
            return
        if entry[0] < self.baseline_retries:
            entry[0] += 1
            self.stats["baseline_retries"] += 1
            self.failover_log.record("baseline_retry", self.now, retry=entry[0],
                                     call_id=client.request.call_id)  # type: ignore[attr-defined]
            self.endpoint.send(bytes(client.request), client.destination)  # type: ignore[attr-defined,union-attr]
            entry[1] = self.clock.call_later(self.baseline_retry_interval, self._baseline_retry, client)  # type: ignore[union-attr]
            return
        self._busy_everywhere(client)

    def _busy_everywhere(self, failed: Transaction) -> None:
        """The S-CSCF is declared busy: 600 for the calls being set up, BYE for the others."""
        self.stats["busy_everywhere"] += 1
        self.failover_log.record("busy_everywhere", self.now, failed=self._hop_name(failed.destination),  # type: ignore[attr-defined]
                                 call_id=failed.request.call_id)  # type: ignore[attr-defined]
        for client in list(self._retrying):
            self._retrying.pop(client)[1].cancel()
        for client, dialog in list(self._originating.items()):
            server = self._upstream.get(client)
            if server is not None and dialog.state.name in ("PREPARATIVE", "EARLY"):
                try:
                    self.send_response(server, server.request.make_response(600))  # type: ignore[attr-defined]
                    self.stats["answered_600"] += 1
                except Exception:  # noqa: BLE001  (already answered meanwhile)
                    pass
        byes = 0
        for dialog in list(self.dialogs):
            if dialog.state.name in ("MORATORIUM", "ESTABLISHED", "EARLY", "PREPARATIVE"):
                byes += self._release(dialog)
        self.failover_log.record("release_bye", self.now, byes=byes)

    def _release(self, dialog: PcscfDialog) -> int:
        """Act as a UA: BYE to the caller and towards the S-CSCF; the dialog goes Mortal."""
        invite: SipMessage | None = dialog.data.get("invite")
        self._event(dialog, PcscfEvent.RELEASE)
        if invite is None or dialog.to_tag is None or dialog.route_set is None:
            return 0
        sent = 0
        caller_from, callee_to = invite.get("From") or "", invite.get("To") or ""
        callee_to = f"{callee_to};tag={dialog.to_tag}"
        caller = uri_address(invite.get("Contact") or "")
        if caller is not None:
            bye = self._bye(str(parse_name_addr(invite.get("Contact") or "").uri), callee_to, caller_from, dialog)
            self.send_request(bye, caller)
            sent += 1
        target = dialog.data.get("remote_target") or ""
        uri = str(parse_name_addr(target).uri) if target else (invite.uri or "")
        bye = self._bye(uri, caller_from, callee_to, dialog)
        for value in dialog.route_set:
            bye.add("Route", value)
        destination = uri_address(dialog.route_set[0]) if dialog.route_set else self.downstream
        if destination is not None:
            self.send_request(bye, destination)
            sent += 1
        self.stats["release_bye"] += sent
        return sent

    def _bye(self, uri: str, from_value: str, to_value: str, dialog: PcscfDialog) -> SipMessage:
        host, port = self.address
        return SipMessage.request("BYE", uri, [
            ("Via", f"SIP/2.0/UDP {host}:{port};branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", from_value),
            ("To", to_value),
            ("Call-ID", dialog.call_id),
            ("CSeq", "99999 BYE"),
            ("Reason", 'SIP;cause=600;text="Busy Everywhere"'),
        ])

    # -- dialog state -------------------------------------------------------------------------

    def _new_dialog(self, invite: SipMessage) -> PcscfDialog | None:
        self.dialogs.purge(self.now)
        call_id, from_tag = invite.call_id, invite.from_tag
        if not call_id or not from_tag or self.dialogs.get(call_id, from_tag) is not None:
            return None
        dialog = self.dialogs.create(call_id, from_tag, self.now)
        self._event(dialog, PcscfEvent.INVITE)
        return dialog

    def _dialog_for(self, request: SipMessage) -> PcscfDialog | None:
        return self.dialogs.find(request.call_id or "", request.from_tag, request.to_tag)

    def _event(self, dialog: PcscfDialog, event: PcscfEvent) -> None:
        try:
            dialog.on_event(event, self.now)
        except DialogTransitionError as error:
            self.stats["dialog_transition_errors"] += 1
            self.log.info("pcscf_illegal_transition", call_id=dialog.call_id, error=str(error))
            return
        if self.control is None:  # no PCRF: nothing to report
            return
        # The session is over for charging once its BYE was answered (Morgue: the callee stopped
        # sending before it answered), or at once when the P-CSCF itself releases it.
        state = dialog.state
        over = state is PcscfState.MORGUE or (state is PcscfState.MORTAL and event is PcscfEvent.RELEASE)
        if over and "charged" not in dialog.data:
            dialog.data["charged"] = True
            self._session_ended(dialog)

    def _session_ended(self, dialog: PcscfDialog) -> None:
        """Tell the PCRF the caller's session is over (fire and forget, on the loop)."""
        invite: SipMessage | None = dialog.data.get("invite")
        subscriber = _user(invite.get("From") if invite is not None else None)
        for key in [k for k in self._bearers if k[0] == dialog.call_id]:
            del self._bearers[key]
        if subscriber is None:
            return

        async def report() -> None:
            try:
                await self.control.request(self.pcrf, "session_ended", subscriber=subscriber,  # type: ignore[union-attr,arg-type]
                                           call_id=dialog.call_id)
                self.stats["pcrf_session_ended"] += 1
            except ControlFailure as error:
                self.stats["pcrf_errors"] += 1
                self.log.info("pcrf_report_failed", call_id=dialog.call_id, error=str(error))

        self._run_task(report())

    def _learn_route(self, dialog: PcscfDialog, response: SipMessage) -> None:
        """Route set for the caller's in-dialog requests: the Record-Route below us."""
        caller_order = list(reversed(response.get_all("Record-Route")))
        own = [i for i, value in enumerate(caller_order) if uri_address(value) == self.address]
        dialog.route_set = caller_order[own[0] + 1 :] if own else caller_order
        dialog.data["remote_target"] = (response.get("Contact") or "").strip()
        dialog.data.pop("remote_target_uri", None)  # parsed again when next needed

    def _apply_dialog_route(self, request: SipMessage, dialog: PcscfDialog) -> None:
        """Re-apply what the caller's UA should have sent: Route set and remote target."""
        if dialog.route_set is None or not dialog.is_from_caller(request.from_tag or ""):
            return
        request.remove("Route")
        # With no Route left, one add() each appended the values at the end in order: the same
        # in one extend (the values came from a parsed 2xx's Record-Route: clean already).
        request.headers.extend([("Route", value) for value in dialog.route_set])
        data = dialog.data
        target = data.get("remote_target", "")
        if target:
            # The ACK and the BYE of a call both need the target's URI: parsed once, kept with
            # the dialog (the 2xx's Contact is learned once, _learn_route).
            uri = data.get("remote_target_uri")
            if uri is None:
                try:
                    uri = data["remote_target_uri"] = str(parse_name_addr(target).uri)
                except ValueError:
                    self.stats["bad_remote_target"] += 1
                    return
            request.uri = uri

    def _home_domain(self, request: SipMessage) -> None:
        """``sip:user@<our host:port>`` means ``sip:user@<home domain>``."""
        uri = request.uri or ""
        target = uri_address(uri)
        if target == self.address and "@" in uri and request.to_tag is None:
            user = uri.split(":", 1)[1].split("@", 1)[0]
            request.uri = f"sip:{user}@{self.domain}"

    # -- queries (ask through a proxy) ----------------------------------------------------------

    def get_dialog_states(self) -> dict[str, int]:
        """How many dialogs are in each Fig. 5 state right now."""
        return self.dialogs.counts()

    def get_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = super().get_stats()
        stats["dialogs"] = self.dialogs.counts()
        return stats


def _user(name_addr: str | None) -> str | None:
    """The user part of a From/To value (``"<sip:ue0001@ims.example>;tag=x"`` -> ``"ue0001"``)."""
    if not name_addr:
        return None
    try:
        uri = parse_name_addr(name_addr).uri if "<" in name_addr else parse_uri(name_addr.split(";", 1)[0])
    except ValueError:
        return None
    return uri.user or None

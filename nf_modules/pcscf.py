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

All hooks run on the actor's loop.
"""

from __future__ import annotations

from typing import Any, ClassVar

from actors.sip.headers import parse_name_addr
from actors.sip.message import SipMessage
from actors.sip.transaction import Transaction
from actors.sip_actor import Address
from nf_modules.ims_module import ImsModule
from nf_modules.pcscf_dialog import (
    DialogTransitionError,
    PcscfDialog,
    PcscfDialogTable,
    PcscfEvent,
    event_for_request,
    event_for_response,
)
from nf_modules.sip_proxy import uri_address

__all__ = ["PCscf"]


class PCscf(ImsModule):
    """P-CSCF: Path on REGISTER, Fig. 5 dialog states, routing by dialog state."""

    kind: ClassVar[str] = "pcscf"

    def __init__(self, name: str, bind: Address = ("127.0.0.1", 0), **kwargs: Any) -> None:
        super().__init__(name, bind, **kwargs)
        self.dialogs = PcscfDialogTable()
        self._originating: dict[Transaction, PcscfDialog] = {}  # INVITE client tx -> dialog
        self._in_dialog: dict[Transaction, tuple[PcscfDialog, str]] = {}  # BYE etc. -> dialog
        self._terminating = False  # set per request by on_request, read by route_initial

    # -- requests ----------------------------------------------------------------------

    def on_request(self, request: SipMessage, transaction: Transaction, source: Address) -> Any:
        self._home_domain(request)
        routes = request.get_all("Route")
        # Terminating requests come from the S-CSCF through the Path we registered: their top
        # Route is us. Anything else out of dialog comes from a UE and goes to the S-CSCF, whatever
        # its Request-URI and whatever Route it preloaded (TS 24.229 5.2.6.3).
        self._terminating = bool(routes) and uri_address(routes[0]) == self.address
        if request.to_tag is None and not self._terminating and routes:
            request.remove("Route")
        if request.to_tag is not None and not request.get("Route"):
            # A UA that ignored the route set (SIPp's stock uac): route by dialog state.
            dialog = self._dialog_for(request)
            if dialog is not None:
                self._apply_dialog_route(request, dialog)
        return super().on_request(request, transaction, source)

    def route_initial(self, request: SipMessage) -> Address | None:
        if self._terminating and request.method != "REGISTER":
            return uri_address(request.uri)  # the UE's registered contact
        return self.downstream

    def forward(self, forward: SipMessage, transaction: Transaction, destination: Address) -> Transaction:
        method = forward.method
        if method == "REGISTER":
            forward.add("Path", self.own_uri(), first=True)
            forward.add("Supported", "path")
        in_dialog = forward.to_tag is not None
        dialog = self._dialog_for(forward) if in_dialog else None
        client = super().forward(forward, transaction, destination)
        if method == "INVITE" and not in_dialog and destination == self.downstream:
            dialog = self._new_dialog(forward)
            if dialog is not None:
                self._originating[client] = dialog
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
        dialog = self._originating.get(transaction)
        if dialog is not None and response.status:
            event = event_for_response(response.status, "INVITE", has_to_tag=response.to_tag is not None)
            if event is not None:
                if response.to_tag and dialog.to_tag is None:
                    dialog.to_tag = response.to_tag
                if event is PcscfEvent.SUCCESS and dialog.route_set is None:
                    self._learn_route(dialog, response)
                self._event(dialog, event)
        else:
            entry = self._in_dialog.get(transaction)
            if entry is not None and response.status and response.status >= 200:
                dialog, method = entry
                event = event_for_response(response.status, method, has_to_tag=True, initial_invite=False)
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
        self._originating.pop(transaction, None)
        self._in_dialog.pop(transaction, None)
        return super().on_transaction_terminated(transaction)

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

    def _learn_route(self, dialog: PcscfDialog, response: SipMessage) -> None:
        """Route set for the caller's in-dialog requests: the Record-Route below us."""
        caller_order = list(reversed(response.get_all("Record-Route")))
        own = [i for i, value in enumerate(caller_order) if uri_address(value) == self.address]
        dialog.route_set = caller_order[own[0] + 1 :] if own else caller_order
        dialog.data["remote_target"] = (response.get("Contact") or "").strip()

    def _apply_dialog_route(self, request: SipMessage, dialog: PcscfDialog) -> None:
        """Re-apply what the caller's UA should have sent: Route set and remote target."""
        if dialog.route_set is None or not dialog.is_from_caller(request.from_tag or ""):
            return
        request.remove("Route")
        for value in dialog.route_set:
            request.add("Route", value)
        target = dialog.data.get("remote_target", "")
        if target:
            try:
                request.uri = str(parse_name_addr(target).uri)
            except ValueError:
                self.stats["bad_remote_target"] += 1

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

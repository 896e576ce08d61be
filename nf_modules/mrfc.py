"""``Mrfc``: the Media Resource Function Controller, a SIP UAS for the AS's media sessions.

The AS's Media Policy opens one MRF dialog per call (RFC 4240 style: ``INVITE
sip:bridge=<call's Call-ID>@<mrfc>`` with the caller's SDP) before it forwards the call, and keeps
the MRF informed as the call progresses. The MRFC keeps each dialog's state in the paper's
Fig. 5c machine (``mrf_dialog.py``: Start, Created, Progressing, Connected, Ended)::

    INVITE  -> reserve two RTP ports on the MRFP, tell it UE-A's address,
               200 with the MRF's SDP (two streams, a=label:A / a=label:B; see sdp.py)
               Start -> Created (RESERVED); no resources: 503, Start -> Ended (REJECTED)
               the 200 is resent (T1 doubling to T2) until the ACK comes; no ACK within 64*T1:
               Created -> Ended (TIMEOUT), ports released (RFC 3261 13.3.1.4)
    ACK     -> ACK event
    UPDATE  -> Mrf-Event: progress            (the callee's 18x)        -> Progressing
               Mrf-Event: answer;side=B       (the callee's 2xx + SDP)  -> Connected
               Mrf-Event: update;side=A|B     (a re-INVITE's new SDP)   -> same state
               with an SDP body, the MRFP learns that side's UE address first; the 200 then
               carries the MRF's SDP again. Without Mrf-Event: ``answer`` if the body is SDP
               (``progress`` once Connected: ``update``), else ``progress``.
    BYE     -> release the ports on the MRFP, 200, -> Ended
    CANCEL  -> 200, 487 for the INVITE still being set up (its ports are released)

A BYE or UPDATE of a dialog this MRFC does not know whose Request-URI names a bridge (the MRFC's
2xx Contact is the dialog's ``bridge=`` URI, so every in-dialog request carries it) is the work of
an MRFC that failed and was replaced by this one (paper ``004`` VI-B): the BYE releases the bridge
on the MRFP, the UPDATE's SDP re-points its side, and either is answered 200 (``mrf_adopted_*``).
Meanwhile the MRFP kept forwarding with the last instructions. Other unknown dialogs get 481, a
Request-URI that is not ``bridge=...`` 404, an INVITE without a
readable SDP offer 488, a second INVITE for a live bridge 486, an event the state machine
refuses (``progress`` once Connected, say) 400 (counted). MRFP trouble: an allocation refused
or unanswered 503; an update unanswered 503, refused 500 (481 if the MRFP has no such bridge); a
release that fails is counted and the BYE still gets its 200.

The code has the paper's two parts (Fig. 1): the **Media Control** turns session data into
instructions for the media plane (``media_control.py``: SDP -> where the MRFP sends each side's
media; metadata from the MRFP's Media Update -> control instructions, by running the call's media
script, fetched over HTTP from the AS), and the **Resource Controller** carries the former out on
the MRFP over the control protocol (:class:`ResourceController`). ``Mrfc`` is the SIP side that
drives both. The script of a call is the URL in the AS's INVITE header ``Mrf-Script`` (else the
``script_url`` option, else the built-in default script, no HTTP). The MRFC's control port serves
``instructions(bridge_id, side, sets)`` to Media Update; its address goes to the MRFP with each
``allocate`` (``controller``). ``mode`` (``baseline``/``refactored``), ``media_capacity`` and
``media_queue_limit`` are the Media Control's (see ``media_control.py``). The AS names the call's
subscribers in ``Mrf-Subscribers: A=<caller>;B=<callee>``; they go to the MRFP with ``allocate``
for its usage reports to the PCRF.

Everything runs on the actor's loop; hooks that wait for the MRFP are ``async`` and interleave
with other SIP input at their ``await`` points.
"""

from __future__ import annotations

import asyncio
import functools
import urllib.parse
from dataclasses import dataclass
from typing import Any, ClassVar

from actors.control import ControlError, ControlFailure, ControlPeer, ControlTimeout
from actors.sip.headers import SipParseError, new_tag, parse_uri
from actors.sip.message import SipMessage
from actors.sip.transaction import Transaction
from actors.sip_actor import Address, SipActor
from nf_modules.mrf_dialog import (
    DEFAULT_LINGER,
    MRF_TABLE,
    MrfDialog,
    MrfDialogTable,
    MrfEvent,
    MrfState,
    MrfTransitionError,
)
from nf_modules.media_control import MediaControl, MediaInstruction, ScriptFetcher
from nf_modules.sdp import SdpError, is_sdp, mrf_answer

__all__ = [
    "BRIDGE_PREFIX",
    "MRF_EVENT_HEADER",
    "MRF_SCRIPT_HEADER",
    "MRF_SUBSCRIBERS_HEADER",
    "BridgeResources",
    "MediaControl",
    "MediaInstruction",
    "Mrfc",
    "ResourceController",
    "bridge_id_of",
    "bridge_uri",
    "parse_mrf_event",
    "parse_subscribers",
]

BRIDGE_PREFIX = "bridge="
MRF_EVENT_HEADER = "Mrf-Event"
MRF_SCRIPT_HEADER = "Mrf-Script"  # the AS's media script URL for the call (INVITE to the MRFC)
MRF_SUBSCRIBERS_HEADER = "Mrf-Subscribers"  # A=<caller>;B=<callee> (INVITE to the MRFC)
_EVENTS = {"progress": MrfEvent.PROGRESS, "answer": MrfEvent.ANSWER, "update": MrfEvent.UPDATE}
_ALLOW = "INVITE, ACK, UPDATE, BYE, CANCEL, OPTIONS"


def bridge_uri(call_id: str, mrfc: Address) -> str:
    """``sip:bridge=<call_id, %-escaped>@host:port``: the MRF dialog's Request-URI for a call."""
    return f"sip:{BRIDGE_PREFIX}{urllib.parse.quote(call_id, safe='')}@{mrfc[0]}:{mrfc[1]}"


def bridge_id_of(uri: str) -> str | None:
    """The call's Call-ID from a ``bridge=`` Request-URI, or ``None``."""
    try:
        user = parse_uri(uri).user
    except SipParseError:
        return None
    if not user or not user.startswith(BRIDGE_PREFIX) or len(user) == len(BRIDGE_PREFIX):
        return None
    return urllib.parse.unquote(user[len(BRIDGE_PREFIX):])


# Every message of an MRF dialog names its bridge in the Request-URI (the INVITE, its 200's
# Contact, the UPDATEs and the BYE): the same string, parsed once per call rather than per message.
@functools.lru_cache(maxsize=4096)
def _bridge_of(uri: str) -> str | None:
    """:func:`bridge_id_of`, remembered for the most recent URIs."""
    return bridge_id_of(uri)


@functools.lru_cache(maxsize=4096)
def _contact_of(uri: str, mrfc: Address) -> str:
    """The Contact of the MRFC's 2xx to a request for ``uri``: the bridge's URI, or the MRFC's."""
    bridge_id = _bridge_of(uri)
    return f"<{bridge_uri(bridge_id, mrfc)}>" if bridge_id else f"<sip:mrfc@{mrfc[0]}:{mrfc[1]}>"


def parse_mrf_event(value: str | None, has_sdp: bool, state: MrfState) -> tuple[MrfEvent, str]:
    """``(event, side)`` of an UPDATE's ``Mrf-Event`` value (see the module docstring).

    Raises ``ValueError`` for an unknown event or side.
    """
    if value is None:
        if not has_sdp:
            return MrfEvent.PROGRESS, "B"
        return (MrfEvent.UPDATE if state is MrfState.CONNECTED else MrfEvent.ANSWER), "B"
    name, *params = [p.strip() for p in value.split(";")]
    event = _EVENTS.get(name.lower())
    if event is None:
        raise ValueError(f"unknown {MRF_EVENT_HEADER} {name!r}")
    side = "B"
    for param in params:
        key, _, val = param.partition("=")
        if key.strip().lower() == "side":
            side = val.strip().upper()
    if side not in ("A", "B"):
        raise ValueError(f"side must be A or B, got {side!r}")
    return event, side


def parse_subscribers(value: str | None) -> dict[str, str]:
    """``{"A": user, "B": user}`` from an ``Mrf-Subscribers`` value; unreadable parts are skipped."""
    out: dict[str, str] = {}
    for part in (value or "").split(";"):
        side, sep, user = part.partition("=")
        side, user = side.strip().upper(), user.strip()
        if sep and side in ("A", "B") and user and len(user) <= 256:
            out[side] = user
    return out


# -- the Resource Controller: the MRFC's half that talks to the MRFP ----------------------


@dataclass(frozen=True, slots=True)
class BridgeResources:
    """What the MRFP reserved for a bridge: its media host and the port of each side."""

    host: str
    a_port: int
    b_port: int


class ResourceController:
    """Reserves, points and releases MRFP bridges over the control protocol (on the MRFC's loop).

    Each method raises :class:`~actors.control.ControlError` (the MRFP refused: ``exhausted``,
    ``not_found``, ...) or :class:`~actors.control.ControlTimeout`.
    """

    def __init__(self, peer: ControlPeer, mrfp: Address | None, *, timeout: float | None = None) -> None:
        self.peer = peer
        self.mrfp = mrfp
        self.timeout = timeout
        self.controller = list(peer.address)  # our Media Control, for the MRFP's Media Update

    async def _call(self, op: str, **args: Any) -> Any:
        if self.mrfp is None:
            raise ControlError("unconfigured", "no MRFP address configured")
        return await self.peer.call(self.mrfp, op, args, timeout=self.timeout)

    async def allocate(self, bridge_id: str, subscribers: dict[str, str] | None = None) -> BridgeResources:
        extra = {"subscribers": subscribers} if subscribers else {}
        reply = await self._call("allocate", bridge_id=bridge_id, controller=self.controller, **extra)
        try:
            return BridgeResources(str(reply["host"]), int(reply["ports"]["A"]), int(reply["ports"]["B"]))
        except (KeyError, TypeError, ValueError):
            raise ControlError("bad_reply", f"allocate answered {reply!r:.200}") from None

    async def update(self, bridge_id: str, instruction: MediaInstruction) -> None:
        await self._call(
            "update", bridge_id=bridge_id, side=instruction.side,
            remote_host=instruction.remote_host, remote_port=instruction.remote_port,
        )

    async def release(self, bridge_id: str) -> None:
        await self._call("release", bridge_id=bridge_id)


# -- the SIP side -------------------------------------------------------------------------------


class Mrfc(SipActor):
    """The MRFC (``kind = "mrfc"``): a UAS for the AS's MRF dialogs; see the module docstring.

    ``mrfp``: the MRFP's control address; ``control_timeout``: how long one MRFP request may
    take, retransmissions included; ``linger``: how long an Ended dialog stays queryable;
    ``mode``, ``media_capacity`` (metadata sets evaluated per second, ``None``: unlimited),
    ``media_queue_limit``, ``script_url``, ``script_timeout``: the Media Control's.
    """

    kind: ClassVar[str] = "mrfc"

    def __init__(
        self,
        name: str,
        bind: Address = ("127.0.0.1", 0),
        *,
        mrfp: Address | None = None,
        control_timeout: float = 1.0,
        linger: float = DEFAULT_LINGER,
        mode: str = "refactored",
        media_capacity: float | None = None,
        media_queue_limit: int = 100,
        script_url: str | None = None,
        script_timeout: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, bind, **kwargs)
        self.mrfp = tuple(mrfp) if mrfp else None
        self.control_timeout = control_timeout
        self.dialogs = MrfDialogTable(linger=linger)
        self.script_url = script_url
        self.media_control = MediaControl(mode=mode, capacity=media_capacity, queue_limit=media_queue_limit,
                                          fetcher=ScriptFetcher(timeout=script_timeout))
        self.resources: ResourceController | None = None
        self.control: ControlPeer | None = None
        self._live: dict[str, MrfDialog] = {}  # bridge id -> its dialog while not Ended
        self._purge_handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._version = 0

    async def on_start(self) -> None:
        await super().on_start()
        self.media_control.clock = self.clock
        self.control = await ControlPeer.open(
            self, (self.address[0], 0), name=f"{self.name}.control", clock=self.clock, timeout=self.control_timeout
        )
        self.resources = ResourceController(self.control, self.mrfp)

    async def on_stop(self) -> None:
        self._close_mrfc()
        super().on_stop()
        await self.media_control.close()

    def on_failure(self, *exc_info: Any) -> None:
        self._close_mrfc()
        super().on_failure(*exc_info)

    def _close_mrfc(self) -> None:
        if self._purge_handle is not None:
            self._purge_handle.cancel()
        for dialog in self.dialogs:
            handle = dialog.data.pop("retransmit", None)
            if handle is not None:
                handle.cancel()
        for task in self._tasks:
            task.cancel()
        if self.control is not None:
            self.control.close()

    def set_mrfp(self, address: Address) -> None:
        """Point the Resource Controller at another MRFP (topology wiring)."""
        self.mrfp = tuple(address)  # type: ignore[assignment]
        if self.resources is not None:
            self.resources.mrfp = self.mrfp

    # -- queries (asks) ------------------------------------------------------------------

    def get_dialog_states(self) -> dict[str, int]:
        """MRF dialogs per state (the paper's names), Ended ones until they are purged."""
        return self.dialogs.counts()

    def get_dialog_state(self, call_id: str) -> str | None:
        """The MRF state of the session serving the call ``call_id`` (its bridge id), or None."""
        dialog = self._live.get(call_id)
        if dialog is None:
            ended = self.dialogs.by_call_ref(call_id)
            dialog = max(ended, key=lambda d: d.created_at) if ended else None
        return dialog.state.value if dialog is not None else None

    def get_dialog_history(self, call_id: str) -> list[str]:
        """The states the call's MRF dialog went through, in order."""
        dialog = self._live.get(call_id)
        if dialog is None:
            found = self.dialogs.by_call_ref(call_id)
            dialog = max(found, key=lambda d: d.created_at) if found else None
        return [state.value for state, _ in dialog.history] if dialog is not None else []

    def get_hanging(self, threshold: float) -> list[str]:
        """Bridge ids of dialogs stuck outside Ended for more than ``threshold`` seconds."""
        return [d.call_ref for d in self.dialogs.hanging(self.now, threshold)]

    def get_media_control_address(self) -> Address | None:
        """Where Media Update asks for instructions (the MRFC's control port)."""
        return self.control.address if self.control is not None else None

    def get_stats(self) -> dict[str, int]:
        out = super().get_stats()
        out.update(self.media_control.get_stats())
        out.update({f"mrf_{state.lower()}": n for state, n in self.dialogs.counts().items()})
        out["mrf_dialogs"] = len(self.dialogs)
        out["mrf_live"] = len(self._live)
        return out

    # -- Media Control over the control protocol (Media Update asks; on the loop) ------------

    async def handle_instructions(self, bridge_id: str, side: str, sets: list[Any]) -> list[dict[str, Any]]:
        """Control instructions for a flow's metadata sets (see ``media_control.py``)."""
        if bridge_id not in self._live:
            raise ControlError("not_found", f"no live MRF dialog for {bridge_id!r:.80}")
        return await self.media_control.control_instructions(bridge_id, side, sets)

    # -- requests ----------------------------------------------------------------------------

    def on_request(self, request: SipMessage, transaction: Transaction, source: Address) -> Any:
        method = request.method
        if method == "INVITE" and request.to_tag is None:
            return self._invite(request, transaction)
        if method == "UPDATE":
            return self._update(request, transaction)
        if method == "BYE":
            return self._bye(request, transaction)
        if method == "CANCEL":
            return self._cancel(request, transaction)
        if method == "OPTIONS":
            self._answer(transaction, request, 200, allow=True)
            return None
        if method == "INVITE":  # re-INVITE: the AS uses UPDATE
            self._answer(transaction, request, 488 if self._find(request) else 481)
            return None
        self._answer(transaction, request, 405, allow=True)
        return None

    def on_ack(self, request: SipMessage, transaction: Transaction | None, source: Address) -> Any:
        dialog = self._find(request)
        if dialog is not None:
            self.stats["mrf_ack"] += 1
            self._stop_retransmitting(dialog)
            self._event(dialog, MrfEvent.ACK)

    async def _invite(self, request: SipMessage, transaction: Transaction) -> None:
        bridge_id = _bridge_of(request.uri or "")
        if bridge_id is None:
            self.stats["mrf_not_a_bridge"] += 1
            self._answer(transaction, request, 404)
            return
        if not is_sdp(request):
            self._answer(transaction, request, 488)
            return
        try:
            instructions = self.media_control.address_instructions("A", request.body)
        except SdpError as error:
            self.stats["mrf_bad_sdp"] += 1
            self._answer(transaction, request, 488, warning=str(error))
            return
        if bridge_id in self._live:
            self._answer(transaction, request, 486)
            return
        try:
            dialog = self.dialogs.create(request.call_id, request.from_tag or "", self.now)
        except ValueError as error:  # a second INVITE with the same Call-ID and From tag
            self._answer(transaction, request, 400, warning=str(error))
            return
        dialog.call_ref = bridge_id
        dialog.to_tag = new_tag()
        self._live[bridge_id] = dialog
        self.media_control.register(bridge_id, request.get(MRF_SCRIPT_HEADER) or self.script_url)
        subscribers = parse_subscribers(request.get(MRF_SUBSCRIBERS_HEADER))
        resources = await self._reserve(dialog, bridge_id, instructions, subscribers)
        if resources is None:
            self._reject(dialog, transaction, request, 503)
            return
        if dialog.data.get("cancelled"):  # the AS gave up meanwhile: 487 went out already
            await self._release(bridge_id)
            self._reject(dialog, transaction, request, None)
            return
        self._version += 1
        answer = mrf_answer(
            resources.host, resources.a_port, resources.b_port, offer=request.body, version=self._version
        )
        dialog.ports = {"A": resources.a_port, "B": resources.b_port}
        dialog.data["sdp"] = answer
        ok = self._response(request, 200, dialog.to_tag, body=answer)
        try:
            self.send_response(transaction, ok)
        except Exception:  # noqa: BLE001  (the transaction is gone: nobody to answer)
            await self._release(bridge_id)
            self._reject(dialog, transaction, request, None)
            return
        self._event(dialog, MrfEvent.RESERVED)
        self._retransmit_2xx(dialog, transaction, ok, self.layer.timers.t1, self.now + self.layer.timers.h)

    def _retransmit_2xx(
        self, dialog: MrfDialog, transaction: Transaction, ok: SipMessage, interval: float, give_up: float
    ) -> None:
        """RFC 3261 13.3.1.4: the UAS resends its 2xx (T1, doubling to T2) until the ACK comes;
        none within 64*T1 ends the dialog (TIMEOUT) and releases the bridge."""
        dialog.data.pop("retransmit", None)
        if dialog.is_final or dialog.data.get("acked"):
            return
        if dialog.data.get("sent_2xx"):
            if self.now >= give_up:
                self.stats["mrf_ack_timeout"] += 1
                self._live.pop(dialog.call_ref, None)
                self._event(dialog, MrfEvent.TIMEOUT)
                self._run_later(self._release(dialog.call_ref))
                return
            try:
                self.send_response(transaction, ok)
                self.stats["mrf_2xx_retransmitted"] += 1
            except Exception:  # noqa: BLE001  (the transaction is over: Timer L)
                pass
        dialog.data["sent_2xx"] = True
        delay = max(min(interval, give_up - self.now), 0.0)
        next_interval = min(interval * 2, self.layer.timers.t2)
        dialog.data["retransmit"] = self.clock.call_later(  # type: ignore[union-attr]
            delay, self._retransmit_2xx, dialog, transaction, ok, next_interval, give_up
        )

    def _stop_retransmitting(self, dialog: MrfDialog) -> None:
        dialog.data["acked"] = True
        handle = dialog.data.pop("retransmit", None)
        if handle is not None:
            handle.cancel()

    def _run_later(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reserve(
        self, dialog: MrfDialog, bridge_id: str, instructions: list[MediaInstruction],
        subscribers: dict[str, str] | None = None,
    ) -> BridgeResources | None:
        assert self.resources is not None
        try:
            resources = await self.resources.allocate(bridge_id, subscribers)
        except ControlFailure as error:
            self._control_failed("allocate", error)
            return None
        dialog.resource_ids.append(bridge_id)
        try:
            for instruction in instructions:
                await self.resources.update(bridge_id, instruction)
        except ControlFailure as error:
            self._control_failed("update", error)
            await self._release(bridge_id)
            return None
        return resources

    def _reject(self, dialog: MrfDialog, transaction: Transaction, request: SipMessage, status: int | None) -> None:
        self._live.pop(dialog.call_ref, None)
        self.media_control.forget(dialog.call_ref)
        self._event(dialog, MrfEvent.REJECTED)
        if status is not None:
            self._answer(transaction, request, status)

    async def _update(self, request: SipMessage, transaction: Transaction) -> None:
        dialog = self._find(request)
        if dialog is None and request.to_tag is not None and self._orphan(request) is not None:
            return await self._adopted_update(request, transaction, self._orphan(request))  # type: ignore[arg-type]
        if dialog is None or dialog.is_final:
            self._answer(transaction, request, 481)
            return
        has_sdp = is_sdp(request)
        try:
            event, side = parse_mrf_event(request.get(MRF_EVENT_HEADER), has_sdp, dialog.state)
        except ValueError as error:
            self._answer(transaction, request, 400, warning=str(error))
            return
        if (dialog.state, event) not in MRF_TABLE:
            self.stats["mrf_transition_errors"] += 1
            self._answer(transaction, request, 400, warning=f"{event.name.lower()} not allowed in {dialog.state.value}")
            return
        if has_sdp:
            try:
                instructions = self.media_control.address_instructions(side, request.body)
            except SdpError as error:
                self._answer(transaction, request, 488, warning=str(error))
                return
            try:
                for instruction in instructions:
                    await self.resources.update(dialog.call_ref, instruction)  # type: ignore[union-attr]
            except ControlFailure as error:
                self._answer(transaction, request, self._control_failed("update", error))
                return
            if dialog.is_final:  # a BYE overtook this UPDATE while the MRFP answered
                self._answer(transaction, request, 481)
                return
        self._event(dialog, event)
        body = dialog.data.get("sdp", b"") if has_sdp else b""
        self.send_response(transaction, self._response(request, 200, dialog.to_tag, body=body))

    async def _bye(self, request: SipMessage, transaction: Transaction) -> None:
        dialog = self._find(request)
        bridge_id = self._orphan(request) if dialog is None and request.to_tag is not None else None
        if bridge_id is not None:  # the dialog of the MRFC we replace: release its bridge
            self.stats["mrf_adopted_bye"] += 1
            self.media_control.forget(bridge_id)
            try:
                await self.resources.release(bridge_id)  # type: ignore[union-attr]
                self.stats["mrfp_released"] += 1
            except ControlFailure as error:
                self._answer(transaction, request, self._control_failed("release", error))
                return
            self._answer(transaction, request, 200)
            return
        if dialog is None or dialog.is_final:
            self._answer(transaction, request, 481)
            return
        self._live.pop(dialog.call_ref, None)
        self._event(dialog, MrfEvent.RELEASE)
        await self._release(dialog.call_ref)
        self._answer(transaction, request, 200)

    def _orphan(self, request: SipMessage) -> str | None:
        """The bridge an in-dialog request of an unknown dialog names (a failed MRFC's), or None."""
        bridge_id = _bridge_of(request.uri or "")
        if bridge_id is None or bridge_id in self._live:
            return None
        return bridge_id

    async def _adopted_update(self, request: SipMessage, transaction: Transaction, bridge_id: str) -> None:
        """An UPDATE of the replaced MRFC's dialog: re-point the bridge's side at the MRFP."""
        self.stats["mrf_adopted_update"] += 1
        if is_sdp(request):
            try:
                _, side = parse_mrf_event(request.get(MRF_EVENT_HEADER), True, MrfState.CONNECTED)
                instructions = self.media_control.address_instructions(side, request.body)
            except (ValueError, SdpError) as error:
                self._answer(transaction, request, 488 if isinstance(error, SdpError) else 400, warning=str(error))
                return
            try:
                for instruction in instructions:
                    await self.resources.update(bridge_id, instruction)  # type: ignore[union-attr]
            except ControlFailure as error:
                self._answer(transaction, request, self._control_failed("update", error))
                return
        self._answer(transaction, request, 200)

    def _cancel(self, request: SipMessage, transaction: Transaction) -> None:
        invite_tx = self.layer.find_invite_for_cancel(request)
        if invite_tx is None:
            self._answer(transaction, request, 481)
            return
        self._answer(transaction, request, 200)
        dialog = self.dialogs.get(request.call_id or "", request.from_tag or "")
        try:
            invite: SipMessage = invite_tx.request  # type: ignore[attr-defined]
            terminated = invite.make_response(487, to_tag=dialog.to_tag if dialog else None)
            self.send_response(invite_tx, terminated)
        except Exception:  # noqa: BLE001  (already answered: the AS will BYE the dialog)
            return
        if dialog is not None:
            dialog.data["cancelled"] = True

    async def _release(self, bridge_id: str) -> None:
        self.media_control.forget(bridge_id)
        try:
            await self.resources.release(bridge_id)  # type: ignore[union-attr]
            self.stats["mrfp_released"] += 1
        except ControlFailure as error:
            self._control_failed("release", error)

    # -- helpers --------------------------------------------------------------------------------

    def _find(self, request: SipMessage) -> MrfDialog | None:
        return self.dialogs.find(request.call_id or "", request.from_tag, request.to_tag)

    def _event(self, dialog: MrfDialog, event: MrfEvent) -> None:
        try:
            dialog.on_event(event, self.now)
        except MrfTransitionError as error:
            self.stats["mrf_transition_errors"] += 1
            self.log.info("mrf_transition_refused", error=str(error))
        if dialog.is_final:
            self._live.pop(dialog.call_ref, None)
            self._arm_purge()

    def _arm_purge(self) -> None:
        deadline = self.dialogs.get_timer()
        if deadline is None or self._purge_handle is not None:
            return
        self._purge_handle = self.clock.call_at(deadline, self._purge)  # type: ignore[union-attr]

    def _purge(self) -> None:
        self._purge_handle = None
        self.dialogs.purge(self.now)
        self._arm_purge()

    def _control_failed(self, op: str, error: ControlFailure) -> int:
        """Count and log a failed MRFP request; the SIP status that reports it (481 for a bridge
        the MRFP does not know, 500 for another refusal, 503 when the MRFP did not answer)."""
        code = "timeout" if isinstance(error, ControlTimeout) else getattr(error, "code", "error")
        self.stats[f"mrfp_{op}_{code}"] += 1
        self.log.info("mrfp_request_failed", op=op, error=str(error))
        if isinstance(error, ControlError):
            return 481 if error.code == "not_found" else 500
        return 503

    def _response(self, request: SipMessage, status: int, to_tag: str | None, *, body: bytes = b"") -> SipMessage:
        response = request.make_response(status, to_tag=to_tag)
        if 200 <= status < 300 and request.method in ("INVITE", "UPDATE"):
            # The bridge's URI: in-dialog requests name it, so a replacement MRFC can act on them.
            response.set("Contact", _contact_of(request.uri or "", tuple(self.address)))
        if body:
            response.set("Content-Type", "application/sdp")
            response.body = body
        return response

    def _answer(
        self,
        transaction: Transaction,
        request: SipMessage,
        status: int,
        *,
        allow: bool = False,
        warning: str | None = None,
    ) -> None:
        dialog = self.dialogs.get(request.call_id or "", request.from_tag or "")
        response = request.make_response(status, to_tag=request.to_tag or (dialog.to_tag if dialog else None))
        if allow:
            response.set("Allow", _ALLOW)
        if warning:
            response.set("Warning", f'399 mrfc "{warning[:200].replace(chr(34), chr(39))}"')
        try:
            self.send_response(transaction, response)
        except Exception:  # noqa: BLE001  (already answered, e.g. 487 after CANCEL)
            pass


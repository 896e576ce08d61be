"""The AS modules, MRFC and MRFP over real UDP on loopback: the anchored call flow, barring,
set-up failures (MRFC silent, MRFP out of ports, CANCEL during the set-up, a late MRF answer),
re-INVITE, and the MRFC and MRFP on their own (bad requests, 2xx retransmission, control errors).

Wiring of the flow tests (every arrow a SIP hop; MRFC <-> MRFP the control protocol)::

    caller UA -> AsIncomingLegControl -> ApplicationLogic -> MediaPolicy -> AsOutgoingLegControl -> callee UA
                                                                |
                                                               Mrfc  ~~control~~>  MrfpSignalling
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

import pytest

from actors import Runtime
from actors.control import ControlError, ControlPeer
from actors.sip.headers import new_branch, new_call_id
from actors.sip.message import SipMessage
from actors.sip.timers import SipTimers
from actors.transport import UdpEndpoint
from nf_modules.application_server import (
    ApplicationLogic,
    AsIncomingLegControl,
    AsOutgoingLegControl,
    Barring,
    MediaPolicy,
)
from nf_modules.mrfc import Mrfc, bridge_id_of, bridge_uri
from nf_modules.mrfp import MrfpSignalling
from nf_modules.sdp import audio_address, mrf_sides
from nf_modules.user_agent import UserAgent, sdp_offer

WAIT = 10.0
FAST = SipTimers(t1=0.01, t2=0.04, t4=0.05)


async def until(probe: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT) -> Any:
    """Poll ``probe`` until it returns something truthy (an event we cannot await directly)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def free_port_range(size: int = 80) -> tuple[int, int]:
    """An even-aligned port range whose first port is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        first = probe.getsockname()[1] & ~1
    return first, min(first + size - 1, 65535)


class Recorder(UserAgent):
    """A user agent that reports INVITEs and INVITE responses it gets to a queue; optionally busy."""

    def __init__(self, *args: Any, events: asyncio.Queue[tuple[str, SipMessage]], busy: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events = events
        self.busy = busy

    def on_request(self, request: SipMessage, transaction: Any, source: Any) -> Any:
        self.events.put_nowait((f"{self.user} got {request.method}", request))
        if request.method == "INVITE" and self.busy:
            self.send_response(transaction, request.make_response(486, to_tag="busy"))
            return None
        return super().on_request(request, transaction, source)

    def on_response(self, response: SipMessage, transaction: Any) -> Any:
        if response.cseq[1] == "INVITE":
            self.events.put_nowait((f"{self.user} got {response.status}", response))
        return super().on_response(response, transaction)

    async def hang_up(self, call_id: str) -> int:
        """As the callee, clear the call with BYE; the final status of the BYE."""
        dialog = self.dialogs.pop(call_id)
        bye = dialog.create_request("BYE")
        transaction = self._send_in_dialog(bye, dialog, self.address)
        final = self._finals[transaction] = self.loop.create_future()
        try:
            return (await asyncio.wait_for(final, WAIT)).status or 0
        finally:
            self._finals.pop(transaction, None)


@dataclass
class Ims:
    caller: Any
    callee: Any
    incoming: Any
    logic: Any
    policy: Any
    outgoing: Any
    mrfc: Any
    mrfp: Any
    entry: tuple[str, int]
    events: asyncio.Queue[tuple[str, SipMessage]]
    port_range: tuple[int, int]

    async def next_event(self, name: str) -> SipMessage:
        while True:
            event, message = await asyncio.wait_for(self.events.get(), WAIT)
            if event == name:
                return message


@asynccontextmanager
async def as_chain(
    *, barred: tuple[str, ...] = (), busy: bool = False, mrfc_address: tuple[str, int] | None = None,
    port_range: tuple[int, int] | None = None, linger: float = 30.0, ring_delay: float = 0.05,
    mrf_timeout: float = 3.0,
) -> AsyncIterator[Ims]:
    events: asyncio.Queue[tuple[str, SipMessage]] = asyncio.Queue()
    port_range = port_range or free_port_range()
    async with Runtime.attach():
        mrfp = MrfpSignalling.start("mrfp", port_range=port_range).proxy()
        mrfc = Mrfc.start("mrfc", mrfp=await mrfp.get_address(), linger=linger, control_timeout=1.0).proxy()
        callee = Recorder.start("bob-ua", "bob", events=events, busy=busy, ring_delay=ring_delay).proxy()
        outgoing = AsOutgoingLegControl.start("as-out", downstream=await callee.get_address()).proxy()
        policy = MediaPolicy.start(
            "as-media", downstream=await outgoing.get_address(),
            mrfc=mrfc_address or await mrfc.get_address(), mrf_timeout=mrf_timeout, timers=FAST,
        ).proxy()
        logic = ApplicationLogic.start("as-logic", downstream=await policy.get_address(), barred=barred).proxy()
        incoming = AsIncomingLegControl.start("as-in", downstream=await logic.get_address()).proxy()
        caller = Recorder.start("alice-ua", "alice", events=events).proxy()
        yield Ims(caller, callee, incoming, logic, policy, outgoing, mrfc, mrfp,
                  await incoming.get_address(), events, port_range)


def port_is_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


# -- the call flow ---------------------------------------------------------------------------------


async def test_call_is_anchored_at_mrfp_and_everything_is_released_after_bye() -> None:
    async with as_chain(linger=0.5) as ims:
        caller_address = await ims.caller.get_address()  # asked now: the caller's inbox is busy during call()
        callee_address = await ims.callee.get_address()
        call = asyncio.ensure_future(ims.caller.call("bob", ims.entry, hold=0.3))
        invite = await ims.next_event("bob got INVITE")
        ok = await ims.next_event("alice got 200")
        mrf_a, mrf_b = audio_address(ok.body), audio_address(invite.body)
        first, last = ims.port_range
        # the callee sends to MRFP's B side, the caller to its A side; both ports really reserved
        assert mrf_b[0] == mrf_a[0] == "127.0.0.1"
        assert first <= mrf_a[1] <= last and first <= mrf_b[1] <= last and mrf_a[1] != mrf_b[1]
        assert port_is_bound(mrf_a[1]) and port_is_bound(mrf_b[1])
        bridges = (await ims.mrfp.get_bridges())["bridges"]
        assert list(bridges) == [invite.call_id]
        assert bridges[invite.call_id]["ports"] == {"A": mrf_a[1], "B": mrf_b[1]}
        assert bridges[invite.call_id]["remotes"]["A"] == [caller_address[0], 40000]  # from the caller's offer
        # the rest of the SDP is the UEs' own
        assert invite.body == sdp_offer(caller_address[0], 40000).replace(b" 40000 ", f" {mrf_b[1]} ".encode())
        assert ok.body == sdp_offer(callee_address[0], 41000).replace(b" 41000 ", f" {mrf_a[1]} ".encode())
        result = await asyncio.wait_for(call, WAIT)
        assert result.completed
        assert result.call_id == invite.call_id

        # MRF dialog went Start -> Created -> Progressing -> Connected -> Ended
        await until(lambda: _state_is(ims.mrfc, result.call_id, "Ended"), "MRF dialog Ended")
        assert await ims.mrfc.get_dialog_history(result.call_id) == [
            "Start", "Created", "Progressing", "Connected", "Ended"]
        mrfp_stats = await ims.mrfp.get_stats()
        assert mrfp_stats["bridges_allocated"] == 1 and mrfp_stats["bridges_released"] == 1
        assert mrfp_stats["bridges_updated"] == 2  # A from the offer, B from the answer
        assert mrfp_stats["bridges"] == 0 and mrfp_stats["ports_in_use"] == 0
        assert not port_is_bound(mrf_a[1]) and not port_is_bound(mrf_b[1])
        # nothing left anywhere once the Ended dialog has lingered
        await until(lambda: _mrfc_empty(ims.mrfc), "MRFC table purged")
        assert await ims.policy.get_calls() == {}
        await until(lambda: _no_mrf_transactions(ims.policy), "MRF transactions over")
        policy_stats = await ims.policy.get_stats()
        assert policy_stats["mrf_setups"] == 1 and policy_stats["mrf_update_progress"] == 1
        assert policy_stats["mrf_update_answer"] == 1 and policy_stats["mrf_released"] == 1
        assert (await ims.mrfc.get_stats())["mrf_ack"] == 1


async def _state_is(mrfc: Any, call_id: str, state: str) -> bool:
    return await mrfc.get_dialog_state(call_id) == state


async def _mrfc_empty(mrfc: Any) -> bool:
    return not any((await mrfc.get_dialog_states()).values())


async def _no_mrf_transactions(policy: Any) -> bool:
    return (await policy.get_stats())["mrf_transactions"] == 0


async def test_callee_hangs_up_and_concurrent_calls_leave_nothing_behind() -> None:
    async with as_chain() as ims:
        # the caller holds for 1 s; the callee hangs up as soon as the MRF is Connected
        call = asyncio.ensure_future(ims.caller.call("bob", ims.entry, hold=1.0))
        ok = await ims.next_event("alice got 200")
        await until(lambda: _state_is(ims.mrfc, ok.call_id, "Connected"), "MRF dialog Connected")
        assert await ims.callee.hang_up(ok.call_id) == 200
        await until(lambda: _state_is(ims.mrfc, ok.call_id, "Ended"), "MRF dialog Ended after the callee's BYE")
        assert await ims.policy.get_calls() == {}
        assert (await ims.mrfp.get_stats())["bridges"] == 0
        assert (await asyncio.wait_for(call, WAIT)).status == 200
        # twelve calls from four callers at once (`call` is @concurrent: 3 in flight per caller)
        callers = [Recorder.start(f"ue{i}", f"ue{i}", events=asyncio.Queue()).proxy() for i in range(4)]
        results = await asyncio.gather(
            *(caller.call("bob", ims.entry, hold=0.05) for caller in callers for _ in range(3))
        )
        assert all(r.completed for r in results), [(r.status, r.bye_status) for r in results if not r.completed]
        for r in results:
            await until(lambda r=r: _state_is(ims.mrfc, r.call_id, "Ended"), "every MRF dialog Ended")
        states = await ims.mrfc.get_dialog_states()
        assert states["Ended"] == 13 and sum(states.values()) == 13
        stats = await ims.mrfp.get_stats()
        assert stats["bridges_allocated"] == 13 and stats["bridges_released"] == 13 and stats["ports_in_use"] == 0
        assert await ims.policy.get_calls() == {}


async def test_failure_final_response_ends_the_mrf_dialog() -> None:
    async with as_chain(busy=True) as ims:
        result = await ims.caller.call("bob", ims.entry)
        assert result.status == 486
        await until(lambda: _state_is(ims.mrfc, result.call_id, "Ended"), "MRF dialog Ended after 486")
        assert await ims.mrfc.get_dialog_history(result.call_id) == ["Start", "Created", "Ended"]
        assert (await ims.mrfp.get_stats())["bridges"] == 0
        assert await ims.policy.get_calls() == {}


# -- service logic and failures ------------------------------------------------------------------


@pytest.mark.parametrize(("barred", "party"), [(("bob",), "callee"), (("sip:alice@ims.example",), "caller")])
async def test_barred_calls_get_403_before_any_media_is_reserved(barred: tuple[str, ...], party: str) -> None:
    async with as_chain(barred=barred) as ims:
        result = await ims.caller.call("bob", ims.entry)
        assert result.status == 403
        assert (await ims.mrfc.get_stats()).get("rx_INVITE", 0) == 0
        assert (await ims.callee.get_stats()).get("rx_INVITE", 0) == 0
        stats = await ims.logic.get_stats()
        assert stats[f"barred_{party}"] == 1
        # unbarred at run time: the call goes through
        await ims.logic.set_barred([])
        assert (await ims.caller.call("bob", ims.entry)).completed


def test_barring_list_matching() -> None:
    def invite(caller: str, callee_uri: str, pai: str | None = None) -> SipMessage:
        headers = [("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("From", f"<{caller}>;tag=1"), ("To", f"<{callee_uri}>"),
                   ("Call-ID", "c"), ("CSeq", "1 INVITE")]
        if pai:
            headers.append(("P-Asserted-Identity", pai))
        return SipMessage.request("INVITE", callee_uri, headers)

    barring = Barring(["ue0003", "ue0004@IMS.example", "<sip:ue0005@other.example>"])
    assert barring.check(invite("sip:ue0001@ims.example", "sip:ue0002@ims.example")) is None
    assert barring.check(invite("sip:ue0003@anywhere", "sip:ue0002@ims.example")) == "caller"
    assert barring.check(invite("sip:ue0001@ims.example", "sip:ue0004@ims.example")) == "callee"
    assert barring.check(invite("sip:ue0001@ims.example", "sip:ue0004@other.example")) is None
    assert barring.check(invite("sip:ue0001@ims.example", "sip:ue0005@other.example;user=phone")) == "callee"
    # the asserted identity wins over From
    assert barring.check(invite("sip:ue0001@ims.example", "sip:ue0002@ims.example", "<sip:ue0003@ims.example>")) == "caller"
    assert Barring().check(invite("sip:ue0003@x", "sip:ue0003@x")) is None
    for bad in ["", "  ", "sip:ims.example", "a b", "sip:bad uri@x"]:
        with pytest.raises(ValueError):
            Barring([bad])


async def test_mrfc_not_answering_gives_503_within_timer_b() -> None:
    async with await UdpEndpoint.open(("127.0.0.1", 0), lambda d, a: None) as dead:  # swallows everything
        async with as_chain(mrfc_address=dead.local_address[:2]) as ims:
            start = time.monotonic()
            result = await ims.caller.call("bob", ims.entry, timeout=WAIT)
            elapsed = time.monotonic() - start
            assert result.status == 503
            assert elapsed < 64 * FAST.t1 + 1.0  # Timer B of the MRF INVITE, well before mrf_timeout + slack
            assert dead.stats.as_dict()["datagrams_in"] >= 3  # the INVITE and its retransmissions
            assert (await ims.callee.get_stats()).get("rx_INVITE", 0) == 0
            assert await ims.policy.get_calls() == {}
            assert (await ims.policy.get_stats())["mrf_setup_failed_503"] == 1


async def test_mrfp_out_of_ports_gives_503_and_a_rejected_mrf_dialog() -> None:
    first, _ = free_port_range()
    async with as_chain(port_range=(first, first + 1)) as ims:  # one even port: no bridge fits
        result = await ims.caller.call("bob", ims.entry)
        assert result.status == 503
        assert await ims.mrfc.get_dialog_history(result.call_id) == ["Start", "Ended"]
        assert (await ims.mrfc.get_stats())["mrfp_allocate_exhausted"] == 1
        assert (await ims.callee.get_stats()).get("rx_INVITE", 0) == 0
        assert await ims.policy.get_calls() == {}


async def test_late_offer_invite_passes_through_unanchored() -> None:
    async with as_chain() as ims, await UdpEndpoint.open(("127.0.0.1", 0), None) as raw:
        answers: asyncio.Queue[SipMessage] = asyncio.Queue()
        raw.on_datagram = lambda data, _: answers.put_nowait(SipMessage.parse(data))
        port = raw.local_address[1]
        invite = SipMessage.request("INVITE", "sip:bob@ims.example", [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={new_branch()}"), ("Max-Forwards", "70"),
            ("From", "<sip:alice@ims.example>;tag=late"), ("To", "<sip:bob@ims.example>"),
            ("Call-ID", new_call_id()), ("CSeq", "1 INVITE"), ("Contact", f"<sip:alice@127.0.0.1:{port}>")])
        raw.send(bytes(invite), await ims.policy.get_address())
        received = await ims.next_event("bob got INVITE")
        assert received.body == b""
        while (await asyncio.wait_for(answers.get(), WAIT)).status != 200:
            pass
        assert (await ims.mrfc.get_stats()).get("rx_INVITE", 0) == 0
        assert await ims.policy.get_calls() == {}


# -- MRFC and MRFP on their own -------------------------------------------------------------------


async def test_mrfp_control_operations_and_errors() -> None:
    first, _ = free_port_range()
    async with Runtime.attach():
        mrfp = MrfpSignalling.start("mrfp", port_range=(first, first + 5)).proxy()  # three even ports
        address = await mrfp.get_address()
        peer = await ControlPeer.open(None, ("127.0.0.1", 0), timeout=2.0)
        try:
            bridge = await peer.request(address, "allocate", bridge_id="call-1")
            assert bridge["ports"] == {"A": first, "B": first + 2} and bridge["host"] == "127.0.0.1"
            assert port_is_bound(first) and port_is_bound(first + 2)
            updated = await peer.request(address, "update", bridge_id="call-1", side="B", remote_host="127.0.0.1", remote_port=41000)
            assert updated["remotes"] == {"A": None, "B": ["127.0.0.1", 41000]}
            errors = [
                ("allocate", {"bridge_id": "call-1"}, "exists"),
                ("allocate", {"bridge_id": "call-2"}, "exhausted"),  # one port left, a bridge needs two
                ("allocate", {"bridge_id": ""}, "bad_args"),
                ("update", {"bridge_id": "nope", "side": "A", "remote_host": "h", "remote_port": 1}, "not_found"),
                ("update", {"bridge_id": "call-1", "side": "C", "remote_host": "h", "remote_port": 1}, "bad_args"),
                ("update", {"bridge_id": "call-1", "side": "A", "remote_host": "h", "remote_port": 70000}, "bad_args"),
                ("update", {"bridge_id": "call-1", "side": "A", "remote_host": "h h", "remote_port": 1}, "bad_args"),
                ("update", {"bridge_id": "call-1"}, "bad_args"),
                ("release", {"bridge_id": "nope"}, "not_found"),
            ]
            for op, args, code in errors:
                with pytest.raises(ControlError) as caught:
                    await peer.call(address, op, args)
                assert caught.value.code == code, (op, args)
            listing = await peer.request(address, "list")
            assert list(listing["bridges"]) == ["call-1"] and listing["free_ports"] == 1
            assert await peer.request(address, "release", bridge_id="call-1") == {"bridge_id": "call-1", "released": [first, first + 2]}
            assert not port_is_bound(first)
            again = await peer.request(address, "allocate", bridge_id="call-2")  # the failed try wrapped the cursor
            assert again["ports"] == {"A": first, "B": first + 2}
            stats = await mrfp.get_stats()
            assert stats["bridges_exhausted"] == 1 and stats["bridges"] == 1
        finally:
            peer.close()


async def test_mrfp_skips_ports_taken_by_someone_else() -> None:
    first, _ = free_port_range()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", first))
        async with Runtime.attach():
            mrfp = MrfpSignalling.start("mrfp", port_range=(first, first + 5)).proxy()
            peer = await ControlPeer.open(None, ("127.0.0.1", 0))
            try:
                bridge = await peer.request(await mrfp.get_address(), "allocate", bridge_id="b")
            finally:
                peer.close()
            assert bridge["ports"] == {"A": first + 2, "B": first + 4}
            assert (await mrfp.get_stats())["ports_skipped"] == 1


async def test_mrfc_answers_bad_requests_precisely() -> None:
    first, _ = free_port_range()
    async with Runtime.attach(), await UdpEndpoint.open(("127.0.0.1", 0), None) as raw:
        mrfp = MrfpSignalling.start("mrfp", port_range=(first, first + 39)).proxy()
        mrfc = Mrfc.start("mrfc", mrfp=await mrfp.get_address()).proxy()
        address = await mrfc.get_address()
        answers: asyncio.Queue[SipMessage] = asyncio.Queue()
        raw.on_datagram = lambda data, _: answers.put_nowait(SipMessage.parse(data))
        port = raw.local_address[1]

        async def ask(method: str, uri: str, *, body: bytes = b"", extra: tuple[tuple[str, str], ...] = (),
                      call_id: str = "mrf-1", from_tag: str = "as", to_tag: str | None = None, cseq: int = 1) -> SipMessage:
            headers = [("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={new_branch()}"), ("Max-Forwards", "70"),
                       ("From", f"<sip:as@127.0.0.1>;tag={from_tag}"),
                       ("To", f"<{uri}>" + (f";tag={to_tag}" if to_tag else "")),
                       ("Call-ID", call_id), ("CSeq", f"{cseq} {method}"), ("Contact", f"<sip:as@127.0.0.1:{port}>"),
                       *extra]
            if body:
                headers.append(("Content-Type", "application/sdp"))
            raw.send(bytes(SipMessage.request(method, uri, headers, body)), address)
            while True:
                answer = await asyncio.wait_for(answers.get(), WAIT)
                if answer.status != 100 and answer.cseq == (cseq, method):
                    return answer

        offer = sdp_offer("127.0.0.1", 40000)
        uri = bridge_uri("call@host", address)
        assert bridge_id_of(uri) == "call@host" and "%40" in uri
        assert (await ask("INVITE", f"sip:someone@{address[0]}:{address[1]}", body=offer)).status == 404
        assert (await ask("INVITE", uri, call_id="no-sdp")).status == 488
        assert (await ask("INVITE", uri, call_id="bad-sdp", body=b"v=0\r\nnonsense\r\n")).status == 488
        ok = await ask("INVITE", uri, body=offer)
        assert ok.status == 200 and set(mrf_sides(ok.body)) == {"A", "B"}
        assert (await ask("INVITE", uri, call_id="mrf-2", body=offer)).status == 486  # the bridge is taken
        tag = ok.to_tag
        assert (await ask("UPDATE", uri, to_tag="nope", call_id="unknown", cseq=2)).status == 481
        assert (await ask("UPDATE", uri, to_tag=tag, cseq=2, extra=(("Mrf-Event", "dance"),))).status == 400
        answer = sdp_offer("127.0.0.1", 41000)
        connected = await ask("UPDATE", uri, to_tag=tag, cseq=3, body=answer, extra=(("Mrf-Event", "answer;side=B"),))
        assert connected.status == 200 and connected.body == ok.body
        assert await mrfc.get_dialog_state("call@host") == "Connected"
        refused = await ask("UPDATE", uri, to_tag=tag, cseq=4, extra=(("Mrf-Event", "progress"),))
        assert refused.status == 400 and "progress not allowed in Connected" in refused.get("Warning")
        assert (await ask("OPTIONS", uri, call_id="o")).get("Allow")
        assert (await ask("MESSAGE", uri, call_id="m")).status == 405
        assert (await ask("BYE", uri, to_tag=tag, cseq=5)).status == 200
        assert (await ask("BYE", uri, to_tag=tag, cseq=6)).status == 481
        assert await mrfc.get_dialog_history("call@host") == ["Start", "Created", "Connected", "Ended"]
        stats = await mrfc.get_stats()
        assert stats["mrf_transition_errors"] == 1 and stats["mrf_ended"] == 1
        assert (await mrfp.get_stats())["bridges"] == 0


# -- raw SIP peers: CANCEL during the MRF set-up, re-INVITE with new SDP -----------------------------


class RawPeer:
    """A bare UDP socket that collects parsed SIP messages."""

    def __init__(self, endpoint: UdpEndpoint) -> None:
        self.endpoint = endpoint
        self.inbox: asyncio.Queue[SipMessage] = asyncio.Queue()
        endpoint.on_datagram = lambda data, _: self.inbox.put_nowait(SipMessage.parse(data))
        self.address: tuple[str, int] = endpoint.local_address[:2]

    def send(self, message: SipMessage, to: tuple[str, int]) -> None:
        self.endpoint.send(bytes(message), to)

    async def expect(self, predicate: Callable[[SipMessage], bool]) -> SipMessage:
        while True:
            message = await asyncio.wait_for(self.inbox.get(), WAIT)
            if predicate(message):
                return message

    def invite(self, uri: str, body: bytes) -> SipMessage:
        host, port = self.address
        return SipMessage.request("INVITE", uri, [
            ("Via", f"SIP/2.0/UDP {host}:{port};branch={new_branch()}"), ("Max-Forwards", "70"),
            ("From", f"<sip:alice@ims.example>;tag={new_branch()[-8:]}"), ("To", f"<{uri}>"),
            ("Call-ID", new_call_id(host)), ("CSeq", "1 INVITE"), ("Contact", f"<sip:alice@{host}:{port}>"),
            ("Content-Type", "application/sdp")], body)


def _response_to(method: str, status: int) -> Callable[[SipMessage], bool]:
    return lambda m: m.status == status and m.cseq[1] == method


async def test_cancel_during_mrf_setup_gets_487_and_the_late_bridge_is_released() -> None:
    async with (
        await UdpEndpoint.open(("127.0.0.1", 0), None) as mrfc_socket,
        await UdpEndpoint.open(("127.0.0.1", 0), None) as caller_socket,
    ):
        fake_mrfc, caller = RawPeer(mrfc_socket), RawPeer(caller_socket)
        async with as_chain(mrfc_address=fake_mrfc.address) as ims:
            policy = await ims.policy.get_address()
            invite = caller.invite("sip:bob@ims.example", sdp_offer("127.0.0.1", 40000))
            caller.send(invite, policy)
            mrf_invite = await fake_mrfc.expect(lambda m: m.method == "INVITE")
            assert bridge_id_of(mrf_invite.uri) == invite.call_id and mrf_invite.body == invite.body
            fake_mrfc.send(mrf_invite.make_response(100), policy)  # stops Timer B of the MRF INVITE
            assert await ims.policy.get_calls() == {invite.call_id: "setup"}
            cancel = SipMessage.request("CANCEL", invite.uri, [
                (name, invite.get(name)) for name in ("Via", "From", "To", "Call-ID")] + [("CSeq", "1 CANCEL")])
            caller.send(cancel, policy)
            await caller.expect(_response_to("CANCEL", 200))
            terminated = await caller.expect(_response_to("INVITE", 487))
            ack = SipMessage.request("ACK", invite.uri, [(n, invite.get(n)) for n in ("Via", "From", "Call-ID")] + [
                ("To", terminated.get("To")), ("CSeq", "1 ACK")])
            caller.send(ack, policy)
            # the MRFC answers after all: the AS acknowledges and clears the bridge at once
            ok = mrf_invite.make_response(200, to_tag="mrf")
            ok.set("Contact", f"<sip:mrfc@{fake_mrfc.address[0]}:{fake_mrfc.address[1]}>")
            ok.set("Content-Type", "application/sdp")
            ok.body = b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 30000 RTP/AVP 0\r\na=label:A\r\nm=audio 30002 RTP/AVP 0\r\na=label:B\r\n"
            fake_mrfc.send(ok, policy)
            assert (await fake_mrfc.expect(lambda m: m.method == "ACK")).to_tag == "mrf"
            bye = await fake_mrfc.expect(lambda m: m.method == "BYE")
            assert bye.call_id == mrf_invite.call_id and bye.uri == ok.get("Contact").strip("<>")
            fake_mrfc.send(bye.make_response(200), policy)
            assert await ims.policy.get_calls() == {}
            assert (await ims.callee.get_stats()).get("rx_INVITE", 0) == 0
            await until(lambda: _no_mrf_transactions(ims.policy), "MRF transactions over")
            assert (await ims.policy.get_stats())["mrf_released"] == 1


async def test_mrf_answer_after_the_set_up_gave_up_is_acknowledged_and_cleared() -> None:
    async with await UdpEndpoint.open(("127.0.0.1", 0), None) as mrfc_socket:
        fake_mrfc = RawPeer(mrfc_socket)
        async with as_chain(mrfc_address=fake_mrfc.address, mrf_timeout=0.2) as ims:
            policy = await ims.policy.get_address()
            call = asyncio.ensure_future(ims.caller.call("bob", ims.entry))
            mrf_invite = await fake_mrfc.expect(lambda m: m.method == "INVITE")
            fake_mrfc.send(mrf_invite.make_response(100), policy)  # the MRFC is slow, not dead
            result = await asyncio.wait_for(call, WAIT)
            assert result.status == 503  # mrf_timeout
            assert (await ims.policy.get_stats())["mrf_setup_failed_503"] == 1
            ok = mrf_invite.make_response(200, to_tag="late")
            ok.set("Contact", f"<sip:mrfc@{fake_mrfc.address[0]}:{fake_mrfc.address[1]}>")
            ok.set("Content-Type", "application/sdp")
            ok.body = b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 30000 RTP/AVP 0\r\na=label:A\r\nm=audio 30002 RTP/AVP 0\r\na=label:B\r\n"
            fake_mrfc.send(ok, policy)
            assert (await fake_mrfc.expect(lambda m: m.method == "ACK")).to_tag == "late"
            bye = await fake_mrfc.expect(lambda m: m.method == "BYE")
            fake_mrfc.send(bye.make_response(200), policy)
            await until(lambda: _no_mrf_transactions(ims.policy), "MRF transactions over")
            assert (await ims.policy.get_stats())["mrf_released"] == 1
            assert await ims.policy.get_calls() == {}


async def test_reinvite_with_new_sdp_is_rewritten_and_reported_to_the_mrf() -> None:
    from actors.sip.dialog import Dialog
    from nf_modules.sip_proxy import uri_address

    async with await UdpEndpoint.open(("127.0.0.1", 0), None) as caller_socket, as_chain() as ims:
        caller = RawPeer(caller_socket)
        invite = caller.invite("sip:bob@ims.example", sdp_offer("127.0.0.1", 40000))
        caller.send(invite, ims.entry)
        first = await ims.next_event("bob got INVITE")
        ok = await caller.expect(_response_to("INVITE", 200))
        dialog = Dialog.from_uac(invite, ok)
        assert len(dialog.route_set) == 4  # every AS module Record-Routes
        next_hop = uri_address(dialog.route_set[0])
        caller.send(dialog.create_request("ACK"), next_hop)
        await until(lambda: _state_is(ims.mrfc, invite.call_id, "Connected"), "MRF dialog Connected")
        # UE-A moves its media to port 40100
        reinvite = dialog.create_request("INVITE", sdp_offer("127.0.0.1", 40100), [("Content-Type", "application/sdp")])
        caller.send(reinvite, next_hop)
        second = await ims.next_event("bob got INVITE")
        assert second.to_tag is not None and second.body == first.body  # still MRFP's B side
        reok = await caller.expect(lambda m: m.status == 200 and m.cseq == (2, "INVITE"))
        assert audio_address(reok.body) == audio_address(ok.body)  # still MRFP's A side
        dialog.receive_response(reok)
        caller.send(dialog.create_request("ACK"), next_hop)

        async def caller_moved() -> bool:
            bridge = (await ims.mrfp.get_bridges())["bridges"].get(invite.call_id)
            return bool(bridge) and bridge["remotes"]["A"] == ["127.0.0.1", 40100]

        await until(caller_moved, "MRFP told of UE-A's new address")
        assert (await ims.policy.get_stats())["mrf_update_update"] == 1
        assert await ims.mrfc.get_dialog_state(invite.call_id) == "Connected"
        caller.send(dialog.create_request("BYE"), next_hop)
        await caller.expect(_response_to("BYE", 200))
        await until(lambda: _state_is(ims.mrfc, invite.call_id, "Ended"), "MRF dialog Ended")
        assert (await ims.mrfp.get_stats())["bridges"] == 0
        assert await ims.policy.get_calls() == {}


async def test_mrfc_with_a_silent_mrfp_answers_503_and_honours_cancel() -> None:
    async with (
        await UdpEndpoint.open(("127.0.0.1", 0), None) as mrfp_socket,
        await UdpEndpoint.open(("127.0.0.1", 0), None) as as_socket,
        Runtime.attach(),
    ):
        control_requests: asyncio.Queue[bytes] = asyncio.Queue()
        mrfp_socket.on_datagram = lambda data, _: control_requests.put_nowait(data)
        media_policy = RawPeer(as_socket)
        mrfc = Mrfc.start("mrfc", mrfp=mrfp_socket.local_address[:2], control_timeout=0.3).proxy()
        address = await mrfc.get_address()
        offer = sdp_offer("127.0.0.1", 40000)
        # no answer from the MRFP within control_timeout: 503, the dialog goes Start -> Ended
        timed_out = media_policy.invite(bridge_uri("call-1", address), offer)
        media_policy.send(timed_out, address)
        assert b'"op":"allocate"' in await asyncio.wait_for(control_requests.get(), WAIT)
        assert (await media_policy.expect(_response_to("INVITE", 503))).call_id == timed_out.call_id
        assert await mrfc.get_dialog_history("call-1") == ["Start", "Ended"]
        # CANCEL while the MRFP is being asked: 200 for the CANCEL, 487 for the INVITE at once
        cancelled = media_policy.invite(bridge_uri("call-2", address), offer)
        media_policy.send(cancelled, address)
        await media_policy.expect(_response_to("INVITE", 100))
        cancel = SipMessage.request("CANCEL", cancelled.uri, [
            (name, cancelled.get(name)) for name in ("Via", "From", "To", "Call-ID")] + [("CSeq", "1 CANCEL")])
        media_policy.send(cancel, address)
        await media_policy.expect(_response_to("CANCEL", 200))
        await media_policy.expect(_response_to("INVITE", 487))
        await until(lambda: _state_is(mrfc, "call-2", "Ended"), "the cancelled MRF dialog Ended")
        stats = await mrfc.get_stats()
        assert stats["mrfp_allocate_timeout"] == 2 and stats["mrf_live"] == 0


async def test_mrfc_resends_its_200_until_the_ack_and_gives_up_after_64_t1() -> None:
    first, _ = free_port_range()
    async with await UdpEndpoint.open(("127.0.0.1", 0), None) as as_socket, Runtime.attach():
        media_policy = RawPeer(as_socket)
        mrfp = MrfpSignalling.start("mrfp", port_range=(first, first + 39)).proxy()
        mrfc = Mrfc.start("mrfc", mrfp=await mrfp.get_address(), timers=FAST).proxy()
        address = await mrfc.get_address()
        offer = sdp_offer("127.0.0.1", 40000)
        # acknowledged after the second copy of the 200: no more copies, the dialog stays Created
        acked = media_policy.invite(bridge_uri("acked", address), offer)
        media_policy.send(acked, address)
        ok = await media_policy.expect(_response_to("INVITE", 200))
        assert (await media_policy.expect(_response_to("INVITE", 200))).to_tag == ok.to_tag
        ack = SipMessage.request("ACK", acked.uri, [
            ("Via", f"SIP/2.0/UDP {media_policy.address[0]}:{media_policy.address[1]};branch={new_branch()}"),
            ("From", acked.get("From")), ("To", ok.get("To")), ("Call-ID", acked.call_id), ("CSeq", "1 ACK")])
        media_policy.send(ack, address)
        # never acknowledged: copies of the 200, then TIMEOUT -> Ended and the bridge released
        lost = media_policy.invite(bridge_uri("lost", address), offer)
        media_policy.send(lost, address)
        await until(lambda: _state_is(mrfc, "lost", "Ended"), "the un-ACKed MRF dialog Ended")
        assert await mrfc.get_dialog_history("lost") == ["Start", "Created", "Ended"]
        assert await mrfc.get_dialog_state("acked") == "Created"
        stats = await mrfc.get_stats()
        assert stats["mrf_ack"] == 1 and stats["mrf_ack_timeout"] == 1
        assert stats["mrf_2xx_retransmitted"] >= 6  # T1 doubling to T2 over 64*T1: 1 + many for "lost"
        await until(lambda: _bridge_count_is(mrfp, 1), "the lost bridge released")
        assert list((await mrfp.get_bridges())["bridges"]) == ["acked"]


async def _bridge_count_is(mrfp: Any, n: int) -> bool:
    return (await mrfp.get_stats())["bridges"] == n

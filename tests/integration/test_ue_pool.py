"""The UE pool against the IMS core over real UDP on loopback.

Wiring (every arrow a SIP hop; the S-CSCF modules ask the HSS over the control protocol)::

    UePool -> PCscf -> SessionController -> ScscfIncomingLegControl -> ScscfOutgoingLegControl
                                                                              |
    UePool <- PCscf (terminating) <-------------------------------------------+

The AS is skipped: the S-CSCF Incoming Leg Control hands calls straight to the Outgoing Leg
Control. Both callers and callees are users of the pools under test.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from actors import Runtime
from actors.sip.message import SipMessage
from actors.transport import UdpEndpoint
from nf_modules.hss import Hss
from nf_modules.pcscf import PCscf
from nf_modules.scscf import ScscfIncomingLegControl, ScscfOutgoingLegControl, SessionController
from nf_modules.ue_pool import UePool, UnknownUser

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0
SUBSCRIBERS = 30  # ue0001..ue0030 in the HSS; the pools serve the first 20


@dataclass
class Ims:
    hss: Any
    pcscf: Any
    session_controller: Any
    incoming: Any
    outgoing: Any
    pcscf_address: tuple[str, int]

    async def pool(self, name: str = "ue_pool", **options: Any) -> Any:
        options.setdefault("users", 20)
        pool = UePool.start(name, pcscf=self.pcscf_address, **options).proxy()
        await pool.get_address()  # started and listening
        return pool

    async def registered(self) -> list[str]:
        return (await self.hss.handle_list_registered())["impus"]

    async def bindings(self, user: str) -> list[dict[str, Any]]:
        return (await self.hss.handle_lookup(user))["bindings"]


@asynccontextmanager
async def ims_core(*, nonce_ttl: float = 300.0) -> AsyncIterator[Ims]:
    """HSS, S-CSCF (three modules) and P-CSCF, downstream modules first."""
    async with Runtime.attach():
        hss = Hss.start("hss", config={"users": SUBSCRIBERS}).proxy()
        hss_address = await hss.get_address()
        outgoing = ScscfOutgoingLegControl.start("scscf_olc", hss=hss_address).proxy()
        incoming = ScscfIncomingLegControl.start("scscf_ilc", downstream=await outgoing.get_address()).proxy()
        controller = SessionController.start(
            "scscf_sc", hss=hss_address, downstream=await incoming.get_address(), nonce_ttl=nonce_ttl
        ).proxy()
        pcscf = PCscf.start("pcscf", downstream=await controller.get_address()).proxy()
        yield Ims(hss, pcscf, controller, incoming, outgoing, await pcscf.get_address())


def in_call_requests(stats: dict[str, int]) -> int:
    """Requests a module received other than REGISTER."""
    return stats.get("rx_request", 0) - stats.get("rx_REGISTER", 0)


async def assert_clean_pcscf(ims: Ims, *, morgue: int) -> None:
    """Every call's P-CSCF dialog reached Morgue, through legal transitions only."""
    states = await ims.pcscf.get_dialog_states()
    assert states["Morgue"] == morgue and sum(states.values()) == morgue, states
    assert (await ims.pcscf.get_stats()).get("dialog_transition_errors", 0) == 0


async def assert_no_leftovers(pool: Any) -> None:
    assert await pool.active_calls() == []
    stats = await pool.get_stats()
    assert stats["active_calls"] == 0 and stats["rtp_ports_in_use"] == 0
    assert stats["pending_transactions"] == 0


# ------------------------------------------------------------------------------ registration


async def test_register_all_registers_every_user_in_the_hss() -> None:
    async with ims_core() as ims:
        pool = await ims.pool()
        summary = await pool.register_all(expires=600, concurrency=8)
        assert summary["registered"] == 20 and summary["failed"] == 0, summary
        assert summary["by_status"] == {"200": 20}
        assert await ims.registered() == [f"sip:ue{i:04d}@ims.example" for i in range(1, 21)]
        host, port = await pool.get_address()
        [binding] = await ims.bindings("ue0007")
        assert binding["contact"] == f"sip:ue0007@{host}:{port}"
        assert binding["path"] == [f"<sip:{ims.pcscf_address[0]}:{ims.pcscf_address[1]};lr>"]
        state = await pool.registration_state("ue0007")
        assert state["state"] == "registered" and state["granted"] == 600 and state["registrations"] == 1
        assert state["service_route"], "the 200 carries the S-CSCF's Service-Route"
        assert 470 < state["refresh_in"] <= 480  # 80 % of 600 s
        controller = await ims.session_controller.get_stats()
        assert controller["register_challenged"] == 20 and controller["registered"] == 20
        stats = await pool.get_stats()
        assert stats["register_ok"] == 20 and stats["registered"] == 20 and stats["register_sent"] == 40


async def test_a_wrong_password_is_refused_with_403() -> None:
    async with ims_core() as ims:
        pool = await ims.pool("bad_pool", users=["ue0005"], password="not-the-secret")
        state = await pool.register("ue0005")
        assert state["state"] == "failed" and state["status"] == 403
        assert await ims.registered() == []
        assert (await ims.session_controller.get_stats())["register_forbidden"] == 1
        assert (await pool.get_stats())["register_failed_403"] == 1


async def test_deregister_removes_the_binding_and_calls_get_480() -> None:
    async with ims_core() as ims:
        pool = await ims.pool()
        await pool.register("ue0001")
        await pool.register("ue0002")
        state = await pool.deregister("ue0002")
        assert state["state"] == "unregistered" and state["status"] == 200
        assert state["refresh_in"] is None  # no refresh armed any more
        assert await ims.bindings("ue0002") == []
        assert await ims.registered() == ["sip:ue0001@ims.example"]
        result = await pool.call("ue0001", "ue0002", timeout=WAIT)
        assert result.status == 480 and not result.completed
        assert (await pool.get_stats())["deregister_ok"] == 1


async def test_registration_is_refreshed_before_it_expires() -> None:
    """2 s granted: the refresh goes out at 1.6 s on the pool's clock with the cached nonce
    (nonce count 2, no new challenge), and the HSS sees a refresh of a live binding."""
    async with ims_core() as ims:
        pool = await ims.pool(users=["ue0001"])
        first = await pool.register("ue0001", expires=2)
        assert first["granted"] == 2 and first["registrations"] == 1
        state = await pool.wait_registrations("ue0001", 2, timeout=WAIT)
        assert state["state"] == "registered" and state["refreshes"] == 1
        hss = await ims.hss.get_stats()
        # "reregister", not a second "register": the binding was still live when the refresh came
        assert hss["hss_register"] == 1 and hss["hss_reregister"] >= 1
        assert len(await ims.bindings("ue0001")) == 1
        controller = await ims.session_controller.get_stats()
        assert controller["register_challenged"] == 1  # the refresh answered no new challenge
        await pool.deregister("ue0001")
        assert await ims.bindings("ue0001") == []


async def test_a_stale_nonce_on_refresh_is_answered_once() -> None:
    async with ims_core(nonce_ttl=1.0) as ims:
        pool = await ims.pool(users=["ue0001"])
        await pool.register("ue0001", expires=2)
        state = await pool.wait_registrations("ue0001", 2, timeout=WAIT)  # refresh at 1.6 s > ttl
        assert state["state"] == "registered"
        stats = await pool.get_stats()
        assert stats["register_stale_retry"] == 1 and stats["reregister_ok"] == 1
        assert stats["register_sent"] == 4  # REGISTER, 401, REGISTER; refresh, 401 stale, REGISTER
        await pool.deregister("ue0001")


# -------------------------------------------------------------------------------------- calls


async def test_a_call_between_two_pool_users_completes_through_pcscf_and_scscf() -> None:
    async with ims_core() as ims:
        pool = await ims.pool()
        await pool.register_all()
        before = {name: in_call_requests(await module.get_stats()) for name, module in (
            ("pcscf", ims.pcscf), ("sc", ims.session_controller), ("ilc", ims.incoming), ("olc", ims.outgoing))}
        result = await pool.call("ue0001", "ue0002", hold=0.05, timeout=WAIT)
        assert result.status == 200 and result.bye_status == 200 and result.completed, result.timeline
        assert result.ringing_after is not None and result.answered_after >= result.ringing_after
        assert result.answered_after >= 0.05  # ring 50 ms, then answer
        assert result.ended_by == "caller"
        # INVITE, ACK and BYE crossed every module (the P-CSCF twice: originating, terminating)
        after = {name: in_call_requests(await module.get_stats()) for name, module in (
            ("pcscf", ims.pcscf), ("sc", ims.session_controller), ("ilc", ims.incoming), ("olc", ims.outgoing))}
        assert {k: after[k] - before[k] for k in after} == {"pcscf": 6, "sc": 3, "ilc": 3, "olc": 3}
        await assert_clean_pcscf(ims, morgue=1)
        stats = await pool.get_stats()
        assert stats["calls_placed"] == 1 and stats["calls_completed"] == 1
        assert stats["calls_received"] == 1 and stats["calls_answered_in"] == 1 and stats["bye_received"] == 1
        assert stats.get("stray_ack", 0) == 0 and stats.get("ok_retransmitted", 0) == 0  # the ACK arrived
        await assert_no_leftovers(pool)


async def test_a_call_to_an_unknown_user_is_404() -> None:
    async with ims_core() as ims:
        pool = await ims.pool()
        await pool.register("ue0001")
        for callee in ("nobody", f"ue{SUBSCRIBERS + 1:04d}"):
            result = await pool.call("ue0001", callee, timeout=WAIT)
            assert result.status == 404, (callee, result.timeline)
        stats = await pool.get_stats()
        assert stats["calls_failed_404"] == 2
        await assert_no_leftovers(pool)


async def test_a_call_to_a_known_but_unregistered_user_is_480() -> None:
    async with ims_core() as ims:
        pool = await ims.pool()
        await pool.register("ue0001")
        result = await pool.call("ue0001", "ue0025", timeout=WAIT)  # a subscriber nobody registered
        assert result.status == 480
        assert (await ims.outgoing.get_stats())["not_registered"] == 1
        await assert_no_leftovers(pool)


async def test_cancel_before_answer_ends_the_invite_with_487() -> None:
    async with ims_core() as ims:
        pool = await ims.pool()
        await pool.register_all()
        await pool.set_ring_delay("ue0002", math.inf)  # rings until cancelled
        result = await pool.call("ue0001", "ue0002", cancel_after=0.0, timeout=WAIT)
        assert result.status == 487 and result.cancel_status == 200, result.timeline
        assert result.ringing_after is not None and result.answered_after is None
        stats = await pool.get_stats()
        assert stats["cancels_sent"] == 1 and stats["calls_cancelled_in"] == 1
        assert stats["calls_failed_487"] == 1 and stats.get("calls_answered_in", 0) == 0
        await assert_clean_pcscf(ims, morgue=1)
        await assert_no_leftovers(pool)


async def test_reinvite_and_update_mid_call_are_answered_200() -> None:
    async with ims_core() as ims:
        pool = await ims.pool()
        await pool.register_all()
        sc_invites = (await ims.session_controller.get_stats()).get("rx_INVITE", 0)
        result = await pool.call("ue0001", "ue0002", update_after=0.02, reinvite_after=0.05, hold=0.1, timeout=WAIT)
        assert result.status == 200 and result.completed, result.timeline
        assert result.reinvite_status == 200 and result.update_status == 200
        labels = [label for _, label in result.timeline]
        assert labels == ["INVITE 200", "UPDATE 200", "re-INVITE 200", "BYE 200"]
        stats = await pool.get_stats()
        assert stats["reinvite_received"] == 1 and stats["update_received"] == 1
        # the re-INVITE crossed the S-CSCF too (route set from the Record-Route)
        assert (await ims.session_controller.get_stats())["rx_INVITE"] - sc_invites == 2
        await assert_clean_pcscf(ims, morgue=1)
        await assert_no_leftovers(pool)


@pytest.mark.parametrize(("single_line", "second_status"), [(True, 486), (False, 200)])
async def test_a_user_in_a_call_is_busy_only_with_single_line(single_line: bool, second_status: int) -> None:
    async with ims_core() as ims:
        pool = await ims.pool(single_line=single_line)
        await pool.register_all()
        first = await pool.start_call("ue0001", "ue0003")  # held until hang_up
        assert await pool.wait_answered(first, timeout=WAIT) == "confirmed"
        second = await pool.call("ue0002", "ue0003", timeout=WAIT)
        assert second.status == second_status, second.timeline
        assert await pool.hang_up(first)
        result = await pool.call_result(first, timeout=WAIT)
        assert result.completed and result.ended_by == "caller"
        stats = await pool.get_stats()
        assert stats.get("calls_rejected_486", 0) == (1 if single_line else 0)
        await assert_no_leftovers(pool)


async def test_many_calls_leave_no_dialog_state_behind() -> None:
    async with ims_core() as ims:
        pool = await ims.pool()
        await pool.register_all()
        pairs = [(f"ue{i:04d}", f"ue{i + 10:04d}") for i in range(1, 11)] * 4
        results = await pool.call_many(pairs, concurrency=10, hold=0.0, timeout=WAIT)
        failed = [(r.call_id, r.status, r.bye_status, r.timeline) for r in results if not r.completed]
        assert not failed, failed
        assert len({r.call_id for r in results}) == 40
        stats = await pool.get_stats()
        assert stats["calls_completed"] == 40 and stats["calls_answered_in"] == 40
        await assert_clean_pcscf(ims, morgue=40)
        assert await ims.incoming.get_sessions() == 0
        await assert_no_leftovers(pool)


# ---------------------------------------------------------------------- requests at the pool


class Peer:
    """A raw UDP socket for hand-made requests."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.endpoint: UdpEndpoint | None = None

    async def __aenter__(self) -> Peer:
        self.endpoint = await UdpEndpoint.open(("127.0.0.1", 0), lambda d, a: self.inbox.put_nowait(d))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.endpoint.close()

    def send(self, message: str | SipMessage, to: tuple[str, int]) -> None:
        self.endpoint.send(message.encode() if isinstance(message, str) else bytes(message), to)

    async def receive(self) -> SipMessage:
        return SipMessage.parse(await asyncio.wait_for(self.inbox.get(), WAIT))

    async def ask(self, request: str, to: tuple[str, int]) -> SipMessage:
        self.send(request, to)
        return await self.receive()

    @property
    def address(self) -> tuple[str, int]:
        return self.endpoint.local_address[:2]


def raw_request(method: str, uri: str, port: int, branch: str, *, to_tag: str | None = None) -> str:
    to = "<sip:x@ims.example>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:tester@ims.example>;tag=t1\r\n"
        f"To: {to}\r\nCall-ID: {branch}@test\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )


async def test_requests_are_dispatched_by_request_uri_user() -> None:
    async with Runtime.attach():
        pool = UePool.start("ue_pool", users=3, pcscf=("127.0.0.1", 9)).proxy()
        host, port = await pool.get_address()
        async with Peer() as peer:
            me = peer.endpoint.local_address[1]
            known = await peer.ask(raw_request("OPTIONS", f"sip:ue0002@{host}:{port}", me, "o1"), (host, port))
            assert known.status == 200 and "INVITE" in (known.get("Allow") or "")
            unknown = await peer.ask(raw_request("OPTIONS", f"sip:ue0009@{host}:{port}", me, "o2"), (host, port))
            assert unknown.status == 404
            no_dialog = await peer.ask(raw_request("BYE", f"sip:ue0002@{host}:{port}", me, "b1", to_tag="zz"), (host, port))
            assert no_dialog.status == 481
            no_dialog = await peer.ask(raw_request("UPDATE", f"sip:ue0001@{host}:{port}", me, "u1", to_tag="zz"), (host, port))
            assert no_dialog.status == 481
            refused = await peer.ask(raw_request("SUBSCRIBE", f"sip:ue0001@{host}:{port}", me, "s1"), (host, port))
            assert refused.status == 405 and refused.get("Allow")
        stats = await pool.get_stats()
        assert stats["unknown_user"] == 1 and stats["no_dialog_481"] == 2 and stats.get("hook_errors", 0) == 0


async def test_bad_arguments_get_precise_errors() -> None:
    async with Runtime.attach():
        pool = UePool.start("ue_pool", users=2).proxy()
        await pool.get_address()
        with pytest.raises(UnknownUser, match="ue0099"):
            await pool.register("ue0099")
        with pytest.raises(ValueError, match="expires"):
            await pool.register("ue0001", expires=-1)
        with pytest.raises(RuntimeError, match="no P-CSCF"):
            await pool.call("ue0001", "ue0002")
        await pool.set_pcscf(("127.0.0.1", 9))
        with pytest.raises(ValueError, match="callee"):
            await pool.call("ue0001", "sip:bad uri")
        with pytest.raises(KeyError):
            await pool.call_result("no-such-call")
        with pytest.raises(ValueError, match="users must be >= 0"):
            UePool.start("p", users=-1)
        with pytest.raises(ValueError, match="ring_delay"):
            UePool.start("p", users=1, ring_delay=-0.1)


async def test_in_dialog_requests_follow_the_route_set_with_one_via() -> None:
    """A raw peer plays the P-CSCF: it Record-Routes, answers 200, re-sends the 200 (the pool
    ACKs again) and checks that ACK and BYE carry one Via of the pool's and the Route set."""
    async with Runtime.attach(), Peer() as peer:
        pool = UePool.start("ue_pool", users=1, pcscf=peer.address).proxy()
        await pool.get_address()
        call = await pool.start_call("ue0001", "ue0002")  # held until hang_up
        invite = await peer.receive()
        assert invite.method == "INVITE" and invite.uri == "sip:ue0002@ims.example" and invite.call_id == call
        assert b"m=audio " in invite.body and b"RTP/AVP 0 8" in invite.body
        record_route = f"<sip:{peer.address[0]}:{peer.address[1]};lr>"
        ok = invite.make_response(200, to_tag="callee")
        ok.add("Record-Route", record_route)
        ok.set("Contact", "<sip:ue0002@192.0.2.7:5099>")
        peer.send(ok, invite.top_via and (invite.top_via.host, invite.top_via.port))
        ack = await peer.receive()
        peer.send(ok, (ack.top_via.host, ack.top_via.port))  # a 2xx retransmission
        again = await peer.receive()
        assert await pool.hang_up(call)
        bye = await peer.receive()
        for request in (ack, again, bye):
            assert len(request.get_all("Via")) == 1, request
            assert request.get_all("Route") == [record_route]
            assert request.uri == "sip:ue0002@192.0.2.7:5099"  # the remote target
        assert (ack.method, again.method, bye.method) == ("ACK", "ACK", "BYE")
        assert bytes(again) == bytes(ack)
        assert ack.cseq == (1, "ACK") and bye.cseq == (2, "BYE")
        peer.send(bye.make_response(200), (bye.top_via.host, bye.top_via.port))
        result = await pool.call_result(call, timeout=WAIT)
        assert result.completed and (await pool.get_stats())["ack_resent"] == 1
        await assert_no_leftovers(pool)


async def test_the_answer_is_resent_until_the_ack_comes() -> None:
    from actors.sip.timers import SipTimers

    async with Runtime.attach(), Peer() as peer:
        pool = UePool.start("ue_pool", users=1, pcscf=peer.address, timers=SipTimers(t1=0.02, t2=0.08)).proxy()
        host, port = await pool.get_address()
        invite = SipMessage.parse(raw_request("INVITE", f"sip:ue0001@{host}:{port}", peer.address[1], "inv1").encode())
        invite.set("Contact", f"<sip:caller@127.0.0.1:{peer.address[1]}>")
        peer.send(invite, (host, port))
        ringing, ok, resent = await peer.receive(), await peer.receive(), await peer.receive()
        assert (ringing.status, ok.status, resent.status) == (180, 200, 200)
        assert bytes(resent) == bytes(ok) and ok.get("Content-Type") == "application/sdp"
        assert b"RTP/AVP 0 8" in ok.body and ok.to_tag == ringing.to_tag
        [call] = await pool.active_calls()
        assert call["role"] == "uas" and call["state"] == "answered" and call["user"] == "ue0001"
        ack = raw_request("ACK", f"sip:ue0001@{host}:{port}", peer.address[1], "ack1", to_tag=ok.to_tag)
        peer.send(ack.replace("Call-ID: ack1@test", "Call-ID: inv1@test"), (host, port))
        bye = raw_request("BYE", f"sip:ue0001@{host}:{port}", peer.address[1], "bye1", to_tag=ok.to_tag)
        bye = bye.replace("Call-ID: bye1@test", "Call-ID: inv1@test").replace("CSeq: 1 BYE", "CSeq: 2 BYE")
        peer.send(bye, (host, port))
        while (answer := await peer.receive()).status == 200 and answer.cseq[1] == "INVITE":
            pass  # retransmissions already on the way before the ACK arrived
        assert answer.status == 200 and answer.cseq == (2, "BYE")
        stats = await pool.get_stats()
        assert stats["ok_retransmitted"] >= 1 and stats["bye_received"] == 1
        await assert_no_leftovers(pool)

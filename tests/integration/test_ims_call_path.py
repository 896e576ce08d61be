"""Calls across the whole IMS of the default topology, every hop a UDP socket on loopback.

The UEs here are plain ``UserAgent`` actors whose bindings are put in the HSS
over the control protocol (REGISTER with digest is the UE pool's test), so
these tests look at the INVITE path: P-CSCF -> S-CSCF (3 modules) -> AS
(4 modules, MRF set-up) -> S-CSCF -> P-CSCF -> UE, and back.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from actors import LoopClock, Runtime, load_topology
from actors.control import ControlPeer
from actors.sip.headers import new_branch, new_tag
from actors.sip.message import SipMessage
from actors.transport import UdpEndpoint
from nf_modules.deployment import ImsDeployment, deploy
from nf_modules.ims_module import ALLOW
from nf_modules.user_agent import UserAgent, sdp_offer

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "default.toml"
WAIT = 10.0


class _Owner:
    """A ControlPeer needs an owner object; the test has nothing to serve."""


async def register_directly(ims: ImsDeployment, user: str, contact: tuple[str, int]) -> None:
    peer = await ControlPeer.open(_Owner(), ("127.0.0.1", 0), clock=LoopClock(asyncio.get_running_loop()))
    host, port = ims.addresses["pcscf"]
    try:
        await peer.request(
            ims.addresses["hss"], "register", impu=f"sip:{user}@ims.example",
            contact=f"sip:{user}@{contact[0]}:{contact[1]}", expires=600,
            path=[f"<sip:{host}:{port};lr>"], pcscf=f"sip:{host}:{port}",
        )
    finally:
        peer.close()


@pytest.fixture
async def ims():
    async with Runtime.attach():
        topology = load_topology(TOPOLOGY).without("ue_pool").with_ephemeral_ports()
        deployment = await deploy(topology)
        yield deployment
        await deployment.stop()


async def test_call_crosses_every_module_and_leaves_no_state(ims: ImsDeployment) -> None:
    alice = UserAgent.start("alice", "ue0001").proxy()
    bob = UserAgent.start("bob", "ue0002").proxy()
    await register_directly(ims, "ue0002", await bob.get_address())

    result = await alice.call("ue0002", ims.addresses["pcscf"], timeout=WAIT)

    assert (result.status, result.bye_status) == (200, 200)
    stats = await ims.stats()
    for name in ("scscf_session_controller", "scscf_incoming_leg_control", "as_incoming_leg_control",
                 "as_application_logic", "as_media_policy", "as_outgoing_leg_control",
                 "scscf_outgoing_leg_control"):
        assert stats[name]["rx_INVITE"] == 1 and stats[name]["rx_BYE"] == 1, name
    assert stats["pcscf"]["rx_INVITE"] == 2  # originating and terminating side
    assert stats["pcscf"]["dialogs"]["Morgue"] == 1
    assert sum(stats["pcscf"]["dialogs"].values()) == 1
    mrf = await ims.proxy("mrfc").get_dialog_states()
    assert mrf["Ended"] == 1 and mrf["Connected"] == 0
    assert await ims.proxy("scscf_incoming_leg_control").get_sessions() == 0


async def test_error_answers_for_unknown_and_unregistered_users(ims: ImsDeployment) -> None:
    alice = UserAgent.start("alice", "ue0001").proxy()
    pcscf = ims.addresses["pcscf"]
    assert (await alice.call("ue0003", pcscf, timeout=WAIT)).status == 480  # subscriber, not registered
    assert (await alice.call("nobody", pcscf, timeout=WAIT)).status == 404
    dialogs = await ims.proxy("pcscf").get_dialog_states()
    assert dialogs["Morgue"] == 2


async def test_stock_uac_style_ack_and_bye_without_route_are_routed_by_dialog_state(ims: ImsDeployment) -> None:
    """SIPp's stock uac: R-URI with the P-CSCF's own address, ACK/BYE without Route."""
    bob = UserAgent.start("bob", "ue0002").proxy()
    await register_directly(ims, "ue0002", await bob.get_address())
    host, port = ims.addresses["pcscf"]
    inbox: asyncio.Queue[SipMessage] = asyncio.Queue()
    async with await UdpEndpoint.open(("127.0.0.1", 0), lambda d, a: inbox.put_nowait(SipMessage.parse(d))) as ep:
        me = ep.local_address[1]
        uri = f"sip:ue0002@{host}:{port}"
        common = [
            ("From", f"sipp <sip:sipp@127.0.0.1:{me}>;tag={new_tag()}"),
            ("Call-ID", f"{new_tag()}@sipp"),
            ("Max-Forwards", "70"),
            ("Contact", f"<sip:sipp@127.0.0.1:{me}>"),
        ]
        invite = SipMessage.request("INVITE", uri, [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{me};branch={new_branch()}"), *common,
            ("To", f"<{uri}>"), ("CSeq", "1 INVITE"), ("Content-Type", "application/sdp"),
        ], sdp_offer("127.0.0.1", 6000))
        ep.send(bytes(invite), (host, port))
        statuses = []
        while not statuses or statuses[-1] < 200:
            response = await asyncio.wait_for(inbox.get(), WAIT)
            statuses.append(response.status)
        assert statuses[-1] == 200 and 180 in statuses
        to = response.get("To")
        for method, cseq in (("ACK", "1 ACK"), ("BYE", "2 BYE")):
            request = SipMessage.request(method, uri, [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:{me};branch={new_branch()}"), *common,
                ("To", to), ("CSeq", cseq),
            ])
            ep.send(bytes(request), (host, port))
        bye_answer = await asyncio.wait_for(inbox.get(), WAIT)
    assert bye_answer.cseq == (2, "BYE") and bye_answer.status == 200
    assert (await ims.proxy("pcscf").get_dialog_states())["Morgue"] == 1
    assert await bob.answered_calls == 1


async def test_options_addressed_to_a_module_is_answered_by_it(ims: ImsDeployment) -> None:
    inbox: asyncio.Queue[SipMessage] = asyncio.Queue()
    async with await UdpEndpoint.open(("127.0.0.1", 0), lambda d, a: inbox.put_nowait(SipMessage.parse(d))) as ep:
        me = ep.local_address[1]
        for name in ("pcscf", "as_media_policy"):
            host, port = ims.addresses[name]
            for method, expected in (("OPTIONS", 200), ("MESSAGE", 405)):
                ping = SipMessage.request(method, f"sip:{host}:{port}", [
                    ("Via", f"SIP/2.0/UDP 127.0.0.1:{me};branch={new_branch()}"),
                    ("From", f"<sip:probe@127.0.0.1>;tag={new_tag()}"), ("To", f"<sip:{host}:{port}>"),
                    ("Call-ID", new_tag()), ("CSeq", f"1 {method}"), ("Max-Forwards", "70"),
                ])
                ep.send(bytes(ping), (host, port))
                answer = await asyncio.wait_for(inbox.get(), WAIT)
                assert answer.status == expected, (name, method)
                # 200 lists what the module handles; a 405 what this Request-URI allows (OPTIONS)
                assert ", ".join(answer.get_all("Allow")) == ("OPTIONS" if expected == 405 else ALLOW)

"""Failover through backup links on real sockets (paper ``004`` VI-B, Algorithm 2).

A module of the default topology is crashed (its actor stops, its socket closes); the next
request its upstream neighbour forwards to it is detected as unanswered (Timer A 1 s + fast
retry + Timer B 1 s = 2 s), the neighbour starts a local instance of it, announces it over the
backup link, and replays the request. Calls placed after the crash, and a call that was ringing
through the module when it crashed, complete.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from actors import Runtime, load_topology
from nf_modules.deployment import ImsDeployment, deploy
from nf_modules.user_agent import UserAgent
from tests.integration.test_ims_call_path import register_directly

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "default.toml"
WAIT = 30.0
DETECTION = 2.0  # Timer A + Timer B


@pytest.fixture
async def ims():
    async with Runtime.attach():
        topology = load_topology(TOPOLOGY).without("ue_pool").with_ephemeral_ports()
        deployment = await deploy(topology)
        yield deployment
        await deployment.stop()


async def _users(ims: ImsDeployment, ring_delay: float = 0.05):
    alice = UserAgent.start("alice", "ue0001").proxy()
    bob = UserAgent.start("bob", "ue0002", ring_delay=ring_delay).proxy()
    await register_directly(ims, "ue0002", await bob.get_address())
    return alice, bob


def _by_event(events: list[dict]) -> dict[str, dict]:
    return {e["event"]: e for e in events}


async def _crash_and_call(ims: ImsDeployment, failed: str, detector: str, announced: str) -> None:
    alice, _ = await _users(ims)
    pcscf = ims.addresses["pcscf"]
    assert (await alice.call("ue0002", pcscf, timeout=WAIT)).completed
    await ims.stop_module(failed)

    started = time.monotonic()
    result = await alice.call("ue0002", pcscf, timeout=WAIT)
    assert result.status == 200 and result.bye_status == 200, result.timeline
    took = time.monotonic() - started
    assert DETECTION <= took < DETECTION + 5.0

    events = _by_event(await ims.proxy(detector).get_failover_events())
    assert {"detection_triggered", "hop_failed", "failover_complete"} <= set(events)
    assert events["hop_failed"]["failed"] == failed
    detection = events["hop_failed"]["at"] - events["detection_triggered"]["at"]
    assert DETECTION - 0.01 <= detection <= DETECTION + 1.0
    failover = events["failover_complete"]["at"] - events["hop_failed"]["at"]
    assert 0 <= failover < 1.0
    assert events["failover_complete"]["replayed"] >= 1
    assert events["failover_complete"]["announced"] == {announced: 200}
    # the neighbour on the other side rerouted its link to the replacement
    routes = await ims.proxy(announced).get_routes()
    replacement = events["failover_complete"]["replacement"]
    assert list(routes.values()) == [replacement]

    # new calls go through the replacement without detection delay
    started = time.monotonic()
    again = await alice.call("ue0002", pcscf, timeout=WAIT)
    assert again.completed and time.monotonic() - started < DETECTION  # no second detection
    mrf = await ims.proxy("mrfc").get_dialog_states()
    assert mrf["Connected"] == 0


async def test_session_controller_takes_over_for_a_failed_scscf_incoming_leg_control(ims: ImsDeployment) -> None:
    await _crash_and_call(ims, "scscf_incoming_leg_control", "scscf_session_controller", "as_incoming_leg_control")


async def test_failed_as_incoming_leg_control_is_replaced_by_scscf_incoming_leg_control(ims: ImsDeployment) -> None:
    await _crash_and_call(ims, "as_incoming_leg_control", "scscf_incoming_leg_control", "as_application_logic")


async def test_failed_scscf_outgoing_leg_control_is_replaced_by_as_outgoing_leg_control(ims: ImsDeployment) -> None:
    await _crash_and_call(ims, "scscf_outgoing_leg_control", "as_outgoing_leg_control", "pcscf")


async def test_a_call_ringing_through_the_module_when_it_crashes_completes_through_the_replacement(
    ims: ImsDeployment,
) -> None:
    """The INVITE crossed the S-CSCF Incoming Leg Control before the crash; its 200 OK comes
    after the failover: the AS Incoming Leg Control's link now leads to the replacement, which
    relays the response by its Via to the Session Controller's waiting transaction."""
    alice, bob = await _users(ims, ring_delay=4.0)
    pcscf = ims.addresses["pcscf"]
    ringing = alice.call("ue0002", pcscf, timeout=WAIT)
    deadline = time.monotonic() + WAIT
    while (await bob.get_stats()).get("rx_INVITE", 0) < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await ims.stop_module("scscf_incoming_leg_control")
    trigger = alice.call("ue0002", pcscf, timeout=WAIT)  # the next request detects the failure
    first, second = await ringing, await trigger
    assert first.completed, first.timeline
    assert second.completed, second.timeline
    replacement = await _replacement_stats(ims)
    assert replacement.get("alias_relayed", 0) >= 1


async def _replacement_stats(ims: ImsDeployment) -> dict:
    from pykka import ActorRegistry

    for ref in ActorRegistry.get_all():
        actor = ref._actor_weakref()  # noqa: SLF001
        if actor is not None and getattr(actor, "name", "").startswith("scscf_incoming_leg_control.local@"):
            return await ref.proxy().get_stats()
    raise AssertionError("no replacement running")


async def test_failed_mrfc_is_replaced_by_the_media_policy(ims: ImsDeployment) -> None:
    """The AS Media Policy detects the MRFC's failure on its SIP leg to the MRFC and starts a
    local MRFC (same MRFP); the call being set up gets its MRF dialog there."""
    alice, _ = await _users(ims)
    pcscf = ims.addresses["pcscf"]
    assert (await alice.call("ue0002", pcscf, timeout=WAIT)).completed
    await ims.stop_module("mrfc")
    result = await alice.call("ue0002", pcscf, timeout=WAIT)
    assert result.completed, result.timeline
    events = _by_event(await ims.proxy("as_media_policy").get_failover_events())
    assert events["hop_failed"]["failed"] == "mrfc"
    assert DETECTION - 0.01 <= events["hop_failed"]["at"] - events["detection_triggered"]["at"] <= DETECTION + 1.0
    assert events["failover_complete"]["at"] - events["hop_failed"]["at"] < 1.0
    assert (await alice.call("ue0002", pcscf, timeout=WAIT)).completed


async def test_announcements_are_checked_and_a_restarted_module_serves_again(ims: ImsDeployment) -> None:
    """A malformed failover NOTIFY gets 400 and changes nothing; a good one reroutes the link."""
    from actors.sip.message import SipMessage
    from actors.transport import UdpEndpoint
    from nf_modules.failover import Announcement, build_announcement

    ailc = ims.addresses["as_incoming_leg_control"]
    answers: asyncio.Queue = asyncio.Queue()
    async with await UdpEndpoint.open(("127.0.0.1", 0), lambda d, a: answers.put_nowait(SipMessage.parse(d))) as ep:
        me = ep.local_address[:2]
        bad = build_announcement(me, ailc, Announcement(("127.0.0.1", 1), ("127.0.0.1", 2)))
        bad.body = b"failed=nowhere\r\n"
        ep.send(bytes(bad), ailc)
        assert (await asyncio.wait_for(answers.get(), WAIT)).status == 400
        assert await ims.proxy("as_incoming_leg_control").get_routes() == {}
        good = build_announcement(me, ailc, Announcement(("127.0.0.1", 1), ("127.0.0.1", 2), "x"))
        ep.send(bytes(good), ailc)
        assert (await asyncio.wait_for(answers.get(), WAIT)).status == 200
        assert await ims.proxy("as_incoming_leg_control").get_routes() == {"127.0.0.1:1": ["127.0.0.1", 2]}
    events = [e["event"] for e in await ims.proxy("as_incoming_leg_control").get_failover_events()]
    assert events == ["failover_announced"]

    alice, _ = await _users(ims)
    await ims.stop_module("as_application_logic")
    await ims.restart_module("as_application_logic")
    assert (await alice.call("ue0002", ims.addresses["pcscf"], timeout=WAIT)).completed


async def test_the_bye_of_an_established_call_detects_the_failure_and_clears_the_mrf_dialog(
    ims: ImsDeployment,
) -> None:
    """The contrast with the baseline: the caller's BYE is the first request to the dead module;
    it is replayed through the replacement, so the MRF dialog ends instead of hanging."""
    alice, bob = await _users(ims)
    pcscf = ims.addresses["pcscf"]
    held = alice.call("ue0002", pcscf, hold=1.5, timeout=WAIT)
    deadline = time.monotonic() + WAIT
    while (await ims.proxy("pcscf").get_dialog_states())["Established"] < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await ims.stop_module("scscf_incoming_leg_control")
    result = await held
    assert result.status == 200 and result.bye_status == 200, result.timeline
    assert (await ims.proxy("mrfc").get_dialog_states())["Connected"] == 0
    assert len(await bob.dialogs) == 0
    events = _by_event(await ims.proxy("scscf_session_controller").get_failover_events())
    assert events["failover_complete"]["replayed"] == 1
    # Only the dead module is declared failed: the P-CSCF's BYE to the live Session Controller
    # (its Timer A started first) was answered 100 Trying when the SC's own detector entered
    # fast retry, so the P-CSCF declared nothing and started no replacement.
    failed = [(e["module"], e["failed"]) for e in await ims.failover_events() if e["event"] == "hop_failed"]
    assert failed == [("scscf_session_controller", "scscf_incoming_leg_control")]
    assert (await ims.proxy("scscf_session_controller").get_stats())["tx_alive_trying"] == 1
    assert await ims.proxy("pcscf").get_routes() == {}

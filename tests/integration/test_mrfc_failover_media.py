"""A failed MRFC Media Control (paper ``004`` VI-B; issue 5 item 2): media keeps flowing with the
last instruction while it is replaced, and the replacement MRFC keeps the earlier calls working.

Real sockets, default topology, refactored mode: a call with media up, the MRFC actor crashes
(its sockets close). The MRFP's engine keeps forwarding (the callee keeps receiving); Media
Update's instruction fetches fail and it keeps the current instructions. The next SIP the AS
Media Policy sends to the MRFC (a new call's INVITE) detects the failure and the Media Policy
starts a local MRFC; the old call's BYE, rerouted to it, names the bridge in its Request-URI, so
the replacement releases that bridge on the MRFP and answers 200."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from pykka import ActorRegistry

from actors import Runtime, load_topology
from actors.transport import UdpEndpoint
from nf_modules.deployment import ImsDeployment, deploy
from nf_modules.mrfc import Mrfc, bridge_uri
from nf_modules.mrfp import MrfpSignalling
from nf_modules.user_agent import UserAgent, sdp_offer
from tests.integration.test_ims_call_path import register_directly
from tests.integration.test_media_control_loop import RawAs
from tests.integration.test_media_processor import Ue, free_port_range

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "default.toml"
WAIT = 30.0


async def _until(predicate, timeout: float = WAIT, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not met in {timeout} s"
        await asyncio.sleep(0.05)


async def _received(bob) -> int:
    return sum(leg["packets_received"] for leg in (await bob.get_live_media()).values())


def _replacement() -> Any:
    for ref in ActorRegistry.get_all():
        actor = ref._actor_weakref()  # noqa: SLF001
        if actor is not None and getattr(actor, "name", "").startswith("mrfc.local@"):
            return ref.proxy()
    raise AssertionError("no replacement MRFC running")


async def test_media_flows_through_an_mrfc_outage_and_the_replacement_releases_the_old_bridge() -> None:
    async with Runtime.attach():
        ims: ImsDeployment = await deploy(load_topology(TOPOLOGY).without("ue_pool").with_ephemeral_ports())
        alice = UserAgent.start("alice", "ue0001", media=True, seed=1).proxy()
        bob = UserAgent.start("bob", "ue0002", media=True, seed=2).proxy()
        carol = UserAgent.start("carol", "ue0003").proxy()
        mrfp, policy = ims.proxy("mrfp"), ims.proxy("as_media_policy")
        try:
            await register_directly(ims, "ue0002", await bob.get_address())
            held = alice.call("ue0002", ims.addresses["pcscf"], hold=8.0, timeout=WAIT)

            async def media_up() -> bool:
                return await _received(bob) >= 25

            await _until(media_up, what="media at the callee")
            (bridge_id,) = (await mrfp.get_bridges())["bridges"]

            await ims.stop_module("mrfc")
            at_crash = await _received(bob)

            async def still_flowing() -> bool:  # 40 packets: 0.8 s of media with no MRFC at all
                return await _received(bob) >= at_crash + 40

            await _until(still_flowing, timeout=10.0, what="media flowing during the MRFC outage")
            assert await policy.get_failover_events() == []  # nothing noticed yet: no SIP went there

            # The next SIP towards the MRFC detects the failure; the Media Policy replaces it.
            second = await carol.call("ue0002", ims.addresses["pcscf"], timeout=WAIT)
            assert second.completed, second.timeline
            events = {e["event"]: e for e in await policy.get_failover_events()}
            assert events["hop_failed"]["failed"] == "mrfc" and "failover_complete" in events

            first = await held
            assert first.completed, first.timeline
            assert first.media is not None and first.media.packets_received >= 300  # ~8 s at 50/s, both ways
            stats = await _replacement().get_stats()
            assert stats["mrf_adopted_bye"] == 1  # the old call's BYE, by its bridge URI
            bridges = (await mrfp.get_bridges())["bridges"]
            assert bridge_id not in bridges and bridges == {}
            assert (await mrfp.get_dialog_states())["Ended"] == 2
            # Media Update could not reach the dead Media Control and kept the flows' instructions
            assert (await mrfp.get_media_update_stats()).get("update_fetch_failures", 0) >= 1
        finally:
            for ua in (alice, bob, carol):
                ua.stop()
            await ims.stop()


async def test_a_replacement_mrfc_updates_and_releases_a_bridge_it_did_not_set_up() -> None:
    """The replacement's side of it on its own: an UPDATE of the old MRFC's dialog re-points the
    bridge's side, its BYE releases the bridge (200 each); a BYE naming no live bridge: 481."""
    async with Runtime.attach():
        mrfp = MrfpSignalling.start("mrfp", port_range=free_port_range(20)).proxy()
        old = Mrfc.start("mrfc", mrfp=await mrfp.get_address()).proxy()
        endpoint = await UdpEndpoint.open(("127.0.0.1", 0), None)
        ue_a, ue_b, ue_b2 = await Ue.open(), await Ue.open(), await Ue.open()
        try:
            old_address = tuple(await old.get_address())
            await RawAs(endpoint, old_address, "").bridge("c1", ue_a, ue_b)
            uri = bridge_uri("c1", old_address)  # the old MRFC's 2xx Contact: what the AS sends to
            await old.stop()
            new = Mrfc.start("mrfc.local@as", mrfp=await mrfp.get_address()).proxy()
            raw = RawAs(endpoint, tuple(await new.get_address()), "")
            dialog = [("From", "<sip:as@127.0.0.1>;tag=as-c1"), ("To", f"<{uri}>;tag=mrf-old")]

            moved = await raw._ask("UPDATE", uri, "mrf-c1", 3, [*dialog, ("Mrf-Event", "update;side=B")],
                                   sdp_offer(*ue_b2.address))
            assert moved.status == 200
            remotes = (await mrfp.get_bridges())["bridges"]["c1"]["remotes"]
            assert tuple(remotes["B"]) == tuple(ue_b2.address) and tuple(remotes["A"]) == tuple(ue_a.address)

            assert (await raw._ask("BYE", uri, "mrf-c1", 4, dialog)).status == 200
            assert (await mrfp.get_bridges())["bridges"] == {}
            assert (await raw._ask("BYE", uri, "mrf-c1", 5, dialog)).status == 481
            stats = await new.get_stats()
            assert (stats["mrf_adopted_update"], stats["mrf_adopted_bye"]) == (1, 2)
            await new.stop()
        finally:
            for ue in (ue_a, ue_b, ue_b2):
                ue.close()
            endpoint.close()
            await mrfp.stop()

"""The PGW in the media path and the MRF's usage reports (paper ``004`` VIII-C, Fig. 12), on real
sockets with the charging topology: the P-CSCF (AF) has the PCRF open a PGW bearer for each UE's
media and points the UE's SDP at it, so the MRFP sends each UE's downlink to the PGW, which
relays it (C media engine) and charges it; the MRFP reports what it sent per subscriber.

The paper's fault: S-CSCF Incoming Leg Control crashes during an established media call. In
baseline mode the P-CSCF's 600/BYE path releases the session: the PCRF has the PGW release the
bearers, the MRF dialog hangs (Connected) and the MRFP keeps forwarding the callee's media, which
the PGW drops: the PCRF sees a positive discrepancy. In refactored mode the same fault is
failed over, the call ends with its BYE, and the discrepancy is 0."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

from actors import Runtime, load_topology
from nf_modules.deployment import ImsDeployment, deploy
from nf_modules.user_agent import UserAgent
from tests.integration.test_ims_call_path import register_directly

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "charging.toml"
WAIT = 40.0
PACKET = 172  # bytes: the smallest G.711 20 ms RTP packet (the UEs add a send-time header extension)


async def _deploy(mode: str) -> ImsDeployment:
    topology = dataclasses.replace(load_topology(TOPOLOGY).without("ue_pool").with_ephemeral_ports(), mode=mode)
    fast_baseline = {"baseline_retries": 2, "baseline_retry_interval": 0.5}
    return await deploy(topology, overrides={"pcscf": fast_baseline} if mode == "baseline" else None)


async def _until(predicate, timeout: float = WAIT, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not met in {timeout} s"
        await asyncio.sleep(0.05)


async def _users(ims: ImsDeployment):
    alice = UserAgent.start("alice", "ue0001", media=True, seed=1).proxy()
    bob = UserAgent.start("bob", "ue0002", media=True, seed=2).proxy()
    carol = UserAgent.start("carol", "ue0003").proxy()
    await register_directly(ims, "ue0002", await bob.get_address())
    return alice, bob, carol


async def _media_through_pgw(ims: ImsDeployment, packets: int) -> None:
    pgw = ims.proxy("pgw")

    async def flowing() -> bool:
        charging = await pgw.get_charging()
        return all(charging.get(u, {}).get("charged_packets", 0) >= packets for u in ("ue0001", "ue0002"))

    await _until(flowing, what="downlink media through the PGW both ways")


async def test_baseline_failure_leaves_mrf_forwarding_what_the_pgw_drops() -> None:
    async with Runtime.attach():
        ims = await _deploy("baseline")
        alice, bob, carol = await _users(ims)
        pgw, pcrf, mrfp = ims.proxy("pgw"), ims.proxy("pcrf"), ims.proxy("mrfp")
        try:
            alice.call("ue0002", ims.addresses["pcscf"], hold=60.0, timeout=WAIT)
            await _media_through_pgw(ims, 25)
            # every UE's downlink crossed the PGW: the UEs received what the PGW relayed
            live = await bob.get_live_media()
            assert sum(leg["packets_received"] for leg in live.values()) >= 25

            await ims.stop_module("scscf_incoming_leg_control")
            assert (await carol.call("ue0002", ims.addresses["pcscf"], timeout=WAIT)).status == 600

            async def released() -> bool:
                charging = await pgw.get_charging()
                return not charging["ue0001"]["active"] and charging["ue0001"]["dropped_packets"] >= 50

            await _until(released, what="the caller's bearer released and the MRF's downlink dropped")
            assert (await ims.proxy("mrfc").get_dialog_states())["Connected"] == 1  # the hanging dialog

            async def discrepancy() -> dict | None:
                charging = await pcrf.get_charging()
                return charging if charging["discrepancy_by_subscriber"].get("ue0001", 0) >= 50 * PACKET else None

            charging = await _until(discrepancy, what="the PCRF's discrepancy")
            usage = charging["usage"]["ue0001"]
            assert usage["mrf"]["bytes"] > usage["pgw"]["bytes"] > 0
            assert usage["pgw"]["dropped_bytes"] > 0
            assert charging["discrepancy_bytes"] >= charging["discrepancy_by_subscriber"]["ue0001"]
            print(f"\nbaseline discrepancy: {charging['discrepancy_bytes']} bytes "
                  f"(ue0001: MRF {usage['mrf']['bytes']}, PGW charged {usage['pgw']['bytes']}, "
                  f"dropped {usage['pgw']['dropped_bytes']}); MRFP counts {await mrfp.get_usage()}")
        finally:
            for ua in (alice, bob, carol):
                ua.stop()
            await ims.stop()


async def test_refactored_failover_leaves_no_discrepancy() -> None:
    async with Runtime.attach():
        ims = await _deploy("refactored")
        alice, bob, carol = await _users(ims)
        pgw, pcrf, mrfp = ims.proxy("pgw"), ims.proxy("pcrf"), ims.proxy("mrfp")
        try:
            held = alice.call("ue0002", ims.addresses["pcscf"], hold=5.0, timeout=WAIT)
            await _media_through_pgw(ims, 25)
            await ims.stop_module("scscf_incoming_leg_control")
            assert (await carol.call("ue0002", ims.addresses["pcscf"], timeout=WAIT)).completed
            result = await held
            assert result.completed, result.timeline
            assert result.media is not None and result.media.packets_received >= 100

            async def settled() -> dict | None:
                """Both taps done (bridges released, bearers released) and the PCRF told."""
                if (await mrfp.get_bridges())["bridges"]:
                    return None
                charging, taps, mrf = await pcrf.get_charging(), await pgw.get_charging(), await mrfp.get_usage()
                if any(t["active"] for t in taps.values()):
                    return None
                for user in ("ue0001", "ue0002", "ue0003"):
                    usage = charging["usage"].get(user, {})
                    if usage.get("mrf", {}).get("bytes") != mrf.get(user) or \
                            usage.get("pgw", {}).get("bytes") != taps.get(user, {}).get("charged_bytes"):
                        return None
                return charging

            charging = await _until(settled, what="the final usage reports")
            assert charging["usage"]["ue0001"]["mrf"]["bytes"] >= 100 * PACKET
            assert charging["discrepancy_by_subscriber"] == {"ue0001": 0, "ue0002": 0, "ue0003": 0}
            assert charging["discrepancy_bytes"] == 0
            assert (await ims.proxy("mrfc").get_dialog_states())["Connected"] == 0
        finally:
            for ua in (alice, bob, carol):
                ua.stop()
            await ims.stop()

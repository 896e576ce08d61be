"""The baseline's failure on real sockets (paper ``004`` V-B, Fig. 4-6): the S-CSCF Incoming Leg
Control crashes; without supervisors the P-CSCF retries a new call's INVITE 5 times a second
apart, answers 600 Busy Everywhere, and clears the established call as a UA (BYE to the caller
and towards the S-CSCF); that BYE is lost at the failed module, so the callee keeps its dialog
and the MRF dialog stays Connected: a hanging dialog."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from actors import Runtime, load_topology
from nf_modules.deployment import ImsDeployment, deploy
from nf_modules.user_agent import UserAgent
from tests.integration.test_ims_call_path import register_directly

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "default.toml"
WAIT = 30.0


@pytest.fixture
async def ims():
    async with Runtime.attach():
        topology = load_topology(TOPOLOGY).without("ue_pool").with_ephemeral_ports()
        deployment = await deploy(dataclasses.replace(topology, mode="baseline"))
        yield deployment
        await deployment.stop()


async def _until(predicate, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_pcscf_retries_five_times_answers_600_and_leaves_the_mrf_dialog_hanging(ims: ImsDeployment) -> None:
    alice = UserAgent.start("alice", "ue0001").proxy()
    carol = UserAgent.start("carol", "ue0003").proxy()
    bob = UserAgent.start("bob", "ue0002").proxy()
    await register_directly(ims, "ue0002", await bob.get_address())
    pcscf = ims.addresses["pcscf"]
    mrfc = ims.proxy("mrfc")

    held = alice.call("ue0002", pcscf, hold=60.0, timeout=WAIT)  # established, then held
    await _until(lambda: _established(ims))
    assert (await mrfc.get_dialog_states())["Connected"] == 1

    await ims.stop_module("scscf_incoming_leg_control")
    started = time.monotonic()
    result = await carol.call("ue0002", pcscf, timeout=WAIT)
    took = time.monotonic() - started
    assert result.status == 600
    assert 5.5 <= took <= 12.0  # 5 retries a second apart, then the declaration

    stats = await ims.proxy("pcscf").get_stats()
    assert stats["baseline_retries"] == 5 and stats["busy_everywhere"] == 1
    assert stats["release_bye"] == 2  # to the caller and towards the S-CSCF
    await _until(lambda: _caller_got_bye(alice))
    events = [e["event"] for e in await ims.proxy("pcscf").get_failover_events()]
    assert events.count("baseline_retry") == 5 and "busy_everywhere" in events
    assert "hop_failed" not in events  # no supervisors in the baseline

    dialogs = (await ims.proxy("pcscf").get_stats())["dialogs"]
    assert dialogs["Mortal"] + dialogs["Morgue"] == 2 and dialogs["Established"] == 0
    # the BYE died at the failed module: the callee and the MRF keep the call
    assert (await mrfc.get_dialog_states())["Connected"] == 1
    assert len(await bob.dialogs) == 1
    assert not held.done()  # the caller's own hang-up is still ahead: nothing ended the held call but the P-CSCF


async def _established(ims: ImsDeployment) -> bool:
    return (await ims.proxy("pcscf").get_dialog_states())["Established"] == 1


async def _caller_got_bye(alice) -> bool:
    return (await alice.get_stats()).get("rx_BYE", 0) == 1

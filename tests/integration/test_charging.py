"""The charging taps on real sockets, without the IMS around them: the PCRF has the PGW open a
bearer (as the P-CSCF asks it at call set-up), the PGW's C media engine relays the downlink that
arrives there to the UE and charges it; after ``session_ended`` the PCRF has the PGW release the
call's bearers, and what still arrives is dropped by the engine, counted, never charged. With the
MRF's usage report, the PCRF's discrepancy is exactly the dropped bytes.

The downlink is sent by the test from one UDP socket standing in for the MRFP's bridge port;
``test_charging_path.py`` runs the same through the whole IMS."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest

from actors import Runtime
from actors.control import ControlError, ControlPeer
from actors.clock import LoopClock
from actors.transport import UdpEndpoint
from nf_modules.pcrf import Pcrf
from nf_modules.pgw import Pgw

WAIT = 20.0


def _rtp(seq: int, payload: int = 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + bytes(payload)


class _Owner:
    name = "test"


async def _until(predicate, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _send(sender: UdpEndpoint, bearer: tuple, first: int, n: int) -> None:
    for seq in range(first, first + n):
        sender.send(_rtp(seq), bearer)
        await asyncio.sleep(0.002)


@pytest.fixture
async def taps():
    async with Runtime.attach():
        pcrf_ref = Pcrf.start("pcrf")
        pcrf_address = tuple(await pcrf_ref.proxy().get_address())
        pgw_ref = Pgw.start("pgw", pcrf=pcrf_address, report_interval=0.2, idle_close=0.6)
        await pcrf_ref.proxy().set_pgw(tuple(await pgw_ref.proxy().get_address()))
        peer = await ControlPeer.open(_Owner(), ("127.0.0.1", 0), clock=LoopClock(asyncio.get_running_loop()))
        yield pcrf_ref.proxy(), pgw_ref.proxy(), peer, pcrf_address
        peer.close()
        pgw_ref.stop(block=False)
        pcrf_ref.stop(block=False)


async def test_pgw_relays_and_charges_then_drops_after_the_session_ended(taps) -> None:
    pcrf, pgw, peer, pcrf_address = taps
    size = len(_rtp(0))
    received: list[bytes] = []
    async with await UdpEndpoint.open(("127.0.0.1", 0), lambda d, a: received.append(d)) as ue_media, \
            await UdpEndpoint.open(("127.0.0.1", 0), lambda d, a: None) as mrf_side:
        ue = ue_media.local_address[:2]
        bearer = await peer.request(pcrf_address, "authorize_media", subscriber="ue0001",
                                    ue_host=ue[0], ue_port=ue[1], call_id="call-1")
        again = await peer.request(pcrf_address, "authorize_media", subscriber="ue0001",
                                   ue_host=ue[0], ue_port=ue[1], call_id="call-1")
        assert again == bearer  # the same bearer for the same stream (a retransmitted INVITE)
        bearer = (bearer["host"], bearer["port"])

        await _send(mrf_side, bearer, 0, 20)
        await _until(lambda: _is(len(received) == 20))
        assert received[3] == _rtp(3)  # relayed unchanged

        assert (await peer.request(pcrf_address, "session_ended", subscriber="ue0001", call_id="call-1"))["released"]
        await _send(mrf_side, bearer, 20, 30)  # the MRF, still Connected, keeps forwarding
        await _until(lambda: _dropped(pgw, 30))
        assert len(received) == 20

    charging = (await pgw.get_charging())["ue0001"]
    assert charging == {"charged_bytes": 20 * size, "charged_packets": 20, "dropped_bytes": 30 * size,
                        "dropped_packets": 30, "active": False, "bearers": 1}
    await peer.request(pcrf_address, "usage_report", source="mrf", subscriber="ue0001", bytes=50 * size)
    await _until(lambda: _reported(pcrf, 30 * size))
    totals = await pcrf.get_charging()
    assert totals["usage"]["ue0001"]["pgw"]["bytes"] == 20 * size
    assert totals["discrepancy_by_subscriber"] == {"ue0001": 30 * size}
    assert totals["discrepancy_bytes"] == 30 * size
    # a late, older cumulative report never lowers a total
    await peer.request(pcrf_address, "usage_report", source="mrf", subscriber="ue0001", bytes=10 * size)
    assert (await pcrf.get_charging())["usage"]["ue0001"]["mrf"]["bytes"] == 50 * size

    # nothing more arrives: the released bearer is closed after idle_close, its counts kept
    await _until(lambda: _closed(pgw))
    assert (await pgw.get_charging())["ue0001"] == {**charging, "bearers": 0}


async def test_bad_bearer_requests_are_refused(taps) -> None:
    _, pgw, peer, pcrf_address = taps
    pgw_address = tuple(await pgw.get_address())
    for args in ({"subscriber": "", "ue_host": "127.0.0.1", "ue_port": 4000},
                 {"subscriber": "ue1", "ue_host": "not-an-ip", "ue_port": 4000},
                 {"subscriber": "ue1", "ue_host": "127.0.0.1", "ue_port": 70000}):
        with pytest.raises(ControlError) as refused:
            await peer.request(pgw_address, "open_bearer", **args)
        assert refused.value.code == "bad_args"
    with pytest.raises(ControlError):
        await peer.request(pcrf_address, "usage_report", source="mrf", subscriber="ue1", bytes=-1)
    assert await pgw.get_charging() == {}


async def _is(value: bool) -> bool:
    return value


async def _closed(pgw) -> bool:
    return (await pgw.get_stats()).get("bearers_closed", 0) == 1


async def _dropped(pgw, n: int) -> bool:
    return (await pgw.get_charging())["ue0001"]["dropped_packets"] == n


async def _reported(pcrf, dropped: int) -> bool:
    usage = (await pcrf.get_charging())["usage"].get("ue0001", {}).get("pgw", {})
    return usage.get("dropped_bytes") == dropped

"""UE media over real UDP on loopback, no IMS: two UEs calling each other directly, a UE pool
calling itself, and a UE calling a scripted peer whose RTP/RTCP the test reads with aiortc's
parsers (the reference for our wire format).

Strict: on loopback with no impairment every packet a UE sends must arrive (no sequence gaps),
the tone must come out of the callee's WAV file, the receiver reports must travel both ways.
"""

from __future__ import annotations

import asyncio
import math
import random
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from aiortc.rtp import RtcpPacket, RtcpRrPacket, RtpPacket, unpack_header_extensions

from actors import Runtime
from actors.clock import LoopClock
from actors.sip.message import SipMessage
from actors.transport import UdpEndpoint
from nf_modules.mediacore import build_rtp, ulaw_to_lin16
from nf_modules.ue_media import MediaConfig, UeMedia, peer_media_address, tone_ulaw
from nf_modules.ue_pool import UePool
from nf_modules.user_agent import UserAgent, sdp_offer
from nf_modules.wav import pcm16_samples, write_ulaw
from tests.unit.test_ue_media_tone import dominant_frequency

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0
HOLD = 1.5  # seconds of talk: about 75 packets each way


def assert_clean_media(sent: Any, received: Any, hold: float) -> None:
    """``received``'s leg got what ``sent``'s leg sent (tail packets may cross the BYE)."""
    assert 0.6 * hold * 50 <= sent.packets_sent <= 1.5 * hold * 50 + 5, sent
    assert sent.packets_sent - 3 <= received.packets_received <= sent.packets_sent, (sent, received)
    assert received.lost == 0 and received.loss == 0.0, received
    assert received.bytes_received == received.packets_received * (12 + 16 + 160)  # header, stamp, payload
    latency = received.latency_ms
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"], latency
    assert latency["p99"] < 100, latency  # loopback on a busy 2-core machine: still far below this
    buckets = received.latency_histogram  # the engine's histogram of the leg, for exact merging
    assert sum(n for _, _, n in buckets) == received.packets_received, buckets
    assert buckets[-1][0] <= latency["max"] <= buckets[-1][1], (buckets, latency)
    assert 0 <= received.jitter_ms < 20, received


@pytest.mark.parametrize("native", [True, False], ids=["C-engine", "pure-engine"])
async def test_two_ues_send_each_other_tones_and_reports(tmp_path: Path, native: bool) -> None:
    async with Runtime.attach():
        alice = UserAgent.start("alice", "ue0001", media=MediaConfig(
            tone_hz=440, rtcp_interval=0.3, record_dir=str(tmp_path), record_calls_out=True, native=native), seed=1).proxy()
        bob = UserAgent.start("bob", "ue0002", media=MediaConfig(
            tone_hz=1000, rtcp_interval=0.3, record_dir=str(tmp_path), native=native), seed=2).proxy()

        result = await alice.call("ue0002", await bob.get_address(), hold=HOLD, timeout=WAIT)

        assert (result.status, result.bye_status) == (200, 200)
        mine = result.media
        [theirs] = await bob.get_media_results()
        assert (mine.role, theirs.role) == ("uac", "uas") and mine.call_id == theirs.call_id
        assert_clean_media(mine, theirs, HOLD)
        assert_clean_media(theirs, mine, HOLD)
        # receiver reports every ~0.3 s and one at the BYE, each way; no loss reported
        assert mine.rr_sent >= 2 and theirs.rr_sent >= 2
        assert mine.rr_received >= 1 and theirs.rr_received >= 1
        assert mine.peer_fraction_lost == 0.0 and theirs.peer_fraction_lost == 0.0
        # each side's WAV holds the other side's tone
        rate, heard_by_bob = pcm16_samples(theirs.wav_path)
        assert rate == 8000 and len(heard_by_bob) == theirs.packets_received * 160
        assert dominant_frequency(heard_by_bob, rate) == pytest.approx(440, abs=5)
        _, heard_by_alice = pcm16_samples(mine.wav_path)
        assert dominant_frequency(heard_by_alice, rate) == pytest.approx(1000, abs=5)
        stats = await alice.get_media_stats()
        assert stats["legs"] == 1 and stats["active_legs"] == 0
        assert stats["packets_received"] == mine.packets_received and stats["loss"] == 0.0


async def test_sip_only_ues_offer_no_media() -> None:
    async with Runtime.attach():
        alice = UserAgent.start("alice", "ue0001").proxy()
        bob = UserAgent.start("bob", "ue0002").proxy()
        result = await alice.call("ue0002", await bob.get_address(), timeout=WAIT)
        assert result.completed and result.media is None
        assert await alice.get_media_stats() == {} and await bob.get_media_results() == []


async def test_pool_calls_itself_with_media_both_ways(tmp_path: Path) -> None:
    """Both legs in one pool, the audio from a WAV file (700 Hz), the callee recording it."""
    source = tmp_path / "source.wav"
    write_ulaw(source, tone_ulaw(700))
    async with Runtime.attach():
        media = {"rtcp_interval": 0.3, "wav": str(source), "record_dir": str(tmp_path)}
        pool = UePool.start("pool", users=2, media=media, seed=3).proxy()
        await pool.set_pcscf(await pool.get_address())  # no IMS: the pool is its own next hop

        result = await pool.call("ue0001", "ue0002", hold=1.0, timeout=WAIT)

        assert result.completed
        legs = {r.role: r for r in await pool.get_media_results()}
        assert set(legs) == {"uac", "uas"} and result.media == legs["uac"]
        assert_clean_media(legs["uac"], legs["uas"], 1.0)
        assert_clean_media(legs["uas"], legs["uac"], 1.0)
        stats = await pool.get_media_stats()
        assert stats["legs"] == 2 and stats["active_legs"] == 0 and stats["lost"] == 0
        assert stats["packets_received"] == legs["uac"].packets_received + legs["uas"].packets_received
        assert stats["rr_received"] >= 2
        assert (await pool.get_stats())["active_calls"] == 0
        assert legs["uac"].wav_path is None  # record_calls_out is off
        rate, heard = pcm16_samples(legs["uas"].wav_path)
        assert dominant_frequency(heard, rate) == pytest.approx(700, abs=5)


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    for _ in range(64):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        port = rtp.getsockname()[1]
        if port % 2 == 0:
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind(("127.0.0.1", port + 1))
                return rtp, rtcp
            except OSError:
                rtcp.close()
        rtp.close()
    raise OSError("no port pair")


async def _recv(sock: socket.socket, timeout: float = WAIT) -> bytes:
    return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 2048), timeout)


async def test_wire_format_read_by_aiortc_and_rr_reports_our_gap() -> None:
    """A UE calls a scripted peer: its RTP parses with aiortc's ``RtpPacket`` (G.711, 20 ms, the
    send-time stamp), and its RR (parsed with ``RtcpPacket``) reports the gap we left in the RTP
    we sent it."""
    async with Runtime.attach():
        alice = UserAgent.start("alice", "ue0001", media={"rtcp_interval": 0.2}, seed=4).proxy()
        rtp, rtcp = _bind_pair()
        rtp.setblocking(False)
        rtcp.setblocking(False)
        inbox: asyncio.Queue[SipMessage] = asyncio.Queue()
        async with await UdpEndpoint.open(("127.0.0.1", 0), lambda d, a: inbox.put_nowait(SipMessage.parse(d))) as ep:
            peer = ep.local_address[:2]
            call = asyncio.ensure_future(alice.call("peer", peer, hold=1.0, timeout=WAIT))
            invite = await asyncio.wait_for(inbox.get(), WAIT)
            assert invite.method == "INVITE"
            ok = invite.make_response(200, to_tag="scripted")
            ok.set("Contact", f"<sip:peer@{peer[0]}:{peer[1]}>")
            ok.set("Content-Type", "application/sdp")
            ok.body = sdp_offer("127.0.0.1", rtp.getsockname()[1])
            ep.send(bytes(ok), await alice.get_address())
            assert (await asyncio.wait_for(inbox.get(), WAIT)).method == "ACK"

            # what alice sends: 20 packets, read with aiortc
            packets = [await _recv(rtp) for _ in range(20)]
            now = time.monotonic_ns()
            parsed = [RtpPacket.parse(p) for p in packets]
            first = parsed[0]
            for i, (raw, packet) in enumerate(zip(packets, parsed)):
                assert packet.version == 2 and packet.payload_type == 0 and len(packet.payload) == 160
                assert packet.ssrc == first.ssrc
                assert packet.sequence_number == (first.sequence_number + i) & 0xFFFF
                assert packet.timestamp == (first.timestamp + 160 * i) & 0xFFFFFFFF
                profile, words = struct.unpack_from("!HH", raw, 12)
                assert (profile, words) == (0xBEDE, 3)
                [(ident, value)] = unpack_header_extensions(profile, raw[16 : 16 + 4 * words])
                assert ident == 1 and len(value) == 8
                assert now - 2_000_000_000 < struct.unpack("!Q", value)[0] <= now
            audio = ulaw_to_lin16(b"".join(p.payload for p in parsed))
            samples = list(struct.unpack(f"={len(audio) // 2}h", audio))
            assert dominant_frequency(samples, 8000) == pytest.approx(440, abs=5)

            # what the peer sends alice: sequence numbers 65530..65549 (wrapping) without 65540
            alice_rtp = peer_media_address(invite.body)
            sent = 0
            for i in range(20):
                seq = 65530 + i
                if seq == 65540:
                    continue
                rtp.sendto(build_rtp(0, seq & 0xFFFF, 160 * i, 0x5EED, b"\xff" * 160), alice_rtp)
                sent += 1
            # alice's reports: every one an RR from her RTP SSRC; one carries a block about us
            highest = 65549  # the extended highest sequence number: 65536 (one wrap) + 13
            block = None
            deadline = time.monotonic() + WAIT
            while block is None or block.highest_sequence < highest:
                assert time.monotonic() < deadline, "no receiver report about our RTP"
                report = RtcpPacket.parse(await _recv(rtcp))
                assert isinstance(report[0], RtcpRrPacket) and report[0].ssrc == first.ssrc
                block = report[0].reports[0] if report[0].reports else block
            assert block.ssrc == 0x5EED and block.packets_lost == 1
            assert block.highest_sequence == highest
            assert block.jitter >= 0 and (block.lsr, block.dlsr) == (0, 0)

            # bad input on alice's media ports: counted and dropped, the call goes on
            rtp.sendto(b"\x00", alice_rtp)
            rtp.sendto(b"\x40" + bytes(20), alice_rtp)
            rtcp.sendto(b"not rtcp", (alice_rtp[0], alice_rtp[1] + 1))
            deadline = time.monotonic() + WAIT
            while True:
                stats = await alice.get_media_stats()
                if stats["counters"].get("rtcp_malformed") == 1 and stats["engine"]["truncated"] + stats["engine"]["bad_version"] == 2:
                    break
                assert time.monotonic() < deadline, stats
                await asyncio.sleep(0.05)

            bye = await asyncio.wait_for(inbox.get(), WAIT)
            assert bye.method == "BYE"
            ep.send(bytes(bye.make_response(200)), await alice.get_address())
            result = await call
        rtp.close()
        rtcp.close()
        assert result.completed
        assert result.media.packets_received == sent and result.media.lost == 1
        assert result.media.loss == pytest.approx(1 / 20)


async def test_calls_that_never_connect_leave_no_media_behind() -> None:
    """404 and CANCEL (487): every port pair opened is closed again, nothing is sent, and
    neither counts as a media sample."""
    async with Runtime.attach():
        pool = UePool.start("pool", users=2, media=True, seed=6).proxy()
        await pool.set_pcscf(await pool.get_address())
        await pool.set_ring_delay("ue0002", math.inf)

        assert (await pool.call("ue0001", "nobody", timeout=WAIT)).status == 404
        cancelled = await pool.call("ue0001", "ue0002", cancel_after=0.1, timeout=WAIT)
        assert (cancelled.status, cancelled.cancel_status) == (487, 200)
        assert cancelled.media is not None and cancelled.media.packets_sent == 0

        stats = await pool.get_media_stats()
        counters = stats["counters"]
        assert stats["legs"] == 0 and stats["active_legs"] == 0
        assert counters["legs_opened"] == counters["legs_closed"] == 3  # two callers, one callee
        assert stats["engine"]["generated"] == 0 and stats["engine"]["flows"] == 0


async def test_an_sdp_address_the_engine_cannot_send_to_is_counted_not_fatal() -> None:
    loop = asyncio.get_running_loop()
    media = UeMedia("ue", MediaConfig(), LoopClock(loop), loop, random.Random(8))
    try:
        media.open("leg", "call-1", "ue0001", "uac")
        assert media.connect("leg", ("ue.example", 4000)) is False  # a name, not a numeric IP
        assert media.connect("leg", None) is False
        assert media.connect("other", ("127.0.0.1", 4000)) is False
        assert dict(media.counters) == {
            "legs_opened": 1, "bad_remote_address": 1, "no_remote_address": 1, "connect_unknown_leg": 1,
        }
        result = media.close("leg")
        assert result is not None and result.packets_sent == 0 and media.results == []
    finally:
        media.close_all()

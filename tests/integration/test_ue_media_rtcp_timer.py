"""The UE's receiver-report schedule on a virtual clock: RFC 3550 6.3.1 randomised intervals
(0.5-1.5 x ``rtcp_interval``, from the seeded RNG) at exact deadlines, one report at the end, none
after. Real sockets (the engine and the UE's RTCP socket), hand-held time."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest
from aiortc.rtp import RtcpPacket, RtcpRrPacket

from actors.clock import VirtualClock
from nf_modules.ue_media import MediaConfig, UeMedia

pytestmark = pytest.mark.timeout(30)

INTERVAL = 5.0
SEED = 11


def _received(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(2048))
        except BlockingIOError:
            return out


async def test_reports_are_due_at_the_randomised_deadlines() -> None:
    loop = asyncio.get_running_loop()
    clock = VirtualClock()
    media = UeMedia("ue", MediaConfig(rtcp_interval=INTERVAL), clock, loop, random.Random(SEED))
    peer_rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer_rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer_rtp.bind(("127.0.0.1", 0))
        port = peer_rtp.getsockname()[1]
        try:
            peer_rtcp.bind(("127.0.0.1", port + 1))
        except OSError:
            pytest.skip(f"port {port + 1} is taken: no RTCP port for the scripted peer")
        peer_rtcp.setblocking(False)
        # the same draws as the UE: the SSRC, then one uniform(0.5, 1.5) per interval
        mirror = random.Random(SEED)
        ssrc = mirror.getrandbits(32)
        media.open("leg", "call-1", "ue0001", "uac")
        assert media.connect("leg", ("127.0.0.1", port))
        deadline = 0.0
        for _ in range(3):
            deadline += INTERVAL * mirror.uniform(0.5, 1.5)
            clock.advance_to(deadline - 1e-6)
            assert _received(peer_rtcp) == []
            clock.advance_to(deadline)
            [report] = _received(peer_rtcp)
            rr = RtcpPacket.parse(report)[0]
            assert isinstance(rr, RtcpRrPacket) and rr.ssrc == ssrc
        assert clock.pending() == 1  # the next report
        result = media.close("leg")
        assert result is not None and result.rr_sent == 4  # three on schedule, one at the end
        assert len(_received(peer_rtcp)) == 1 and clock.pending() == 0
        clock.advance(10 * INTERVAL)
        assert _received(peer_rtcp) == []
    finally:
        media.close_all()
        peer_rtp.close()
        peer_rtcp.close()

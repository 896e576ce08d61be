"""tshark, an independent decoder, reads the RTP of a call through the deployed IMS as RTP on
all four hops: UE-A -> MRFP, MRFP -> UE-B, UE-B -> MRFP, MRFP -> UE-A (G.711 mu-law, the RFC 8285
send-time stamp kept end to end). Live capture on loopback, bounded in packets and time; skips
when tshark is missing or may not capture here, or (as ``test_ue_media_ims``) when the MRFP does
not forward RTP yet."""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import socket
from collections import Counter
from pathlib import Path

import pytest

from actors import Runtime, load_topology
from nf_modules.deployment import deploy
from tests.integration.test_ue_media_ims import TOPOLOGY, mrfp_forwarded

pytestmark = pytest.mark.timeout(90)

WAIT = 15.0
HOLD = 1.0
# RTP version 2, no padding, extension bit set, no CSRC, payload type 0 (PCMU), to or from the
# UEs' own loopback address (other tests on the machine send RTP on lo too)
RTP_FILTER = "udp and udp[8] = 0x90 and udp[9] & 0x7f = 0"
FIELDS = ("udp.srcport", "udp.dstport", "rtp.p_type", "rtp.ext.profile", "rtp.ext.rfc5285.id", "rtp.ext.rfc5285.len")


class Capture:
    """A live tshark capture of RTP-looking datagrams on lo. Its edges are made exact with
    probes: an RTP-looking datagram to the discard port, from a fresh socket each time, is sent
    until tshark prints it, once when the capture starts (so nothing of the call is missed) and
    once before it stops (so everything of the call is in the file)."""

    def __init__(self, process: asyncio.subprocess.Process, host: str) -> None:
        self.process = process
        self.host = host

    @classmethod
    async def start(cls, path: Path, host: str) -> Capture:
        tshark = shutil.which("tshark")
        if tshark is None:
            pytest.skip("tshark is not installed")
        process = await asyncio.create_subprocess_exec(
            tshark, "-i", "lo", "-f", f"{RTP_FILTER} and host {host}", "-c", "2000", "-a", "duration:30", "-w", str(path), "-P", "-l",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        capture = cls(process, host)
        try:
            await capture.sync()
        except TimeoutError:
            process.kill()
            err = (await process.stderr.read()).decode(errors="replace") if process.stderr else ""  # type: ignore[union-attr]
            pytest.skip(f"tshark does not capture on lo here: {err[-300:]}")
        return capture

    async def sync(self) -> None:
        """Send probes until tshark has printed one (it prints every captured packet: the lines
        before the probe's are skipped)."""
        assert self.process.stdout is not None
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((self.host, 0))
            mine = re.compile(rf"\b{probe.getsockname()[1]}\b\D+\b9\b")
            deadline = loop.time() + WAIT
            while loop.time() < deadline:
                probe.sendto(b"\x90\x00" + bytes(10) + b"\xbe\xde\x00\x00", ("127.0.0.1", 9))
                resend = loop.time() + 0.2
                while loop.time() < resend:
                    try:
                        line = await asyncio.wait_for(self.process.stdout.readline(), resend - loop.time())
                    except TimeoutError:
                        break
                    if not line:
                        raise TimeoutError("tshark exited")
                    if mine.search(line.decode(errors="replace")):
                        return
        raise TimeoutError("tshark printed no probe")

    async def stop(self) -> None:
        try:
            await self.sync()
        finally:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), WAIT)


async def _decode(path: Path) -> list[tuple[str, ...]]:
    process = await asyncio.create_subprocess_exec(
        "tshark", "-r", str(path), "-o", "rtp.heuristic_rtp:TRUE", "-Y", "rtp", "-T", "fields",
        *[arg for field in FIELDS for arg in ("-e", field)], "-E", "separator=,",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(process.communicate(), WAIT)
    return [tuple(line.split(",")) for line in out.decode().splitlines() if line]


async def test_tshark_decodes_every_hop_of_the_call_as_rtp(tmp_path: Path) -> None:
    capture = tmp_path / "call.pcapng"
    host = f"127.{random.randrange(1, 255)}.{random.randrange(0, 256)}.{random.randrange(1, 255)}"
    topology = load_topology(TOPOLOGY).with_ephemeral_ports()
    async with Runtime.attach():
        media = {"host": host}  # the UEs' RTP on an address of their own
        ims = await deploy(topology, overrides={"ue_pool": {"users": 2, "media": media, "seed": 7}})
        try:
            pool = ims.proxy("ue_pool")
            assert (await pool.register_all())["registered"] == 2
            tshark = await Capture.start(capture, host)
            try:
                result = await pool.call("ue0001", "ue0002", hold=HOLD, timeout=WAIT)
            finally:
                await tshark.stop()
            assert result.completed
            legs = {r.role: r for r in await pool.get_media_results()}
            a, b = legs["uac"], legs["uas"]
            if a.packets_received == 0 and b.packets_received == 0 and mrfp_forwarded((await ims.stats())["mrfp"]) == 0:
                pytest.skip("MRFP does not forward RTP yet: only the UE -> MRFP hops would carry RTP")
        finally:
            await ims.stop()
    rows = [row for row in await _decode(capture) if row[1] != "9"]  # not the probes
    hops = Counter((int(src), int(dst)) for src, dst, *_ in rows)
    to_port = Counter(dst for _, dst in hops.elements())
    assert hops[(a.local_port, a.remote[1])] == a.packets_sent  # UE-A -> MRFP side A
    assert hops[(b.local_port, b.remote[1])] == b.packets_sent  # UE-B -> MRFP side B
    assert to_port[b.local_port] == b.packets_received  # MRFP -> UE-B
    assert to_port[a.local_port] == a.packets_received  # MRFP -> UE-A
    for _src, _dst, payload_type, profile, ident, length in rows:
        assert payload_type == "0" and int(profile, 0) == 0xBEDE
        assert (ident, length) == ("1", "8")  # element 1, 8 bytes: the send-time stamp

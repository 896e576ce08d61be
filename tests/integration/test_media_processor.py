"""The MRFP's Media Processor over real sockets: two UDP sockets play the UEs, RTP crosses the
bridge both ways through the media engine, metadata goes to Media Update, and Media Update's
instructions (here from a test peer playing the MRFC's Media Control) change the flows.

    UE-A ~RTP~> MRFP port A --engine--> from port B ~RTP~> UE-B   (and back)
    engine metadata -> MRFP -> Media Update ~control~> Media Control (test peer)
                               Media Update ~control~> MRFP "instructions" (callback)
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from actors import Runtime
from actors.control import ControlError, ControlPeer
from actors.transport import UdpEndpoint
from nf_modules.mediacore import build_rtp, lin16_to_ulaw, parse_rtp, ulaw_to_alaw
from nf_modules.mrfp import MrfpSignalling

WAIT = 10.0


async def until(probe: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def free_port_range(size: int = 80) -> tuple[int, int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        first = probe.getsockname()[1] & ~1
    return first, min(first + size - 1, 65535)


def tone(n: int = 160) -> bytes:
    """160 mu-law samples (20 ms) of a 1 kHz tone."""
    import array

    samples = array.array("h", (int(8000 * math.sin(2 * math.pi * 1000 * i / 8000)) for i in range(n)))
    return lin16_to_ulaw(samples.tobytes())


class Ue:
    """A UDP socket playing a UE: sends RTP, records what it gets with the arrival time."""

    def __init__(self, endpoint: UdpEndpoint) -> None:
        self.endpoint = endpoint
        self.address: tuple[str, int] = endpoint.local_address[:2]
        self.got: list[tuple[float, bytes, tuple[str, int]]] = []
        self.sent: dict[tuple[int, int], float] = {}
        endpoint.on_datagram = lambda data, source: self.got.append((time.monotonic(), data, tuple(source[:2])))

    @classmethod
    async def open(cls) -> Ue:
        return cls(await UdpEndpoint.open(("127.0.0.1", 0), None))

    def send(self, dest: tuple[str, int], ssrc: int, seq: int, payload: bytes) -> None:
        self.sent[(ssrc, seq)] = time.monotonic()
        self.endpoint.send(build_rtp(0, seq, seq * 160, ssrc, payload), dest)

    def packets(self) -> list[tuple[float, Any, bytes, tuple[str, int]]]:
        out = []
        for at, data, source in self.got:
            header = parse_rtp(data)
            out.append((at, header, data[header.payload_offset:header.payload_offset + header.payload_length], source))
        return out

    def close(self) -> None:
        self.endpoint.close()


def latencies_ms(receiver: Ue, senders: list[Ue]) -> list[float]:
    """One-way latency of every packet ``receiver`` got, from the senders' send times."""
    sent: dict[tuple[int, int], float] = {}
    for sender in senders:
        sent.update(sender.sent)
    out = []
    for at, header, _, _ in receiver.packets():
        start = sent.get((header.ssrc, header.sequence_number))
        if start is not None:
            out.append((at - start) * 1000)
    return out


class MediaControlPeer:
    """Plays the MRFC's Media Control: side A is told to transcode to A-law, side B to forward."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, list[dict[str, float]]]] = []

    def handle_instructions(self, bridge_id: str, side: str, sets: list[dict[str, float]]) -> list[dict[str, Any]]:
        self.requests.append((bridge_id, side, sets))
        instruction = ({"codec": "PCMA", "transcode": "ulaw2alaw"} if side == "A" else {"codec": "PCMU"})
        return [{"instruction": instruction, "rule": side} for _ in sets]


async def test_rtp_crosses_the_bridge_both_ways_and_instructions_transcode_side_a() -> None:
    first, last = free_port_range()
    payload = tone()
    async with Runtime.attach():
        mrfp = MrfpSignalling.start("mrfp", port_range=(first, last), mode="refactored",
                                    update_options={"refresh": 0.5}).proxy()
        address = await mrfp.get_address()
        control = MediaControlPeer()
        peer = await ControlPeer.open(control, ("127.0.0.1", 0), timeout=2.0)
        ue_a, ue_b = await Ue.open(), await Ue.open()
        try:
            bridge = await peer.request(address, "allocate", bridge_id="b1", controller=list(peer.address))
            port_a, port_b = bridge["ports"]["A"], bridge["ports"]["B"]
            assert await mrfp.get_dialog_states() == {"Created": 1, "Connected": 0, "Ended": 0}
            await peer.request(address, "update", bridge_id="b1", side="A", remote_host="127.0.0.1", remote_port=ue_a.address[1])
            await peer.request(address, "update", bridge_id="b1", side="B", remote_host="127.0.0.1", remote_port=ue_b.address[1])
            assert await mrfp.get_dialog_states() == {"Created": 0, "Connected": 1, "Ended": 0}
            seq = 0

            async def alaw_reached_b() -> bool:
                nonlocal seq
                seq += 1
                ue_a.send(("127.0.0.1", port_a), 0xA, seq, payload)
                ue_b.send(("127.0.0.1", port_b), 0xB, seq, payload)
                await asyncio.sleep(0.02)
                return any(h.payload_type == 8 for _, h, _, _ in ue_b.packets()) and seq >= 20

            await until(alaw_reached_b, "A-law packets at UE-B")
            await until(lambda: _count(ue_a, seq), "UE-A got B's packets")
            # A -> B: from MRFP's B port; mu-law until the instruction came, A-law after, in order
            to_b = ue_b.packets()
            assert {source for *_, source in to_b} == {("127.0.0.1", port_b)}
            kinds = [h.payload_type for _, h, _, _ in to_b]
            assert kinds[0] == 0 and kinds[-1] == 8 and kinds == sorted(kinds)
            for _, header, body, _ in to_b:
                assert header.ssrc == 0xA
                assert body == (ulaw_to_alaw(payload) if header.payload_type == 8 else payload)
            # B -> A: from MRFP's A port, untouched
            to_a = ue_a.packets()
            assert {source for *_, source in to_a} == {("127.0.0.1", port_a)}
            assert all(h.payload_type == 0 and h.ssrc == 0xB and body == payload for _, h, body, _ in to_a)
            # metadata reached Media Update and the Media Control: 160-byte payloads at ~50 pps
            assert {(b, s) for b, s, _ in control.requests} == {("b1", "A"), ("b1", "B")}
            assert all(s["payload_size"] == 160.0 for _, _, sets in control.requests for s in sets[:1])
            flows = await mrfp.get_flows()
            assert flows["b1/A"]["instruction"]["transcode"] == "ulaw2alaw"
            assert flows["b1/B"]["instruction"]["codec"] == "PCMU"
            assert flows["b1/A"]["stats"]["packets"] >= 20 and flows["b1/A"]["records"] >= 1
            stats = await mrfp.get_stats()
            assert stats["media_metadata_sent"] >= 2 and stats["media_instructions_applied"] >= 2
            update = await until(lambda: _update_stats(mrfp), "Media Update stats")
            assert update["update_metadata"] >= 2 and update["update_pushes"] == 2  # one per flow: only changes
        finally:
            ue_a.close()
            ue_b.close()

        # the callback refuses what it cannot use, counted, never a crash
        reply = await peer.request(address, "instructions", items=[
            {"bridge_id": "nope", "side": "A", "instruction": None},
            {"bridge_id": "b1", "side": "A", "instruction": {"action": "explode"}},
            {"bridge_id": "b1", "side": "B"},
            {"bridge_id": "b1", "side": "B", "instruction": None},
        ])
        assert reply == {"unknown": 1, "bad": 2, "applied": 0, "released": 1}
        with pytest.raises(ControlError) as caught:
            await peer.request(address, "instructions", items="x")
        assert caught.value.code == "bad_args"
        with pytest.raises(ControlError) as caught:
            await peer.request(address, "allocate", bridge_id="b2", controller=["h"])
        assert caught.value.code == "bad_args"
        await peer.request(address, "release", bridge_id="b1")
        assert await mrfp.get_flows() == {}
        assert await mrfp.get_dialog_states() == {"Created": 0, "Connected": 0, "Ended": 1}
        assert (await mrfp.get_stats())["media_flows"] == 0
        peer.close()


async def _count(ue: Ue, n: int) -> bool:
    return len(ue.got) >= n - 2


async def _update_stats(mrfp: Any) -> dict[str, int] | None:
    stats = await mrfp.get_media_update_stats()
    return stats if stats.get("update_pushes", 0) >= 2 else None


async def test_without_a_controller_metadata_is_dropped_and_baseline_flows_are_released() -> None:
    first, last = free_port_range()
    async with Runtime.attach():
        mrfp = MrfpSignalling.start("mrfp", port_range=(first, last), mode="baseline").proxy()
        address = await mrfp.get_address()
        peer = await ControlPeer.open(None, ("127.0.0.1", 0), timeout=2.0)
        ue_a, ue_b = await Ue.open(), await Ue.open()
        try:
            bridge = await peer.request(address, "allocate", bridge_id="b1")  # no controller
            await peer.request(address, "update", bridge_id="b1", side="B", remote_host="127.0.0.1", remote_port=ue_b.address[1])
            for seq in range(1, 31):
                ue_a.send(("127.0.0.1", bridge["ports"]["A"]), 1, seq, tone())
                await asyncio.sleep(0.01)
            await until(lambda: _count(ue_b, 30), "every packet at UE-B")
            stats = await mrfp.get_stats()
            assert stats["media_metadata_no_controller"] >= 1 and stats.get("media_metadata_sent", 0) == 0
        finally:
            ue_a.close()
            ue_b.close()
            peer.close()

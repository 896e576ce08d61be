"""The media engine on real UDP sockets (loopback, ephemeral ports), C and pure-Python twin alike."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from aiortc.rtp import RtpPacket

from nf_modules.mediacore import build_rtp, parse_rtp, ulaw_to_alaw
from nf_modules.mediacore.engine import Instruction, MediaEngine, Metadata
from nf_modules.mediacore.pure_packet import send_stamp, stamp_extension

pytestmark = pytest.mark.integration

WAIT = 10.0
TONE = bytes((i * 37) & 0xFF for i in range(160))


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def wait_for(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def recv_n(sock: socket.socket, n: int) -> list[bytes]:
    sock.settimeout(WAIT)
    return [sock.recv(4096) for _ in range(n)]


def nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    return False


def rtp(seq: int, payload: bytes = TONE, *, pt: int = 0, ssrc: int = 0x1234, stamp: bool = False) -> bytes:
    ext = stamp_extension(time.monotonic_ns())[4:] if stamp else b""
    return build_rtp(pt, seq & 0xFFFF, (seq * len(payload)) & 0xFFFFFFFF, ssrc, payload,
                     extension_profile=0xBEDE if stamp else None, extension=ext)  # fmt: skip


@pytest.fixture(params=[True, False], ids=["c", "pure"])
def native(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def socks() -> Iterator[tuple[socket.socket, socket.socket, socket.socket]]:
    """(flow socket the engine owns, receiver, sender)."""
    trio = (udp(), udp(), udp())
    yield trio
    for s in trio:
        s.close()


def forward_to(rx: socket.socket, **kw: object) -> Instruction:
    return Instruction(action="forward", dest=rx.getsockname(), **kw)  # type: ignore[arg-type]


def test_forward_transcodes_ulaw_to_alaw_checked_with_aiortc(native: bool, socks) -> None:
    flow, rx, tx = socks
    out = udp()
    with MediaEngine(native=native) as eng:
        eng.add_flow(1, flow, forward_to(rx, out_sock=out, transcode="ulaw2alaw", version=3))
        for seq in range(20):
            packet = RtpPacket(payload_type=0, sequence_number=seq, timestamp=seq * 160, ssrc=0xABC, payload=TONE)
            tx.sendto(packet.serialize(), flow.getsockname())
        got = [RtpPacket.parse(d) for d in recv_n(rx, 20)]
        assert [p.sequence_number for p in got] == list(range(20))
        assert all(p.payload_type == 8 and p.ssrc == 0xABC and p.payload == ulaw_to_alaw(TONE) for p in got)
        wait_for(lambda: eng.stats()["tx"] == 20, "tx counter")
        stats = eng.flow_stats(1)
        assert (stats.packets, stats.bytes, stats.lost, stats.version) == (20, 20 * 172, 0, 3)
        assert eng.stats()["rx"] == 20
    out.close()


def test_out_sock_is_the_source_address(native: bool, socks) -> None:
    flow, rx, tx = socks
    out = udp()
    with MediaEngine(native=native) as eng:
        eng.add_flow(1, flow, forward_to(rx, out_sock=out))
        tx.sendto(rtp(1), flow.getsockname())
        rx.settimeout(WAIT)
        data, source = rx.recvfrom(4096)
        assert data == rtp(1) and source == out.getsockname()
    out.close()


def test_drop_sends_nothing_and_counts(native: bool, socks) -> None:
    flow, rx, tx = socks
    with MediaEngine(native=native) as eng:
        eng.add_flow(1, flow, Instruction(action="drop"))
        for seq in range(7):
            tx.sendto(rtp(seq), flow.getsockname())
        wait_for(lambda: eng.flow_stats(1).packets == 7, "7 packets")
        assert eng.stats()["instruction_drop"] == 7
        assert eng.stats()["tx"] == 0
        assert nothing_waiting(rx)


def test_sink_records_the_payload(native: bool, socks) -> None:
    flow, _, tx = socks
    with MediaEngine(native=native) as eng:
        eng.add_flow(1, flow, Instruction(action="sink"), record=True)
        payloads = [bytes([seq]) * 160 for seq in range(12)]
        for seq, payload in enumerate(payloads):
            tx.sendto(rtp(seq, payload), flow.getsockname())
        wait_for(lambda: eng.flow_stats(1).packets == 12, "12 packets")
        assert eng.take_recording(1) == b"".join(payloads)
        assert eng.take_recording(1) == b""
        assert eng.stats()["tx"] == 0


def test_recording_is_bounded(native: bool, socks) -> None:
    flow, _, tx = socks
    with MediaEngine(native=native, recording_seconds=0.05) as eng:  # 400 bytes
        eng.add_flow(1, flow, Instruction(action="sink"), record=True)
        for seq in range(5):
            tx.sendto(rtp(seq), flow.getsockname())
        wait_for(lambda: eng.flow_stats(1).packets == 5, "5 packets")
        assert eng.take_recording(1) == (TONE * 3)[:400]
        assert eng.flow_stats(1).drops["recording_full"] == 3


def test_generator_sends_stamped_g711_on_schedule(native: bool, socks) -> None:
    gen_sock, rx, _ = socks
    with MediaEngine(native=native) as eng:
        start = time.monotonic()
        eng.add_generator(7, gen_sock, rx.getsockname(), payload=TONE * 2, ssrc=99, ptime_ms=20, count=10)
        got = recv_n(rx, 10)
        elapsed = time.monotonic() - start
        wait_for(lambda: eng.generator_stats(7)["sent"] == 10, "10 sent")
        assert eng.remove_generator(7)["sent"] == 10
    assert elapsed >= 0.17  # 10 packets 20 ms apart: the 10th is due 180 ms after the first
    packets = [RtpPacket.parse(d) for d in got]
    assert [p.sequence_number - packets[0].sequence_number for p in packets] == list(range(10))
    assert [p.timestamp - packets[0].timestamp for p in packets] == [160 * i for i in range(10)]
    assert packets[0].marker == 1 and all(p.marker == 0 for p in packets[1:])
    assert all(p.ssrc == 99 and p.payload_type == 0 and p.payload == TONE for p in packets)
    for data in got:
        h = parse_rtp(data)
        stamp = send_stamp(data, h)  # type: ignore[arg-type]
        assert len(data) == 12 + 16 + 160 and stamp is not None and stamp <= time.monotonic_ns()


def test_generator_to_a_sink_flow_measures_latency(native: bool, socks) -> None:
    flow, gen_sock, _ = socks
    with MediaEngine(native=native) as eng:
        eng.add_flow(1, flow, Instruction(action="sink"))
        eng.add_generator(1, gen_sock, flow.getsockname(), payload=TONE, ssrc=5, ptime_ms=10, count=15)
        wait_for(lambda: eng.flow_stats(1).packets == 15, "15 packets")
        stats = eng.flow_stats(1)
    assert stats.latency_count == 15 and stats.lost == 0 and stats.ssrc == 5
    assert 0 <= stats.p50 <= stats.p99 <= stats.max < 1000
    # the histogram behind the percentiles, in ms: every packet in one bucket, the max in the last
    assert sum(n for _, _, n in stats.latency_buckets) == 15
    assert all(low <= high for low, high, _ in stats.latency_buckets)
    assert stats.latency_buckets[0][0] <= stats.p50 and stats.latency_buckets[-1][0] <= stats.max <= stats.latency_buckets[-1][1]


async def test_metadata_through_fileno_and_add_reader(native: bool, socks) -> None:
    flow, rx, tx = socks
    loop = asyncio.get_running_loop()
    records: list[Metadata] = []
    got = asyncio.Event()

    def on_readable() -> None:
        records.extend(eng.drain_metadata())
        if records:
            got.set()

    eng = MediaEngine(native=native, metadata_interval=0.05)
    eng.add_flow(4, flow, forward_to(rx))
    loop.add_reader(eng.fileno(), on_readable)
    eng.start()
    try:
        for seq in range(10):
            tx.sendto(rtp(seq, stamp=True), flow.getsockname())
        await asyncio.wait_for(got.wait(), WAIT)
    finally:
        loop.remove_reader(eng.fileno())
        eng.close()
    first = records[0]
    assert first.flow_id == 4 and first.seq == 0 and first.ssrc == 0x1234 and not first.held
    assert 0 < first.packets <= 10
    assert first.payload_size == 160.0 and first.packet_rate > 0 and first.lost == 0
    assert first.latency_ms is not None and 0 <= first.latency_ms < 1000
    assert abs(first.at - time.monotonic()) < WAIT


def test_baseline_hold_and_release(native: bool, socks) -> None:
    flow, rx, tx = socks
    with MediaEngine(native=native, metadata_interval=0.02) as eng:
        eng.add_flow(1, flow, forward_to(rx), hold_on_metadata=True)
        tx.sendto(rtp(0), flow.getsockname())
        assert recv_n(rx, 1) == [rtp(0)]  # not held yet: forwarded at once
        wait_for(lambda: eng.flow_stats(1).held, "the metadata record to hold the flow")
        assert any(r.held for r in eng.drain_metadata())
        for seq in range(1, 6):
            tx.sendto(rtp(seq), flow.getsockname())
        wait_for(lambda: eng.flow_stats(1).hold_queue == 5, "5 held packets")
        assert nothing_waiting(rx)
        eng.release(1)
        assert recv_n(rx, 5) == [rtp(seq) for seq in range(1, 6)]
        stats = eng.flow_stats(1)
        assert stats.held_packets == 5 and stats.hold_time_ms > 0


def test_set_instructions_releases_with_the_new_instruction(native: bool, socks) -> None:
    flow, rx, tx = socks
    with MediaEngine(native=native, metadata_interval=0.02) as eng:
        eng.add_flow(1, flow, Instruction(action="sink"), hold_on_metadata=True)
        tx.sendto(rtp(0), flow.getsockname())
        wait_for(lambda: eng.flow_stats(1).held, "hold")
        for seq in range(1, 4):
            tx.sendto(rtp(seq), flow.getsockname())
        wait_for(lambda: eng.flow_stats(1).hold_queue == 3, "3 held packets")
        eng.set_instructions({1: forward_to(rx, transcode="ulaw2alaw", version=2)})
        got = [parse_rtp(d) for d in recv_n(rx, 3)]
        assert [h.sequence_number for h in got] == [1, 2, 3] and all(h.payload_type == 8 for h in got)
        assert eng.flow_stats(1).version == 2


def test_hold_overflow_is_counted(native: bool, socks) -> None:
    flow, rx, tx = socks
    with MediaEngine(native=native, metadata_interval=0.02, hold_limit=2) as eng:
        eng.add_flow(1, flow, forward_to(rx), hold_on_metadata=True)
        tx.sendto(rtp(0), flow.getsockname())
        wait_for(lambda: eng.flow_stats(1).held, "hold")
        for seq in range(1, 6):
            tx.sendto(rtp(seq), flow.getsockname())
        wait_for(lambda: eng.flow_stats(1).packets == 6, "6 packets")
        assert eng.flow_stats(1).hold_queue == 2 and eng.stats()["hold_overflow"] == 3


def test_bad_packets_counted_per_reason(native: bool, socks) -> None:
    flow, rx, tx = socks
    good = rtp(1)
    bad = {
        "truncated": good[:11],
        "bad_version": bytes([0x40]) + good[1:],
        "csrc_overrun": bytes([0x8F]) + good[1:40],
        "bad_extension": bytes([0x90]) + good[1:12] + b"\xbe\xde\x00\x09",
        "bad_padding": bytes([0xA0]) + good[1:-1] + b"\xff",
    }
    with MediaEngine(native=native) as eng:
        eng.add_flow(1, flow, forward_to(rx))
        for data in bad.values():
            tx.sendto(data, flow.getsockname())
        tx.sendto(good, flow.getsockname())
        assert recv_n(rx, 1) == [good]  # the engine survives and keeps forwarding
        wait_for(lambda: eng.stats()["rx"] == 6, "6 datagrams")
        stats = eng.stats()
        assert {reason: stats[reason] for reason in bad} == dict.fromkeys(bad, 1)
        assert eng.flow_stats(1).packets == 1


def test_removed_flow_packets_are_counted(native: bool, socks) -> None:
    flow, rx, tx = socks
    eng = MediaEngine(native=native)  # not started: the packets wait on the socket
    try:
        eng.add_flow(1, flow, forward_to(rx))
        for seq in range(3):
            tx.sendto(rtp(seq), flow.getsockname())
        stats = eng.remove_flow(1)  # loopback sendto queues on the receiving socket synchronously
        assert stats.drops["removed_flow"] == 3 and stats.packets == 0
        assert eng.stats()["removed_flow"] == 3
        with pytest.raises(KeyError):
            eng.flow_stats(1)
    finally:
        eng.close()


def test_repacketizes_20ms_into_40ms(native: bool, socks) -> None:
    flow, rx, tx = socks
    with MediaEngine(native=native) as eng:
        eng.add_flow(1, flow, forward_to(rx, ptime_ms=40))
        payloads = [bytes([seq]) * 160 for seq in range(6)]
        for seq, payload in enumerate(payloads):
            tx.sendto(rtp(seq, payload), flow.getsockname())
        got_raw = recv_n(rx, 3)
        got = [parse_rtp(d) for d in got_raw]
        raw = b"".join(payloads)
        assert [h.payload_length for h in got] == [320, 320, 320]
        assert b"".join(d[12:] for d in got_raw) == raw
        assert [h.timestamp for h in got] == [0, 320, 640]
        assert [h.sequence_number for h in got] == [0, 1, 2]


def test_bad_configuration_names_the_field(native: bool, socks) -> None:
    flow, rx, _ = socks
    with pytest.raises(ValueError, match="dest"):
        Instruction(action="forward")
    with pytest.raises(ValueError, match="ptime_ms"):
        Instruction(action="sink", ptime_ms=3)
    with MediaEngine(native=native) as eng:
        with pytest.raises(ValueError, match="dest"):
            eng.add_flow(1, flow, Instruction(action="forward", dest=("not-an-ip", 5)))
        eng.add_flow(1, flow, forward_to(rx))
        with pytest.raises(ValueError, match="flow_id 1"):
            eng.add_flow(1, flow, forward_to(rx))
        with pytest.raises(KeyError):
            eng.set_instructions({2: forward_to(rx)})


def test_close_is_idempotent_and_final(native: bool) -> None:
    eng = MediaEngine(native=native)
    eng.start()
    eng.close()
    eng.close()
    with pytest.raises(RuntimeError, match="closed"):
        eng.stats()


def test_many_flows_with_slot_reuse(native: bool) -> None:
    rx, tx = udp(), udp()
    flows = {i: udp() for i in range(40)}
    try:
        with MediaEngine(native=native) as eng:
            for i, s in flows.items():
                eng.add_flow(i, s, forward_to(rx, version=i))
            for i in range(0, 40, 2):  # free every other slot, then fill them with new flow ids
                eng.remove_flow(i)
                eng.add_flow(100 + i, flows[i], forward_to(rx, version=100 + i))
            for s in flows.values():
                tx.sendto(rtp(1), s.getsockname())
            assert len(recv_n(rx, 40)) == 40
            ids = [100 + i if i % 2 == 0 else i for i in flows]
            wait_for(lambda: all(eng.flow_stats(i).packets == 1 for i in ids), "one packet per flow")
            assert all(eng.flow_stats(i).version == i for i in ids)
            assert eng.stats()["flows"] == 40
    finally:
        for s in [rx, tx, *flows.values()]:
            s.close()


def test_many_low_rate_flows_each_packet_forwarded_once_in_order(native: bool) -> None:
    """More ready flows per wake-up than the C loop's coalescing threshold (it then lets sockets
    accumulate for a bounded time): every packet still leaves once, each flow in order."""
    n_flows, rounds = 48, 5
    rx, tx = udp(), udp()
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    flows = [udp() for _ in range(n_flows)]
    eng = MediaEngine(native=native)
    try:
        for i, s in enumerate(flows):
            eng.add_flow(i, s, forward_to(rx))
            tx.sendto(rtp(0, ssrc=i), s.getsockname())
        eng.start()  # its first wake-up finds every flow ready
        for seq in range(1, rounds):
            for i, s in enumerate(flows):
                tx.sendto(rtp(seq, ssrc=i), s.getsockname())
        seen: dict[int, list[int]] = {}
        for data in recv_n(rx, n_flows * rounds):
            p = parse_rtp(data)
            seen.setdefault(p.ssrc, []).append(p.sequence_number)
        assert seen == {i: list(range(rounds)) for i in range(n_flows)}
        assert nothing_waiting(rx)
        stats = eng.stats()
        assert (stats["rx"], stats["tx"]) == (n_flows * rounds, n_flows * rounds)
    finally:
        eng.close()
        for s in [rx, tx, *flows]:
            s.close()


def test_low_rate_flow_then_burst_then_low_rate_again(native: bool, socks) -> None:
    """A flow read one datagram per wake-up (the C loop's recvmsg mode) that suddenly gets a
    burst: what is queued behind the first datagram leaves without waiting for more traffic,
    and the flow keeps working once it is quiet again."""
    flow, rx, tx = socks
    flow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    with MediaEngine(native=native) as eng:
        eng.add_flow(1, flow, forward_to(rx))
        eng.start()
        seq = 0
        for _ in range(3):  # one at a time: the low-rate path
            tx.sendto(rtp(seq), flow.getsockname())
            assert parse_rtp(recv_n(rx, 1)[0]).sequence_number == seq
            seq += 1
        burst = 200
        for _ in range(burst):
            tx.sendto(rtp(seq), flow.getsockname())
            seq += 1
        got = [parse_rtp(d).sequence_number for d in recv_n(rx, burst)]
        assert got == list(range(3, 3 + burst))
        for _ in range(3):  # quiet again
            tx.sendto(rtp(seq), flow.getsockname())
            assert parse_rtp(recv_n(rx, 1)[0]).sequence_number == seq
            seq += 1
        assert nothing_waiting(rx)
        assert eng.flow_stats(1).packets == seq

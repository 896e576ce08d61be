"""The media engine's per-packet logic: C (``_mediaengine.process``) against its pure twin, and
both against hand-computed RFC 3550 values, the G.711 functions and aiortc's wire format."""

from __future__ import annotations

import random

import pytest
from aiortc.rtp import RtpPacket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nf_modules.mediacore import _mediaengine, alaw_to_ulaw, build_rtp, parse_rtp, ulaw_to_alaw
from nf_modules.mediacore import pure_packet
from nf_modules.mediacore.pure_packet import stamp_extension

FORWARD, DROP, SINK = 0, 1, 2
NONE, U2A, A2U = 0, 1, 2
MS = 1_000_000
T0 = 10**12  # an arrival time far from 0, like CLOCK_MONOTONIC


def both(packets, rule=(FORWARD, NONE, 0, -1), record=False, limit=480000):
    """Run both twins; they must agree exactly; return the C result."""
    c = _mediaengine.process(packets, rule, record, limit)
    p = pure_packet.process(packets, rule, record, limit)
    assert c == p
    return c


def pkt(seq, ts, payload=b"\xff" * 160, *, pt=0, ssrc=7, stamp_ns=None, **kw):
    if stamp_ns is not None:
        kw.update(extension_profile=0xBEDE, extension=stamp_extension(stamp_ns)[4:])
    return build_rtp(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload, **kw)


# ------------------------------------------------------------------------- differential


@st.composite
def packet_sequences(draw):
    rng = random.Random(draw(st.integers(0, 2**32)))
    seq, ts, t = rng.randrange(65536), rng.randrange(2**32), T0
    out = []
    for _ in range(draw(st.integers(1, 30))):
        t += rng.choice([0, 5 * MS, 20 * MS, 20 * MS, 37 * MS, 400 * MS])
        seq += rng.choice([1, 1, 1, 2, 0, -1, 4000, 30000])
        ts += rng.choice([160, 160, 320, 80, 0])
        if rng.random() < 0.15:
            out.append((draw(st.binary(max_size=40)), t))
            continue
        stamp = t - rng.randrange(0, 3000 * MS) if rng.random() < 0.5 else None
        payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 80, 160, 240, 480])))
        out.append((pkt(seq, ts, payload, pt=rng.choice([0, 8, 96]), ssrc=rng.choice([7, 7, 7, 8]), stamp_ns=stamp,
                        csrcs=[1] * rng.choice([0, 0, 2]), padding=rng.choice([0, 0, 4]), marker=rng.random() < .1),
                    t))  # fmt: skip
    return out


rules = st.tuples(
    st.sampled_from([FORWARD, FORWARD, DROP, SINK]),
    st.sampled_from([NONE, U2A, A2U]),
    st.sampled_from([0, 0, 10, 20, 30, 60, 200]),
    st.sampled_from([-1, -1, 0, 8, 96]),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packet_sequences(), rules, st.booleans(), st.integers(0, 2000))
def test_c_and_pure_twin_agree(packets, rule, record, limit) -> None:
    both(packets, rule, record, limit)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=64), st.integers(0, 2**62)), max_size=20), rules)
def test_c_and_pure_twin_agree_on_garbage(packets, rule) -> None:
    both(packets, rule, True, 100)


def test_histogram_buckets_agree_and_bound_the_error() -> None:
    rng = random.Random(4)
    for us in [0, 1, 127, 128, 129, 255, 256, 1000, 10**6, 2**36 - 1, 2**40] + [rng.randrange(2**37) for _ in range(500)]:
        index = _mediaengine.hist_index(us)
        assert index == pure_packet.hist_index(us) < _mediaengine.HIST_BUCKETS
        capped = min(us, 2**36 - 1)
        upper = pure_packet.hist_upper(index)
        assert capped <= upper and (upper - capped) <= max(capped / 64, 0)


# ----------------------------------------------------------------- RFC 3550 by hand


def test_jitter_follows_rfc3550_a8_by_hand() -> None:
    # 8 kHz: 20 ms = 160 ticks.  Arrivals 0, 20, 45, 60 ms for timestamps 0, 160, 320, 480:
    # transit 0, 0, 40, 0 ticks; |D| = 0, 40, 40; A.8 (J*16): 0, 40, 40 + 40 - ((40+8)>>4) = 77.
    arrivals = [0, 20 * MS, 45 * MS, 60 * MS]
    packets = [(pkt(i, 160 * i), T0 // (125000 * 160) * (125000 * 160) + a) for i, a in enumerate(arrivals)]
    expected_q4 = [0, 0, 40, 77]
    for n in range(1, 5):
        _, stats = both(packets[:n])
        assert stats["jitter_ms"] == expected_q4[n - 1] / 16 / 8
    # The float form of 6.4.1 gives 2.5 then 4.84375 ticks: the integer form stays within a tick.
    assert abs(77 / 16 - (2.5 + (40 - 2.5) / 16)) < 1


@pytest.mark.parametrize(
    ("seqs", "lost", "highest"),
    [
        ([0, 1, 2, 5, 6], 2, 6),  # 3 and 4 missing
        ([65534, 65535, 1], 1, 65537),  # 0 missing across the wrap: one cycle counted
        ([0, 1, 1, 2], 0, 2),  # a duplicate: expected 3, received 4, never negative
        ([10, 12, 11], 0, 12),  # reordered: nothing lost in the end
        ([0, 1, 10000, 10001, 10002], 0, 10002),  # a jump: resync on the second packet (A.1)
        ([0, 1, 10000, 3], 1, 3),  # a stray jump is ignored; 2 missing
    ],
)
def test_loss_follows_rfc3550_a1_a3(seqs, lost, highest) -> None:
    _, stats = both([(pkt(s, 160 * i), T0 + 20 * MS * i) for i, s in enumerate(seqs)])
    assert (stats["lost"], stats["highest_seq"]) == (lost, highest)


def test_latency_percentiles_from_stamps() -> None:
    packets = [(pkt(i, 160 * i, stamp_ns=T0 + i * MS - (i + 1) * MS), T0 + i * MS) for i in range(100)]
    _, stats = both(packets, (SINK, NONE, 0, -1))
    assert stats["latency_count"] == 100
    for key, want in [("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)]:
        got = stats[f"latency_{key}_ms"]
        assert want <= got <= want * (1 + 1 / 64), key
    assert both([(pkt(1, 0), T0)])[1]["latency_p50_ms"] is None


def test_latency_buckets_are_the_histogram_exported() -> None:
    # latencies 50 us, 50 us, 1 ms, 1.003 ms, 100 ms: exact below 128 us, then 1/64-wide buckets
    lat_ns = [50_000, 50_999, 1_000_000, 1_003_000, 100_000_000]
    packets = [(pkt(i, 160 * i, stamp_ns=T0 + i * MS - ns), T0 + i * MS) for i, ns in enumerate(lat_ns)]
    _, stats = both(packets, (SINK, NONE, 0, -1))
    assert stats["latency_buckets"] == [(50, 50, 2), (1000, 1007, 2), (99328, 100351, 1)]
    assert sum(n for _, _, n in stats["latency_buckets"]) == stats["latency_count"]
    for low, high, _ in stats["latency_buckets"]:
        index = pure_packet.hist_index(low)
        assert (pure_packet.hist_lower(index), pure_packet.hist_upper(index)) == (low, high)
        assert _mediaengine.hist_index(low) == _mediaengine.hist_index(high) == index != _mediaengine.hist_index(high + 1)
    assert both([(pkt(1, 0), T0)])[1]["latency_buckets"] == []


def test_stamp_from_the_future_counts_as_zero_latency() -> None:
    _, stats = both([(pkt(1, 0, stamp_ns=T0 + 5 * MS), T0)])
    assert stats["latency_max_ms"] == 0.0


# --------------------------------------------------------------------- instructions


def test_transcoding_matches_the_g711_functions() -> None:
    every = bytes(range(256))
    (out,), _ = both([(pkt(1, 0, every, pt=0), T0)], (FORWARD, U2A, 0, -1))
    h = parse_rtp(out)
    assert h.payload_type == 8 and out[h.payload_offset :] == ulaw_to_alaw(every)
    (out,), _ = both([(pkt(1, 0, every, pt=8), T0)], (FORWARD, A2U, 0, -1))
    assert parse_rtp(out).payload_type == 0 and out[12:] == alaw_to_ulaw(every)
    (out,), _ = both([(pkt(1, 0, every, pt=0), T0)], (FORWARD, U2A, 0, 96))
    assert parse_rtp(out).payload_type == 96


def test_forward_keeps_csrcs_padding_and_marker_checked_with_aiortc() -> None:
    ref = RtpPacket(payload_type=0, marker=1, sequence_number=4242, timestamp=99, ssrc=0xDEAD, payload=b"\x01" * 160)
    ref.csrc = [11, 22]
    ref.padding_size = 4
    (out,), stats = both([(ref.serialize(), T0)], (FORWARD, U2A, 0, -1))
    got = RtpPacket.parse(out)
    assert (got.payload_type, got.marker, got.sequence_number, got.timestamp, got.ssrc, got.csrc, got.padding_size) == (
        8, 1, 4242, 99, 0xDEAD, [11, 22], 4,
    )  # fmt: skip
    assert got.payload == ulaw_to_alaw(b"\x01" * 160)
    assert stats["payload_bytes"] == 160


def test_drop_and_sink() -> None:
    packets = [(pkt(i, 160 * i), T0 + i * 20 * MS) for i in range(5)]
    outs, stats = both(packets, (DROP, NONE, 0, -1))
    assert outs == [] and stats["drops"]["instruction_drop"] == 5 and stats["packets"] == 5
    outs, stats = both(packets, (SINK, NONE, 0, -1), record=True)
    assert outs == [] and stats["recording"] == b"\xff" * 800


def test_repacketize_20_to_10_ms_splits_and_keeps_the_stamp() -> None:
    stamp = T0 - 3 * MS
    outs, _ = both([(pkt(100, 1600, bytes(range(160)), stamp_ns=stamp), T0)], (FORWARD, NONE, 10, -1))
    heads = [parse_rtp(o) for o in outs]
    assert [(h.sequence_number, h.timestamp, h.payload_length) for h in heads] == [(100, 1600, 80), (101, 1680, 80)]
    assert [o[-80:] for o in outs] == [bytes(range(80)), bytes(range(80, 160))]
    assert all(pure_packet.send_stamp(o, h) == stamp for o, h in zip(outs, heads))


def test_repacketize_flushes_on_a_timestamp_gap() -> None:
    packets = [(pkt(1, 0, b"a" * 160), T0), (pkt(3, 320, b"b" * 160), T0 + 40 * MS), (pkt(4, 480, b"c" * 160), T0)]
    outs, _ = both(packets, (FORWARD, NONE, 40, -1))
    heads = [parse_rtp(o) for o in outs]
    # 'a' waits for a second 20 ms; the gap before 'b' flushes it short; 'b'+'c' make 40 ms.
    assert [(h.timestamp, h.payload_length) for h in heads] == [(0, 160), (320, 320)]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\x00", "truncated"),
        (b"\x40" + bytes(11), "bad_version"),
        (b"\x8f" + bytes(20), "csrc_overrun"),
        (b"\x90" + bytes(11) + b"\xbe\xde\x00\x05", "bad_extension"),
        (b"\x90" + bytes(13), "bad_extension"),
        (b"\xa0" + bytes(12), "bad_padding"),
        (b"\xa0" + bytes(11) + b"\x05\x09", "bad_padding"),
    ],
)
def test_malformed_packets_counted_per_reason(data, reason) -> None:
    outs, stats = both([(data, T0)], (FORWARD, U2A, 0, -1))
    assert outs == [] and stats["packets"] == 0
    assert {k: v for k, v in stats["drops"].items() if v} == {reason: 1}


def test_bad_rules_are_refused_by_both() -> None:
    for rule, field in [((9, 0, 0, -1), "action"), ((0, 5, 0, -1), "transcode"), ((0, 0, 5, -1), "ptime_ms"),
                        ((0, 0, 0, 300), "payload_type")]:  # fmt: skip
        with pytest.raises(ValueError, match=field):
            _mediaengine.process([], rule, False, 0)
        with pytest.raises(ValueError, match=field):
            pure_packet.process([], rule, False, 0)


def test_huge_latencies_saturate_instead_of_overflowing() -> None:
    far = 2**62
    packets = [(pkt(i, 160 * i, stamp_ns=0), far + i) for i in range(4)]
    _, stats = both(packets, (SINK, NONE, 0, -1))
    assert stats["latency_max_ms"] == (2**36 - 1) / 1000


def test_snapshot_is_the_interval_record() -> None:
    packets = [(pkt(i, 160 * i, stamp_ns=T0 + i * MS - (i + 1) * MS), T0 + i * MS) for i in range(100)]
    _, stats = both(packets, (SINK, NONE, 0, -1))
    packets_, bytes_, ssrc, payload_size, rate, jitter, lost, latency_ms, seq = stats["snapshot"]
    assert (packets_, ssrc, payload_size, lost, seq) == (100, 7, 160.0, 0, 0)
    assert latency_ms == pytest.approx(50.5) and bytes_ == 100 * (12 + 16 + 160)

"""Pure-Python twin of the media engine's per-packet logic (``engine_core.c``).

Plain functions over a :class:`FlowCore`: :func:`receive` (parse and account a datagram in the
flow's metadata), :func:`apply` (run an instruction: forward with transcoding and
repacketization, drop, sink), :func:`snapshot` (one metadata record) and :func:`process` (a
whole packet sequence: the differential-test entry point that mirrors
``_mediaengine.process``).  They follow ``engine_core.c`` statement by statement, integer for
integer, so the differential tests demand exact equality.  :mod:`.pure_engine` runs them on a
packet thread.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

from .pure import RtpError, RtpHeader, alaw_to_ulaw, parse_rtp, ulaw_to_alaw

DROP_REASONS = (
    "truncated",
    "bad_version",
    "csrc_overrun",
    "bad_extension",
    "bad_padding",
    "unknown_flow",
    "removed_flow",
    "hold_overflow",
    "instruction_drop",
    "send_error",
    "recording_full",
)
MAX_PACKET = 2048
ACTION_FORWARD, ACTION_DROP, ACTION_SINK = 0, 1, 2
TRANSCODE_NONE, TRANSCODE_ULAW2ALAW, TRANSCODE_ALAW2ULAW = 0, 1, 2

_SEQ_MOD = 1 << 16
_MAX_DROPOUT = 3000
_MAX_MISORDER = 100
_NS_PER_TICK = 125_000  # 8 kHz media clock
_BYTES_PER_MS = 8
_M32 = 0xFFFFFFFF
_INT64_MAX = (1 << 63) - 1
_RP_CAP = 4096
_RP_EXT_CAP = 64
_HIST_SUB_BITS = 7
_HIST_HALF = 1 << (_HIST_SUB_BITS - 1)
_HIST_MAX_US = (1 << 36) - 1

#: (action, transcode, ptime_ms (0 keep), payload_type (-1 keep)): the per-packet part of a rule.
Rule = tuple[int, int, int, int]


# ------------------------------------------------------------------------ latency histogram


def hist_index(us: int) -> int:
    """Bucket of a latency in microseconds (exact below 128 us, 64 sub-buckets per octave)."""
    us = min(us, _HIST_MAX_US)
    if us < (1 << _HIST_SUB_BITS):
        return us
    e = us.bit_length() - 1 - (_HIST_SUB_BITS - 1)
    return e * _HIST_HALF + (us >> e)


def hist_lower(index: int) -> int:
    """Lowest latency (us) that falls in the bucket."""
    if index < (1 << _HIST_SUB_BITS):
        return index
    e = index // _HIST_HALF - 1
    return (index - e * _HIST_HALF) << e


def hist_upper(index: int) -> int:
    """Highest latency (us) that falls in the bucket."""
    if index < (1 << _HIST_SUB_BITS):
        return index
    e = index // _HIST_HALF - 1
    m = index - e * _HIST_HALF
    return ((m + 1) << e) - 1


@dataclass
class Histogram:
    counts: dict[int, int] = field(default_factory=dict)
    total: int = 0
    max_us: int = 0

    def record(self, us: int) -> None:
        us = min(us, _HIST_MAX_US)
        i = hist_index(us)
        self.counts[i] = self.counts.get(i, 0) + 1
        self.total += 1
        self.max_us = max(self.max_us, us)

    def buckets(self) -> list[tuple[int, int, int]]:
        """The non-empty buckets as ``(low_us, high_us, count)`` (bounds inclusive), ascending."""
        return [(hist_lower(i), hist_upper(i), self.counts[i]) for i in sorted(self.counts)]

    def percentile(self, q: float) -> int:
        if self.total == 0:
            return 0
        rank = min(max(math.ceil(q / 100.0 * self.total), 1), self.total)
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                return min(hist_upper(i), self.max_us)
        return self.max_us


# ------------------------------------------------------------------------------- flow state


@dataclass
class FlowCore:
    """The per-flow state of ``mc_flow`` in engine_core.h, field for field."""

    record: bool = False
    rec_limit: int = 0
    iv_start_ns: int = 0
    packets: int = 0
    bytes: int = 0
    payload_bytes: int = 0
    ssrc: int = 0
    seq_init: bool = False
    max_seq: int = 0
    cycles: int = 0
    base_seq: int = 0
    bad_seq: int = 0
    received: int = 0
    have_transit: bool = False
    transit: int = 0
    jitter_q4: int = 0
    iv_packets: int = 0
    iv_payload_bytes: int = 0
    iv_latency_count: int = 0
    iv_latency_sum_ns: int = 0
    record_seq: int = 0
    hist: Histogram = field(default_factory=Histogram)
    drops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    rp_buf: bytearray = field(default_factory=bytearray)
    rp_target: int = 0
    rp_ts: int = 0
    rp_seq: int = 0
    rp_seq_init: bool = False
    rp_pt: int = 0
    rp_marker: bool = False
    rp_ext: bytes = b""
    rec: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True)
class Snapshot:
    """One metadata record's numbers (``mc_snapshot``)."""

    packets: int
    bytes: int
    ssrc: int
    payload_size: float
    packet_rate: float
    jitter_ms: float
    lost: int
    latency_ms: float | None
    seq: int


def _init_seq(f: FlowCore, seq: int) -> None:
    f.base_seq = seq
    f.max_seq = seq
    f.bad_seq = _SEQ_MOD + 1
    f.cycles = 0
    f.received = 0


def update_seq(f: FlowCore, seq: int) -> None:
    """RFC 3550 A.1 (without probation)."""
    if not f.seq_init:
        f.seq_init = True
        _init_seq(f, seq)
        f.received += 1
        return
    udelta = (seq - f.max_seq) & 0xFFFF
    if udelta < _MAX_DROPOUT:
        if seq < f.max_seq:
            f.cycles = (f.cycles + _SEQ_MOD) & _M32
        f.max_seq = seq
    elif udelta <= _SEQ_MOD - _MAX_MISORDER:
        if seq == f.bad_seq:
            _init_seq(f, seq)
        else:
            f.bad_seq = (seq + 1) & (_SEQ_MOD - 1)
            return
    f.received += 1


def lost(f: FlowCore) -> int:
    """Cumulative loss, RFC 3550 A.3 (never negative)."""
    if not f.seq_init:
        return 0
    return max(f.cycles + f.max_seq - f.base_seq + 1 - f.received, 0)


def jitter_ms(f: FlowCore) -> float:
    return f.jitter_q4 / 16.0 / 8.0


def update_jitter(f: FlowCore, rtp_ts: int, arrival_ns: int) -> None:
    """RFC 3550 A.8, integer form (jitter kept times 16, 8 kHz timestamp units)."""
    arrival = (arrival_ns // _NS_PER_TICK) & _M32
    transit = (arrival - rtp_ts) & _M32
    if f.have_transit:
        d = (transit - f.transit) & _M32
        if d >= 1 << 31:
            d -= 1 << 32
        f.jitter_q4 += abs(d) - ((f.jitter_q4 + 8) >> 4)
    f.transit = transit
    f.have_transit = True


def send_stamp(data: bytes, h: RtpHeader) -> int | None:
    """The RFC 8285 one-byte element id 1 (8-byte CLOCK_MONOTONIC ns), if the packet has one."""
    if not h.extension or h.extension_profile != 0xBEDE or h.extension_data is None:
        return None
    e = h.extension_data
    i = 0
    while i < len(e):
        b = e[i]
        if b == 0:
            i += 1
            continue
        ident, length = b >> 4, (b & 0x0F) + 1
        if ident == 15 or i + 1 + length > len(e):
            break
        if ident == 1 and length == 8:
            return int.from_bytes(e[i + 1 : i + 9], "big") & _INT64_MAX
        i += 1 + length
    return None


def stamp_extension(now_ns: int) -> bytes:
    """The 16-byte extension block carrying a send-time stamp (profile 0xBEDE, 3 words)."""
    return struct.pack("!HHBQ3x", 0xBEDE, 3, 0x17, now_ns & ((1 << 64) - 1))


def _reason(message: str) -> str:
    if "too short" in message:
        return "truncated"
    if "version" in message:
        return "bad_version"
    if "CSRC" in message:
        return "csrc_overrun"
    if "extension" in message:
        return "bad_extension"
    return "bad_padding"


def _record_payload(f: FlowCore, payload: bytes) -> None:
    room = f.rec_limit - len(f.rec)
    if len(payload) > room:
        f.drops["recording_full"] += 1
        payload = payload[:room]
    f.rec += payload


def receive(f: FlowCore, data: bytes, arrival_ns: int) -> tuple[str | None, RtpHeader | None]:
    """Parse a datagram and account it (``mc_receive``): (drop reason, None) or (None, header)."""
    try:
        h = parse_rtp(data)
        if len(data) > MAX_PACKET:
            raise RtpError("packet too short for the engine's buffers")  # unreachable from a socket
    except RtpError as exc:
        reason = _reason(str(exc))
        f.drops[reason] += 1
        return reason, None
    if f.packets > 0 and h.ssrc != f.ssrc:
        f.seq_init = False
        f.have_transit = False
    f.packets += 1
    f.bytes += len(data)
    f.payload_bytes += h.payload_length
    f.ssrc = h.ssrc
    update_seq(f, h.sequence_number)
    update_jitter(f, h.timestamp, arrival_ns)
    f.iv_packets += 1
    f.iv_payload_bytes += h.payload_length
    stamp = send_stamp(data, h)
    if stamp is not None:
        latency = min(0 if stamp > arrival_ns else arrival_ns - stamp, _HIST_MAX_US * 1000)
        f.hist.record(latency // 1000)
        f.iv_latency_sum_ns = min(f.iv_latency_sum_ns + latency, _INT64_MAX)
        f.iv_latency_count += 1
    if f.record:
        _record_payload(f, data[h.payload_offset : h.payload_offset + h.payload_length])
    return None, h


def _out_payload_type(rule: Rule, pt: int) -> int:
    if rule[3] >= 0:
        return rule[3] & 0x7F
    if rule[1] == TRANSCODE_ULAW2ALAW:
        return 8
    if rule[1] == TRANSCODE_ALAW2ULAW:
        return 0
    return pt


def _transcode(how: int, payload: bytes) -> bytes:
    if how == TRANSCODE_ULAW2ALAW:
        return ulaw_to_alaw(payload)
    if how == TRANSCODE_ALAW2ULAW:
        return alaw_to_ulaw(payload)
    return payload


def _ext_block(data: bytes, h: RtpHeader) -> bytes:
    if not h.extension or h.extension_data is None:
        return b""
    length = 4 + len(h.extension_data)
    if length > _RP_EXT_CAP:
        return b""
    start = h.payload_offset - len(h.extension_data) - 4
    return data[start : start + length]


def _rp_emit(f: FlowCore, length: int) -> bytes:
    first = 0x80 | (0x10 if f.rp_ext else 0)
    second = (0x80 if f.rp_marker else 0) | f.rp_pt
    out = struct.pack("!BBHII", first, second, f.rp_seq, f.rp_ts, f.ssrc) + f.rp_ext + bytes(f.rp_buf[:length])
    f.rp_seq = (f.rp_seq + 1) & 0xFFFF
    del f.rp_buf[:length]
    f.rp_ts = (f.rp_ts + length) & _M32
    f.rp_marker = False
    return out


def apply(f: FlowCore, rule: Rule, data: bytes, h: RtpHeader) -> list[bytes]:
    """Run the rule on a packet :func:`receive` accepted (``mc_apply``); returns the output packets."""
    action, how, ptime_ms, _ = rule
    if action == ACTION_DROP:
        f.drops["instruction_drop"] += 1
        return []
    if action != ACTION_FORWARD or len(data) > MAX_PACKET:
        return []
    pt = _out_payload_type(rule, h.payload_type)
    outs: list[bytes] = []
    if not f.rp_seq_init:
        f.rp_seq = h.sequence_number
        f.rp_seq_init = True
    start, end = h.payload_offset, h.payload_offset + h.payload_length
    payload = _transcode(how, data[start:end])
    if ptime_ms <= 0:
        if f.rp_buf:
            outs.append(_rp_emit(f, len(f.rp_buf)))
        out = bytearray(data)
        out[1] = (out[1] & 0x80) | pt
        out[start:end] = payload
        outs.append(bytes(out))
        f.rp_seq = (h.sequence_number + 1) & 0xFFFF
        return outs
    target = min(ptime_ms * _BYTES_PER_MS, _RP_CAP)
    if f.rp_buf and (h.timestamp != (f.rp_ts + len(f.rp_buf)) & _M32 or target != f.rp_target or pt != f.rp_pt):
        outs.append(_rp_emit(f, len(f.rp_buf)))
    if len(f.rp_buf) + len(payload) > _RP_CAP:
        outs.append(_rp_emit(f, len(f.rp_buf)))
    if not f.rp_buf:
        f.rp_ts = h.timestamp
        f.rp_pt = pt
        f.rp_marker = h.marker
        f.rp_target = target
        f.rp_ext = _ext_block(data, h)
    f.rp_buf += payload
    while len(f.rp_buf) >= target:
        outs.append(_rp_emit(f, target))
        f.rp_ext = _ext_block(data, h)
    return outs


def snapshot(f: FlowCore, now_ns: int) -> Snapshot:
    """The metadata record of the interval ending now (``mc_snapshot_take``); resets the interval."""
    span = now_ns - f.iv_start_ns
    s = Snapshot(
        packets=f.packets,
        bytes=f.bytes,
        ssrc=f.ssrc,
        payload_size=f.iv_payload_bytes / f.iv_packets if f.iv_packets else 0.0,
        packet_rate=f.iv_packets * 1e9 / span if span > 0 else 0.0,
        jitter_ms=jitter_ms(f),
        lost=lost(f),
        latency_ms=f.iv_latency_sum_ns / f.iv_latency_count / 1e6 if f.iv_latency_count else None,
        seq=f.record_seq,
    )
    f.record_seq += 1
    f.iv_packets = f.iv_payload_bytes = f.iv_latency_count = f.iv_latency_sum_ns = 0
    f.iv_start_ns = now_ns
    return s


def _ms(h: Histogram, q: float) -> float | None:
    return None if h.total == 0 else h.percentile(q) / 1000.0


def core_stats(f: FlowCore) -> dict[str, Any]:
    """The counters of one flow, with the keys of the C ``core_stats``."""
    return {
        "packets": f.packets,
        "bytes": f.bytes,
        "payload_bytes": f.payload_bytes,
        "ssrc": f.ssrc,
        "lost": lost(f),
        "highest_seq": f.cycles + f.max_seq if f.seq_init else 0,
        "jitter_ms": jitter_ms(f),
        "latency_count": f.hist.total,
        "latency_p50_ms": _ms(f.hist, 50.0),
        "latency_p90_ms": _ms(f.hist, 90.0),
        "latency_p99_ms": _ms(f.hist, 99.0),
        "latency_p999_ms": _ms(f.hist, 99.9),
        "latency_max_ms": _ms(f.hist, 100.0),
        "latency_buckets": f.hist.buckets(),
        "recorded_bytes": len(f.rec),
        "drops": dict(f.drops),
    }


def check_rule(rule: Rule) -> None:
    action, how, ptime_ms, pt = rule
    if action not in (ACTION_FORWARD, ACTION_DROP, ACTION_SINK):
        raise ValueError(f"action: unknown code {action}")
    if how not in (TRANSCODE_NONE, TRANSCODE_ULAW2ALAW, TRANSCODE_ALAW2ULAW):
        raise ValueError(f"transcode: unknown code {how}")
    if ptime_ms != 0 and not 10 <= ptime_ms <= 200:
        raise ValueError(f"ptime_ms must be in 10..200, got {ptime_ms}")
    if not -1 <= pt <= 127:
        raise ValueError(f"payload_type must be in 0..127, got {pt}")


def process(
    packets: list[tuple[bytes, int]], rule: Rule, record: bool, recording_limit: int
) -> tuple[list[bytes], dict[str, Any]]:
    """One flow's per-packet logic over a packet sequence; twin of ``_mediaengine.process``.

    Returns the output packets and :func:`core_stats` plus ``recording`` (the recorded payload)
    and ``snapshot`` (the metadata record of the whole sequence, taken 1 ms after the last
    arrival, interval starting at 0, as a tuple in :class:`Snapshot` field order)."""
    check_rule(rule)
    f = FlowCore(record=bool(record), rec_limit=recording_limit)
    outputs: list[bytes] = []
    last = 0
    for data, arrival_ns in packets:
        last = max(last, arrival_ns)
        data = bytes(data)
        _, h = receive(f, data, arrival_ns)
        if h is not None:
            outputs += apply(f, rule, data, h)
    stats = core_stats(f)
    stats["recording"] = bytes(f.rec)
    s = snapshot(f, last + 1_000_000)  # the interval ends 1 ms after the last arrival
    stats["snapshot"] = (s.packets, s.bytes, s.ssrc, s.payload_size, s.packet_rate, s.jitter_ms, s.lost,
                         s.latency_ms, s.seq)  # fmt: skip
    return outputs, stats

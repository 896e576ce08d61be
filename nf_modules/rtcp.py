"""RTCP receiver reports (RFC 3550 sections 6.4.2, 6.5 and A.3), sans-IO.

A receiving UE sends a compound RTCP packet — RR plus SDES with its CNAME (section 6.1: every
compound packet starts with SR or RR and carries a CNAME) — every few seconds and at BYE, to
the RTP port + 1 of its peer. :class:`ReceptionState` turns the receiver's cumulative counters
(packets received, packets lost from sequence gaps) into a report block with the fraction lost
since the previous report (A.3). :func:`parse_receiver_reports` reads the report blocks back out
of a compound packet; anything malformed raises :class:`RtcpError` (a ``ValueError``).

Runs wherever it is called (a UE actor's loop); nothing here does I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "PT_RR",
    "PT_SDES",
    "PT_SR",
    "ReceptionState",
    "ReportBlock",
    "RtcpError",
    "build_receiver_report",
    "parse_receiver_reports",
]

PT_SR, PT_RR, PT_SDES = 200, 201, 202
_SDES_CNAME = 1
_MAX_CNAME = 255


class RtcpError(ValueError):
    """An RTCP packet we cannot read."""


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block (section 6.4.1); ``jitter`` in RTP timestamp units."""

    ssrc: int
    fraction_lost: int  # 0..255: lost / expected since the last report, times 256
    cumulative_lost: int  # signed 24 bits (duplicates can make it negative)
    highest_seq: int  # extended highest sequence number received
    jitter: int
    lsr: int = 0  # middle 32 bits of the last SR's NTP time (we get no SRs: 0)
    dlsr: int = 0

    def pack(self) -> bytes:
        lost = max(-0x800000, min(0x7FFFFF, self.cumulative_lost)) & 0xFFFFFF
        return struct.pack(
            "!IIIIII",
            self.ssrc,
            (self.fraction_lost & 0xFF) << 24 | lost,
            self.highest_seq & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.lsr,
            self.dlsr,
        )


class ReceptionState:
    """The reception side of one source (A.3): from cumulative counts to report blocks.

    ``report(ssrc, received, lost, highest_seq, jitter)`` makes the block for a report now and
    remembers this report's expected/received counts for the next fraction."""

    def __init__(self) -> None:
        self.expected_prior = 0
        self.received_prior = 0

    def report(self, ssrc: int, received: int, lost: int, highest_seq: int, jitter: int) -> ReportBlock:
        expected = received + lost
        expected_interval = expected - self.expected_prior
        lost_interval = expected_interval - (received - self.received_prior)
        self.expected_prior, self.received_prior = expected, received
        fraction = 0 if expected_interval <= 0 or lost_interval <= 0 else min(255, (lost_interval << 8) // expected_interval)
        return ReportBlock(ssrc, fraction, lost, highest_seq, jitter)


def _header(packet_type: int, count: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise ValueError("an RTCP packet body is a whole number of 32-bit words")
    return struct.pack("!BBH", 0x80 | count, packet_type, len(body) // 4) + body


def build_receiver_report(ssrc: int, blocks: list[ReportBlock], cname: str) -> bytes:
    """A compound RTCP packet: RR from ``ssrc`` with ``blocks`` (at most 31), then SDES CNAME."""
    if len(blocks) > 31:
        raise ValueError(f"an RR carries at most 31 report blocks, got {len(blocks)}")
    name = cname.encode()
    if not 0 < len(name) <= _MAX_CNAME:
        raise ValueError(f"CNAME must be 1..{_MAX_CNAME} bytes, got {len(name)}")
    rr = _header(PT_RR, len(blocks), struct.pack("!I", ssrc) + b"".join(b.pack() for b in blocks))
    chunk = struct.pack("!IBB", ssrc, _SDES_CNAME, len(name)) + name
    chunk += b"\x00" * (4 - len(chunk) % 4)  # the END item (a zero octet) and padding to 32 bits
    return rr + _header(PT_SDES, 1, chunk)


def parse_receiver_reports(data: bytes) -> list[tuple[int, ReportBlock]]:
    """``(reporter SSRC, block)`` for every report block of the RR and SR packets in a compound
    packet; other packet types are skipped. Raises :class:`RtcpError` on a malformed packet."""
    out: list[tuple[int, ReportBlock]] = []
    pos = 0
    if len(data) < 4:
        raise RtcpError(f"RTCP packet of {len(data)} bytes is too short")
    while pos < len(data):
        if len(data) - pos < 4:
            raise RtcpError(f"{len(data) - pos} trailing bytes after the last RTCP packet")
        first, packet_type, words = struct.unpack_from("!BBH", data, pos)
        if first >> 6 != 2:
            raise RtcpError(f"RTCP version {first >> 6}, expected 2")
        end = pos + 4 + 4 * words
        if end > len(data):
            raise RtcpError(f"RTCP length {words} words runs past the end of the datagram")
        count = first & 0x1F
        body = data[pos + 4 : end]
        if first & 0x20:  # padding: the last octet says how much
            if not body or not 0 < body[-1] <= len(body):
                raise RtcpError("bad RTCP padding")
            body = body[: -body[-1]]
        if packet_type in (PT_RR, PT_SR):
            offset = 4 if packet_type == PT_RR else 24
            if len(body) < offset + 24 * count:
                raise RtcpError(f"RTCP {packet_type} too short for {count} report blocks")
            reporter = struct.unpack_from("!I", body, 0)[0]
            for i in range(count):
                ssrc, word, highest, jitter, lsr, dlsr = struct.unpack_from("!IIIIII", body, offset + 24 * i)
                lost = word & 0xFFFFFF
                lost = lost - 0x1000000 if lost & 0x800000 else lost
                out.append((reporter, ReportBlock(ssrc, word >> 24, lost, highest, jitter, lsr, dlsr)))
        pos = end
    return out

"""Differential fuzzing: the C media core must agree with its pure-Python twin on every input.

Either both return equal values, or both raise the same kind of error with the same message.
The C side must never crash, whatever the bytes.
"""

from __future__ import annotations

import gc
import tracemalloc

from aiortc.rtp import RtpPacket
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nf_modules.mediacore import _mediacore, pure

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

U32 = st.integers(0, 2**32 - 1)


def outcome(func, *args, **kwargs):
    """('ok', value) or ('error', family, message), comparable across the two twins."""
    try:
        return ("ok", func(*args, **kwargs))
    except (_mediacore.RtpError, pure.RtpError) as exc:
        return ("error", "RtpError", str(exc))
    except (ValueError, TypeError, BufferError) as exc:
        return ("error", type(exc).__name__, str(exc))


def same(name, *args, **kwargs):
    c = outcome(getattr(_mediacore, name), *args, **kwargs)
    p = outcome(getattr(pure, name), *args, **kwargs)
    assert c == p
    return c


@st.composite
def rtp_fields(draw):
    with_ext = draw(st.booleans())
    return {
        "payload_type": draw(st.integers(0, 127)),
        "sequence_number": draw(st.integers(0, 0xFFFF)),
        "timestamp": draw(U32),
        "ssrc": draw(U32),
        "payload": draw(st.binary(max_size=200)),
        "marker": draw(st.booleans()),
        "csrcs": draw(st.lists(U32, max_size=15)),
        "extension_profile": draw(st.integers(0, 0xFFFF)) if with_ext else None,
        "extension": draw(st.binary(max_size=12).map(lambda b: b[: len(b) // 4 * 4])) if with_ext else b"",
        "padding": draw(st.integers(0, 255)),
    }


def build(fields):
    f = dict(fields)
    args = [f.pop(k) for k in ("payload_type", "sequence_number", "timestamp", "ssrc", "payload")]
    return args, f


@FUZZ
@given(st.binary(max_size=96))
def test_parse_random_bytes(data):
    same("parse_rtp", data)


@FUZZ
@given(st.binary(min_size=12, max_size=96).map(lambda b: bytes([0x80 | (b[0] & 0x3F)]) + b[1:]))
def test_parse_random_bytes_with_version_2(data):
    # Forcing V=2 gets the fuzzer past the version check into CSRC/extension/padding checks.
    same("parse_rtp", data)


@FUZZ
@given(rtp_fields())
def test_build_then_parse_round_trip(fields):
    args, kwargs = build(fields)
    packet = _mediacore.build_rtp(*args, **kwargs)
    assert packet == pure.build_rtp(*args, **kwargs)
    h = same("parse_rtp", packet)[1]
    assert (h.payload_type, h.sequence_number, h.timestamp, h.ssrc) == tuple(args[:4])
    assert h.marker == fields["marker"] and list(h.csrcs) == fields["csrcs"]
    assert h.extension_profile == fields["extension_profile"]
    assert h.extension_data == (None if fields["extension_profile"] is None else fields["extension"])
    assert h.padding == bool(fields["padding"])
    assert packet[h.payload_offset : h.payload_offset + h.payload_length] == fields["payload"]
    assert len(packet) == h.payload_offset + h.payload_length + fields["padding"]


@st.composite
def mutated_packets(draw):
    args, kwargs = build(draw(rtp_fields()))
    packet = bytearray(pure.build_rtp(*args, **kwargs))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "append", "first_byte"]))
        if op == "truncate":
            del packet[draw(st.integers(0, len(packet))) :]
        elif op == "append":
            packet += draw(st.binary(min_size=1, max_size=8))
        elif op == "first_byte" and packet:
            packet[0] = draw(st.integers(0, 255))
        elif packet:
            i = draw(st.integers(0, len(packet) - 1))
            packet[i] = packet[i] ^ (1 << draw(st.integers(0, 7))) if op == "flip" else draw(st.integers(0, 255))
    return bytes(packet)


@FUZZ
@given(mutated_packets())
def test_parse_mutated_packets(packet):
    same("parse_rtp", packet)
    same("parse_rtp", bytearray(packet))


@FUZZ
@given(mutated_packets())
def test_accept_reject_agrees_with_aiortc(packet):
    ours = outcome(_mediacore.parse_rtp, packet)
    if ours[0] == "ok" and ours[1].extension_profile in (0xBEDE, 0x1000):
        assume(False)  # aiortc also parses the RFC 8285 elements, which is not RTP-level validity
    try:
        ref = RtpPacket.parse(packet)
    except ValueError:
        assert ours[0] == "error"
        return
    assert ours[0] == "ok"
    h = ours[1]
    assert (h.payload_type, h.sequence_number, h.timestamp, h.ssrc) == (
        ref.payload_type,
        ref.sequence_number,
        ref.timestamp,
        ref.ssrc,
    )
    assert (h.marker, list(h.csrcs)) == (bool(ref.marker), ref.csrc)
    assert packet[h.payload_offset : h.payload_offset + h.payload_length] == ref.payload


@FUZZ
@given(
    st.one_of(st.integers(-(2**40), 2**40), st.sampled_from([-1, 0, 127, 128, 65535, 65536, 2**32 - 1, 2**32])),
    st.integers(-2, 2**32 + 1),
    st.lists(st.integers(-1, 2**32), max_size=17),
    st.one_of(st.none(), st.integers(-1, 0x10000)),
    st.binary(max_size=10),
    st.integers(-1, 256),
)
def test_build_argument_validation(value, ts, csrcs, profile, extension, padding):
    for pt, seq in ((value, 0), (0, value)):
        same(
            "build_rtp",
            pt,
            seq,
            ts,
            7,
            b"payload",
            csrcs=csrcs,
            extension_profile=profile,
            extension=extension,
            padding=padding,
        )


G711 = ["ulaw_to_alaw", "alaw_to_ulaw", "ulaw_to_lin16", "alaw_to_lin16", "lin16_to_ulaw", "lin16_to_alaw"]


@FUZZ
@given(st.sampled_from(G711), st.binary(max_size=512))
def test_g711_random_buffers(name, data):
    same(name, data)
    same(name, memoryview(bytearray(data)))


def test_no_reference_leaks_or_growth():
    good = pure.build_rtp(0, 1, 2, 3, b"x" * 160, csrcs=[1, 2], extension_profile=1, extension=b"abcd", padding=4)
    bad = [b"", b"\x80" * 11, b"\x00" * 12, b"\x8f" + bytes(11), b"\xa0" + bytes(11), good[:-1] + b"\x00"]

    def exercise() -> None:
        for _ in range(2000):
            _mediacore.parse_rtp(good)
            _mediacore.build_rtp(0, 1, 2, 3, b"x" * 160, csrcs=[1, 2], extension_profile=1, extension=b"abcd")
            _mediacore.ulaw_to_alaw(good)
            _mediacore.lin16_to_ulaw(good)
            for packet in bad:
                try:
                    _mediacore.parse_rtp(packet)
                except _mediacore.RtpError:
                    pass
            for kwargs in ({"csrcs": [2**32]}, {"padding": 300}, {"extension": b"abc", "extension_profile": 1}):
                try:
                    _mediacore.build_rtp(0, 0, 0, 0, b"", **kwargs)
                except ValueError:
                    pass

    exercise()  # warm caches and interned objects
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        exercise()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes retained after 2000 rounds"

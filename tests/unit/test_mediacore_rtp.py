"""RTP parse/build in the C media core and its pure-Python twin: the same tests run on both."""

from __future__ import annotations

import array
import inspect
import pickle
import struct

import pytest
from aiortc.rtp import RtpPacket

import nf_modules.mediacore as mediacore
from nf_modules.mediacore import _mediacore, pure

IMPLS = [pytest.param(_mediacore, id="c"), pytest.param(pure, id="pure")]
PUBLIC = [
    "RTP_HEADER_SIZE",
    "RtpError",
    "RtpHeader",
    "alaw_to_lin16",
    "alaw_to_ulaw",
    "build_rtp",
    "lin16_to_alaw",
    "lin16_to_ulaw",
    "parse_rtp",
    "ulaw_to_alaw",
    "ulaw_to_lin16",
]

# --- hand-made, capture-style packets (written out byte by byte, not produced by build_rtp) ---

PCMU_PAYLOAD = b"\xff\xfe\x7f\x00" * 40  # 160 samples = 20 ms of PCMU
PCMU_MARKER = (
    bytes.fromhex(
        "80"  # V=2 P=0 X=0 CC=0
        "80"  # M=1 PT=0 (PCMU)
        "1f40"  # seq 8000
        "0000a000"  # ts 40960
        "12345678"  # ssrc
    )
    + PCMU_PAYLOAD
)

PCMA_CSRC_EXT = (
    bytes.fromhex(
        "92"  # V=2 P=0 X=1 CC=2
        "08"  # M=0 PT=8 (PCMA)
        "abcd"  # seq
        "01020304"  # ts
        "cafebabe"  # ssrc
        "11111111"  # csrc 1
        "22222222"  # csrc 2
        "bede0001"  # RFC 8285 one-byte-header profile, 1 word
        "10800000"  # id=1 len=1 value 0x80 (ssrc-audio-level, voice), 2 bytes of extension padding
    )
    + b"\xd5" * 20
)

PADDED = bytes.fromhex(
    "a0"  # V=2 P=1 X=0 CC=0
    "60"  # M=0 PT=96
    "0001"  # seq 1
    "fffffff0"  # ts
    "00000001"  # ssrc
    "0102030405"  # payload
    "000003"  # 3 bytes of padding, the last one holding the count
)

EMPTY_EXTENSION = bytes.fromhex("90 ff ffff ffffffff ffffffff 1000 0000")  # X=1, 0 words, M=1 PT=127


def test_package_reexports_c_and_pure_twin():
    assert mediacore.pure is pure
    for name in PUBLIC:
        assert getattr(mediacore, name) is getattr(_mediacore, name), name
        assert hasattr(pure, name), name
    assert set(mediacore.__all__) == set(PUBLIC) | {"pure"}
    assert set(pure.__all__) == set(PUBLIC)


@pytest.mark.parametrize("name", [n for n in PUBLIC if n[0].islower()])
def test_signatures_match(name):
    c_sig = inspect.signature(getattr(_mediacore, name))
    p_sig = inspect.signature(getattr(pure, name))
    assert [(p.name, p.kind, p.default) for p in c_sig.parameters.values()] == [
        (p.name, p.kind, p.default) for p in p_sig.parameters.values()
    ]


def test_errors_are_value_errors():
    for impl in (_mediacore, pure):
        assert issubclass(impl.RtpError, ValueError)
    assert _mediacore.RtpError.__module__ == "nf_modules.mediacore._mediacore"
    assert _mediacore.RTP_HEADER_SIZE == pure.RTP_HEADER_SIZE == 12


@pytest.mark.parametrize("impl", IMPLS)
def test_pcmu_with_marker(impl):
    h = impl.parse_rtp(PCMU_MARKER)
    assert h == (2, False, False, 0, True, 0, 8000, 40960, 0x12345678, (), None, None, 12, 160)
    assert (h.marker, h.payload_type, h.sequence_number, h.timestamp, h.ssrc) == (True, 0, 8000, 40960, 0x12345678)
    assert PCMU_MARKER[h.payload_offset : h.payload_offset + h.payload_length] == PCMU_PAYLOAD
    assert impl.build_rtp(0, 8000, 40960, 0x12345678, PCMU_PAYLOAD, marker=True) == PCMU_MARKER


@pytest.mark.parametrize("impl", IMPLS)
def test_two_csrcs_and_header_extension(impl):
    h = impl.parse_rtp(PCMA_CSRC_EXT)
    assert h.version == 2 and not h.padding and h.extension and not h.marker
    assert (h.csrc_count, h.csrcs) == (2, (0x11111111, 0x22222222))
    assert (h.payload_type, h.sequence_number, h.timestamp, h.ssrc) == (8, 0xABCD, 0x01020304, 0xCAFEBABE)
    assert (h.extension_profile, h.extension_data) == (0xBEDE, bytes.fromhex("10800000"))
    assert (h.payload_offset, h.payload_length) == (12 + 8 + 4 + 4, 20)
    rebuilt = impl.build_rtp(
        8,
        0xABCD,
        0x01020304,
        0xCAFEBABE,
        b"\xd5" * 20,
        csrcs=(0x11111111, 0x22222222),
        extension_profile=0xBEDE,
        extension=bytes.fromhex("10800000"),
    )
    assert rebuilt == PCMA_CSRC_EXT


@pytest.mark.parametrize("impl", IMPLS)
def test_padding(impl):
    h = impl.parse_rtp(PADDED)
    assert h == (2, True, False, 0, False, 96, 1, 0xFFFFFFF0, 1, (), None, None, 12, 5)
    assert PADDED[h.payload_offset : h.payload_offset + h.payload_length] == b"\x01\x02\x03\x04\x05"
    assert impl.build_rtp(96, 1, 0xFFFFFFF0, 1, b"\x01\x02\x03\x04\x05", padding=3) == PADDED


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_extension_and_extremes(impl):
    h = impl.parse_rtp(EMPTY_EXTENSION)
    assert h == (2, False, True, 0, True, 127, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, (), 0x1000, b"", 16, 0)
    assert impl.build_rtp(127, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, b"", marker=True, extension_profile=0x1000) == (
        EMPTY_EXTENSION
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_fifteen_csrcs_and_padding_only_packet(impl):
    csrcs = tuple(range(1, 16))
    packet = impl.build_rtp(0, 0, 0, 0, b"", csrcs=csrcs, padding=255)
    assert len(packet) == 12 + 60 + 255 and packet[-1] == 255 and packet[0] == 0xAF
    h = impl.parse_rtp(packet)
    assert (h.csrc_count, h.csrcs, h.payload_offset, h.payload_length) == (15, csrcs, 72, 0)
    one = impl.build_rtp(0, 0, 0, 0, b"x", padding=1)
    assert one[-2:] == b"x\x01" and impl.parse_rtp(one).payload_length == 1


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview, "array", "slice"])
def test_accepts_any_bytes_like(impl, kind):
    if kind == "array":
        data = array.array("B", PCMA_CSRC_EXT)
    elif kind == "slice":  # unaligned, offset view into a bigger buffer
        data = memoryview(b"\x00" + PCMA_CSRC_EXT + b"\x00")[1:-1]
    else:
        data = kind(PCMA_CSRC_EXT)
    assert impl.parse_rtp(data) == pure.parse_rtp(PCMA_CSRC_EXT)
    assert impl.build_rtp(8, 1, 2, 3, data) == pure.build_rtp(8, 1, 2, 3, PCMA_CSRC_EXT)


@pytest.mark.parametrize("impl", IMPLS)
def test_rejects_non_buffers(impl):
    for bad in ("text", 12, None, [1, 2]):
        with pytest.raises(TypeError):
            impl.parse_rtp(bad)
        with pytest.raises(TypeError):
            impl.build_rtp(0, 0, 0, 0, bad)
    with pytest.raises(BufferError):
        impl.parse_rtp(memoryview(PCMU_MARKER)[::2])


def _with(packet: bytes, index: int, value: int) -> bytes:
    return packet[:index] + bytes([value]) + packet[index + 1 :]


MALFORMED = [
    (b"", "RTP packet too short: 0 bytes, the fixed header needs 12"),
    (PCMU_MARKER[:11], "RTP packet too short: 11 bytes, the fixed header needs 12"),
    (_with(PCMU_MARKER, 0, 0x00), "unsupported RTP version 0, expected 2"),
    (_with(PCMU_MARKER, 0, 0x40), "unsupported RTP version 1, expected 2"),
    (_with(PCMU_MARKER, 0, 0xC0), "unsupported RTP version 3, expected 2"),
    (_with(PCMU_MARKER[:12], 0, 0x81), "RTP CSRC list overflows the packet: 1 CSRCs need 16 bytes, packet has 12"),
    (
        _with(PCMU_MARKER[:40], 0, 0x8F),
        "RTP CSRC list overflows the packet: 15 CSRCs need 72 bytes, packet has 40",
    ),
    (
        PCMA_CSRC_EXT[:22],
        "RTP header extension overflows the packet: its 4-byte header needs 24 bytes, packet has 22",
    ),
    (
        PCMA_CSRC_EXT[:26],
        "RTP header extension overflows the packet: 1 words need 28 bytes, packet has 26",
    ),
    (
        EMPTY_EXTENSION[:14] + b"\xff\xff",
        "RTP header extension overflows the packet: 65535 words need 262156 bytes, packet has 16",
    ),
    (_with(PCMU_MARKER[:12], 0, 0xA0), "RTP padding bit set but no bytes follow the 12-byte header"),
    (PADDED[:-1] + b"\x00", "RTP padding count is 0"),
    (PADDED[:-1] + b"\x09", "RTP padding count 9 exceeds the 8 bytes after the 12-byte header"),
    (PADDED[:-1] + b"\xff", "RTP padding count 255 exceeds the 8 bytes after the 12-byte header"),
    (
        _with(PCMA_CSRC_EXT, 0, 0xB2)[:28] + b"\x02",
        "RTP padding count 2 exceeds the 1 bytes after the 28-byte header",
    ),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("packet", "message"), MALFORMED)
def test_malformed_packets_raise_rtp_error(impl, packet, message):
    with pytest.raises(impl.RtpError) as info:
        impl.parse_rtp(packet)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


BUILD_ERRORS = [
    ((128, 0, 0, 0, b""), {}, ValueError, "payload_type must be in 0..127, got 128"),
    ((-1, 0, 0, 0, b""), {}, ValueError, "payload_type must be in 0..127, got -1"),
    ((0, 65536, 0, 0, b""), {}, ValueError, "sequence_number must be in 0..65535, got 65536"),
    ((0, 0, 2**32, 0, b""), {}, ValueError, "timestamp must be in 0..4294967295, got 4294967296"),
    ((0, 0, 0, -1, b""), {}, ValueError, "ssrc must be in 0..4294967295, got -1"),
    ((0, 0, 0, 2**70, b""), {}, ValueError, f"ssrc must be in 0..4294967295, got {2**70}"),
    ((0, 0, 0, 0, b""), {"csrcs": range(16)}, ValueError, "at most 15 CSRCs fit in an RTP header, got 16"),
    ((0, 0, 0, 0, b""), {"csrcs": [1, 2**32]}, ValueError, "csrcs[1] must be in 0..4294967295, got 4294967296"),
    ((0, 0, 0, 0, b""), {"csrcs": 7}, TypeError, "csrcs must be an iterable of integers"),
    ((0, 0, 0, 0, b""), {"extension_profile": 65536}, ValueError, "extension_profile must be in 0..65535, got 65536"),
    ((0, 0, 0, 0, b""), {"extension": b"abcd"}, ValueError, "extension data given without extension_profile"),
    (
        (0, 0, 0, 0, b""),
        {"extension_profile": 1, "extension": b"abcdef"},
        ValueError,
        "extension length must be a multiple of 4, got 6 bytes",
    ),
    (
        (0, 0, 0, 0, b""),
        {"extension_profile": 1, "extension": bytes(4 * 65536)},
        ValueError,
        "extension too long: 262144 bytes, at most 262140",
    ),
    ((0, 0, 0, 0, b""), {"padding": 256}, ValueError, "padding must be in 0..255, got 256"),
    ((0, 0, 0, 0, b""), {"padding": -1}, ValueError, "padding must be in 0..255, got -1"),
    ((0.0, 0, 0, 0, b""), {}, TypeError, "'float' object cannot be interpreted as an integer"),
    ((0, "1", 0, 0, b""), {}, TypeError, "'str' object cannot be interpreted as an integer"),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("args", "kwargs", "error", "message"), BUILD_ERRORS)
def test_build_rtp_range_checks(impl, args, kwargs, error, message):
    with pytest.raises(error) as info:
        impl.build_rtp(*args, **kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("impl", IMPLS)
def test_build_rtp_keyword_only_and_index_protocol(impl):
    with pytest.raises(TypeError):
        impl.build_rtp(0, 0, 0, 0, b"", True)  # marker is keyword-only
    assert impl.build_rtp(True, 0, 0, 0, b"")[1] == 1  # operator.index semantics, like range()
    assert impl.build_rtp(
        payload_type=0, sequence_number=1, timestamp=2, ssrc=3, payload=b"", csrcs=iter([5])
    ) == pure.build_rtp(0, 1, 2, 3, b"", csrcs=[5])


def test_rtp_header_type():
    h = _mediacore.parse_rtp(PCMA_CSRC_EXT)
    assert isinstance(h, tuple) and len(h) == 14
    assert type(h).__name__ == "RtpHeader" and type(h) is _mediacore.RtpHeader
    assert h == pure.parse_rtp(PCMA_CSRC_EXT)  # a struct sequence equals the twin's NamedTuple
    assert _mediacore.RtpHeader.n_fields == 14
    assert list(pure.RtpHeader._fields) == [
        "version",
        "padding",
        "extension",
        "csrc_count",
        "marker",
        "payload_type",
        "sequence_number",
        "timestamp",
        "ssrc",
        "csrcs",
        "extension_profile",
        "extension_data",
        "payload_offset",
        "payload_length",
    ]
    for i, field in enumerate(pure.RtpHeader._fields):
        assert getattr(h, field) == h[i]
    assert pickle.loads(pickle.dumps(h)) == h
    with pytest.raises(AttributeError):
        h.marker = False  # type: ignore[misc]


@pytest.mark.parametrize("packet", [PCMU_MARKER, PCMA_CSRC_EXT, EMPTY_EXTENSION, PADDED])
def test_agrees_with_aiortc(packet):
    ref = RtpPacket.parse(packet)
    h = _mediacore.parse_rtp(packet)
    assert (h.payload_type, h.sequence_number, h.timestamp, h.ssrc) == (
        ref.payload_type,
        ref.sequence_number,
        ref.timestamp,
        ref.ssrc,
    )
    assert h.marker == bool(ref.marker)
    assert list(h.csrcs) == ref.csrc
    assert packet[h.payload_offset : h.payload_offset + h.payload_length] == ref.payload
    assert len(packet) - h.payload_offset - h.payload_length == ref.padding_size


def test_aiortc_parses_what_we_build():
    packet = _mediacore.build_rtp(
        111,
        4242,
        960,
        0xFEEDF00D,
        b"opus",
        marker=True,
        csrcs=[7, 8, 9],
        extension_profile=0xABCD,
        extension=b"\x01\x02\x03\x04" * 2,
        padding=4,
    )
    ref = RtpPacket.parse(packet)
    assert (ref.payload_type, ref.sequence_number, ref.timestamp, ref.ssrc) == (111, 4242, 960, 0xFEEDF00D)
    assert ref.marker == 1
    assert (ref.csrc, ref.payload, ref.padding_size) == ([7, 8, 9], b"opus", 4)
    # and the reverse: aiortc's serialiser is parsed identically by both twins
    theirs = RtpPacket(payload_type=0, marker=1, sequence_number=9, timestamp=160, ssrc=77, payload=PCMU_PAYLOAD)
    wire = theirs.serialize()
    assert _mediacore.parse_rtp(wire) == pure.parse_rtp(wire)
    assert wire == _mediacore.build_rtp(0, 9, 160, 77, PCMU_PAYLOAD, marker=True)


def test_struct_layout_is_network_order():
    packet = _mediacore.build_rtp(5, 0x0102, 0x03040506, 0x0708090A, b"", csrcs=[0x0B0C0D0E])
    assert struct.unpack("!BBHIII", packet) == (0x81, 5, 0x0102, 0x03040506, 0x0708090A, 0x0B0C0D0E)


@pytest.mark.parametrize("impl", IMPLS)
def test_csrcs_mutated_during_conversion_is_safe(impl):
    csrcs: list[object] = []

    class Shrinker:
        def __index__(self) -> int:
            csrcs.clear()  # the list is copied before conversion, so this cannot bite
            return 7

    csrcs.extend([Shrinker(), 8, 9])
    packet = impl.build_rtp(0, 0, 0, 0, b"", csrcs=csrcs)
    assert impl.parse_rtp(packet).csrcs == (7, 8, 9)

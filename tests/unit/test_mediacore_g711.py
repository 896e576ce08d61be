"""G.711 in the C media core and its pure-Python twin, against values derived independently here."""

from __future__ import annotations

import array
import bisect
import threading
import warnings

import pytest

from nf_modules.mediacore import _mediacore, pure

IMPLS = [pytest.param(_mediacore, id="c"), pytest.param(pure, id="pure")]
ALL_CODES = bytes(range(256))
ALL_SAMPLES = array.array("h", range(-32768, 32768)).tobytes()


# --- an independent derivation of G.711 (the segment/mantissa definitions, not Sun's code) ---


def ref_ulaw_decode(code: int) -> int:
    inverted = ~code & 0xFF
    exponent, mantissa = (inverted >> 4) & 7, inverted & 0x0F
    magnitude = (((2 * mantissa + 33) << exponent) - 33) * 4  # 14-bit decision midpoint, scaled to 16
    return magnitude if code & 0x80 else -magnitude


def ref_alaw_decode(code: int) -> int:
    code ^= 0x55
    exponent, mantissa = (code >> 4) & 7, code & 0x0F
    magnitude = (2 * mantissa + 1) if exponent == 0 else (2 * mantissa + 33) << (exponent - 1)
    return magnitude * 8 if code & 0x80 else -magnitude * 8  # 13-bit, scaled to 16


def ref_ulaw_encode(sample: int) -> int:
    value = sample >> 2  # keep 14 bits, as the G.711 reference encoder does
    mask = 0xFF if value >= 0 else 0x7F
    biased = min(abs(value), 8159) + 33
    exponent = biased.bit_length() - 6
    if exponent > 7:
        return 0x7F ^ mask
    mantissa = (biased >> (exponent + 1)) - 16
    return ((exponent << 4) | mantissa) ^ mask


def ref_alaw_encode(sample: int) -> int:
    value = sample >> 3  # keep 13 bits
    mask = 0xD5 if value >= 0 else 0x55
    magnitude = value if value >= 0 else -value - 1
    exponent = 0 if magnitude < 32 else magnitude.bit_length() - 5
    mantissa = (magnitude >> (1 if exponent < 2 else exponent)) & 0x0F
    return ((exponent << 4) | mantissa) ^ mask


def lin16(samples) -> bytes:
    return array.array("h", samples).tobytes()


def samples_of(buf: bytes) -> list[int]:
    out = array.array("h")
    out.frombytes(buf)
    return out.tolist()


# The G.711 mu-law <-> A-law conversion tables (ITU-T G.711 Tables 3 and 4) over all 256 codes,
# as published e.g. in spandsp's g711.c ("copied from the CCITT G.711 specification").
# fmt: off
G711_ULAW_TO_ALAW = [
     42,  43,  40,  41,  46,  47,  44,  45,  34,  35,  32,  33,  38,  39,  36,  37,
     58,  59,  56,  57,  62,  63,  60,  61,  50,  51,  48,  49,  54,  55,  52,  53,
     10,  11,   8,   9,  14,  15,  12,  13,   2,   3,   0,   1,   6,   7,   4,  26,
     27,  24,  25,  30,  31,  28,  29,  18,  19,  16,  17,  22,  23,  20,  21, 106,
    104, 105, 110, 111, 108, 109,  98,  99,  96,  97, 102, 103, 100, 101, 122, 120,
    126, 127, 124, 125, 114, 115, 112, 113, 118, 119, 116, 117,  75,  73,  79,  77,
     66,  67,  64,  65,  70,  71,  68,  69,  90,  91,  88,  89,  94,  95,  92,  93,
     82,  82,  83,  83,  80,  80,  81,  81,  86,  86,  87,  87,  84,  84,  85,  85,
    170, 171, 168, 169, 174, 175, 172, 173, 162, 163, 160, 161, 166, 167, 164, 165,
    186, 187, 184, 185, 190, 191, 188, 189, 178, 179, 176, 177, 182, 183, 180, 181,
    138, 139, 136, 137, 142, 143, 140, 141, 130, 131, 128, 129, 134, 135, 132, 154,
    155, 152, 153, 158, 159, 156, 157, 146, 147, 144, 145, 150, 151, 148, 149, 234,
    232, 233, 238, 239, 236, 237, 226, 227, 224, 225, 230, 231, 228, 229, 250, 248,
    254, 255, 252, 253, 242, 243, 240, 241, 246, 247, 244, 245, 203, 201, 207, 205,
    194, 195, 192, 193, 198, 199, 196, 197, 218, 219, 216, 217, 222, 223, 220, 221,
    210, 210, 211, 211, 208, 208, 209, 209, 214, 214, 215, 215, 212, 212, 213, 213,
]
G711_ALAW_TO_ULAW = [
     42,  43,  40,  41,  46,  47,  44,  45,  34,  35,  32,  33,  38,  39,  36,  37,
     57,  58,  55,  56,  61,  62,  59,  60,  49,  50,  47,  48,  53,  54,  51,  52,
     10,  11,   8,   9,  14,  15,  12,  13,   2,   3,   0,   1,   6,   7,   4,   5,
     26,  27,  24,  25,  30,  31,  28,  29,  18,  19,  16,  17,  22,  23,  20,  21,
     98,  99,  96,  97, 102, 103, 100, 101,  93,  93,  92,  92,  95,  95,  94,  94,
    116, 118, 112, 114, 124, 126, 120, 122, 106, 107, 104, 105, 110, 111, 108, 109,
     72,  73,  70,  71,  76,  77,  74,  75,  64,  65,  63,  63,  68,  69,  66,  67,
     86,  87,  84,  85,  90,  91,  88,  89,  79,  79,  78,  78,  82,  83,  80,  81,
    170, 171, 168, 169, 174, 175, 172, 173, 162, 163, 160, 161, 166, 167, 164, 165,
    185, 186, 183, 184, 189, 190, 187, 188, 177, 178, 175, 176, 181, 182, 179, 180,
    138, 139, 136, 137, 142, 143, 140, 141, 130, 131, 128, 129, 134, 135, 132, 133,
    154, 155, 152, 153, 158, 159, 156, 157, 146, 147, 144, 145, 150, 151, 148, 149,
    226, 227, 224, 225, 230, 231, 228, 229, 221, 221, 220, 220, 223, 223, 222, 222,
    244, 246, 240, 242, 252, 254, 248, 250, 234, 235, 232, 233, 238, 239, 236, 237,
    200, 201, 198, 199, 204, 205, 202, 203, 192, 193, 191, 191, 196, 197, 194, 195,
    214, 215, 212, 213, 218, 219, 216, 217, 207, 207, 206, 206, 210, 211, 208, 209,
]
# fmt: on


# ------------------------------------------------------------------------------ decoding ---


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("code", "expected"),
    [(0xFF, 0), (0x7F, 0), (0x00, -32124), (0x80, 32124), (0xFE, 8), (0x7E, -8), (0xEF, 132), (0x01, -31100)],
)
def test_ulaw_known_values(impl, code, expected):
    assert samples_of(impl.ulaw_to_lin16(bytes([code]))) == [expected]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("code", "expected"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24), (0xC5, 264), (0x80, 5504), (0x00, -5504)],
)
def test_alaw_known_values(impl, code, expected):
    assert samples_of(impl.alaw_to_lin16(bytes([code]))) == [expected]


@pytest.mark.parametrize("impl", IMPLS)
def test_decoders_match_reference_on_all_codes(impl):
    assert samples_of(impl.ulaw_to_lin16(ALL_CODES)) == [ref_ulaw_decode(c) for c in range(256)]
    assert samples_of(impl.alaw_to_lin16(ALL_CODES)) == [ref_alaw_decode(c) for c in range(256)]


# ------------------------------------------------------------------------------ encoding ---


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("sample", "ulaw", "alaw"),
    [
        (0, 0xFF, 0xD5),
        (-1, 0x7E, 0x55),
        (1, 0xFF, 0xD5),
        (32767, 0x80, 0xAA),
        (-32768, 0x00, 0x2A),
        (8, 0xFE, 0xD5),
        (16, 0xFD, 0xD4),
    ],
)
def test_encoder_known_values(impl, sample, ulaw, alaw):
    assert impl.lin16_to_ulaw(lin16([sample])) == bytes([ulaw])
    assert impl.lin16_to_alaw(lin16([sample])) == bytes([alaw])


@pytest.mark.parametrize("impl", IMPLS)
def test_encoders_match_reference_on_all_samples(impl):
    every = samples_of(ALL_SAMPLES)
    assert impl.lin16_to_ulaw(ALL_SAMPLES) == bytes(ref_ulaw_encode(s) for s in every)
    assert impl.lin16_to_alaw(ALL_SAMPLES) == bytes(ref_alaw_encode(s) for s in every)


@pytest.mark.parametrize("impl", IMPLS)
def test_decode_then_encode_is_identity_except_negative_zero(impl):
    # Every code survives a trip through linear, except mu-law 0x7F ("-0"), which becomes +0.
    ulaw = impl.lin16_to_ulaw(impl.ulaw_to_lin16(ALL_CODES))
    assert [c for c in range(256) if ulaw[c] != c] == [0x7F] and ulaw[0x7F] == 0xFF
    assert impl.lin16_to_alaw(impl.alaw_to_lin16(ALL_CODES)) == ALL_CODES


def test_matches_cpython_audioop_when_available():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # removed in Python 3.13
    assert _mediacore.ulaw_to_lin16(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert _mediacore.alaw_to_lin16(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)
    assert _mediacore.lin16_to_ulaw(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES, 2)
    assert _mediacore.lin16_to_alaw(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES, 2)


# --------------------------------------------------------------------------- transcoding ---


def test_transcoding_tables_c_equals_pure_on_all_codes():
    assert _mediacore.ulaw_to_alaw(ALL_CODES) == pure.ulaw_to_alaw(ALL_CODES)
    assert _mediacore.alaw_to_ulaw(ALL_CODES) == pure.alaw_to_ulaw(ALL_CODES)


@pytest.mark.parametrize("impl", IMPLS)
def test_transcoding_matches_published_g711_tables(impl):
    assert list(impl.ulaw_to_alaw(ALL_CODES)) == G711_ULAW_TO_ALAW
    assert list(impl.alaw_to_ulaw(ALL_CODES)) == G711_ALAW_TO_ULAW
    # the two entries (per sign) where Sun's original g711.c listing had typos
    assert impl.ulaw_to_alaw(bytes([47, 175])) == bytes([26, 154])
    assert impl.alaw_to_ulaw(bytes([26, 154])) == bytes([47, 175])


@pytest.mark.parametrize("impl", IMPLS)
def test_transcoding_is_monotone_and_within_one_step(impl):
    pairs = [
        (impl.ulaw_to_alaw, ref_ulaw_decode, ref_alaw_decode),
        (impl.alaw_to_ulaw, ref_alaw_decode, ref_ulaw_decode),
    ]
    for convert, decode_src, decode_dst in pairs:
        out = convert(ALL_CODES)
        levels = sorted({decode_dst(c) for c in range(256)})
        by_level = sorted(range(256), key=decode_src)
        converted = [decode_dst(out[c]) for c in by_level]
        assert converted == sorted(converted)  # order preserving
        for code in range(256):
            value, got = decode_src(code), decode_dst(out[code])
            i = bisect.bisect_left(levels, value)
            neighbours = set(levels[max(i - 1, 0) : i + 1])
            assert got in neighbours, (code, value, got)  # one of the two levels around the input


# ------------------------------------------------------------------ buffers and errors ---


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", ["lin16_to_ulaw", "lin16_to_alaw"])
@pytest.mark.parametrize("size", [1, 3, 321])
def test_odd_lin16_length_is_value_error(impl, name, size):
    with pytest.raises(ValueError) as info:
        getattr(impl, name)(bytes(size))
    assert str(info.value) == f"lin16 buffer length must be even, got {size} bytes"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "name", ["ulaw_to_alaw", "alaw_to_ulaw", "ulaw_to_lin16", "alaw_to_lin16", "lin16_to_ulaw", "lin16_to_alaw"]
)
def test_empty_and_buffer_kinds(impl, name):
    func = getattr(impl, name)
    assert func(b"") == b""
    data = bytes(range(200)) + bytes(range(56))
    expected = func(data)
    assert func(bytearray(data)) == expected
    assert func(memoryview(b"\x01" + data)[1:]) == expected  # unaligned view
    assert func(array.array("h", samples_of(data))) == expected  # the raw bytes of any buffer
    with pytest.raises(TypeError):
        func("not bytes")
    with pytest.raises(BufferError):
        func(memoryview(data)[::2])


@pytest.mark.parametrize(
    "name", ["ulaw_to_alaw", "alaw_to_ulaw", "ulaw_to_lin16", "alaw_to_lin16", "lin16_to_ulaw", "lin16_to_alaw"]
)
def test_large_buffers_released_gil_path(name):
    # >= 16 KiB goes through the GIL-released loop; run it from several threads at once.
    c_func, pure_func = getattr(_mediacore, name), getattr(pure, name)
    data = ALL_SAMPLES[:65536] if name.startswith("lin16") else ALL_CODES * 256
    expected = pure_func(data)
    results: list[bytes] = []

    def work() -> None:
        for _ in range(5):
            results.append(c_func(data))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20 and all(r == expected for r in results)

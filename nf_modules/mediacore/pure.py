"""Pure-Python twin of the C media core (:mod:`nf_modules.mediacore._mediacore`).

The twin is the *reference* implementation: it is written to be obviously right, not fast.
Every function here has exactly the name, signature, return value, error type and error
message of its C counterpart, and the differential and fuzz tests assert that both agree on
every input (including malformed ones).  Read this file to learn what the C code does; use it
to debug a packet by hand; never put it on the per-packet path.

G.711 follows the ITU-T reference algorithm as published in Sun's ``g711.c`` (and used by
CPython's former ``audioop`` module): decoding is exact, encoding truncates 16-bit linear
samples to 14 bits (mu-law) or 13 bits (A-law) first, and mu-law <-> A-law transcoding uses the
G.711 conversion tables (with the two errata corrected), not a round trip through linear.
"""

from __future__ import annotations

import operator
import struct
from array import array
from collections.abc import Iterable
from typing import NamedTuple, TypeAlias

#: What the C side accepts through ``y*``: any C-contiguous bytes-like object.
BytesLike: TypeAlias = bytes | bytearray | memoryview

__all__ = [
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

RTP_HEADER_SIZE = 12
_U32_MAX = 0xFFFFFFFF


class RtpError(ValueError):
    """A malformed RTP packet (RFC 3550 section 5.1)."""


class RtpHeader(NamedTuple):
    """The parsed fixed header, CSRC list and header extension of an RTP packet.

    ``payload_offset``/``payload_length`` locate the payload inside the parsed buffer;
    trailing padding (when ``padding`` is set) is excluded from ``payload_length``.
    ``extension_profile``/``extension_data`` are ``None`` when the X bit is clear.
    """

    version: int
    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    csrcs: tuple[int, ...]
    extension_profile: int | None
    extension_data: bytes | None
    payload_offset: int
    payload_length: int


def _buffer(obj: object) -> bytes:
    """Bytes of a C-contiguous bytes-like object, refusing what the C ``y*`` converter refuses."""
    try:
        view = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(obj).__name__}'") from None
    with view:
        if not view.c_contiguous:
            raise BufferError("memoryview: underlying buffer is not C-contiguous")
        return view.tobytes()


def _uint(name: str, value: object, maximum: int) -> int:
    number = operator.index(value)  # type: ignore[arg-type]
    if not 0 <= number <= maximum:
        raise ValueError(f"{name} must be in 0..{maximum}, got {number}")
    return number


# --------------------------------------------------------------------------------------- RTP


def parse_rtp(data: BytesLike, /) -> RtpHeader:
    """Parse and strictly validate an RTP packet; raise :class:`RtpError` if malformed."""
    buf = _buffer(data)
    size = len(buf)
    if size < RTP_HEADER_SIZE:
        raise RtpError(f"RTP packet too short: {size} bytes, the fixed header needs {RTP_HEADER_SIZE}")
    version = buf[0] >> 6
    if version != 2:
        raise RtpError(f"unsupported RTP version {version}, expected 2")
    padding = bool(buf[0] & 0x20)
    extension = bool(buf[0] & 0x10)
    csrc_count = buf[0] & 0x0F
    marker = bool(buf[1] & 0x80)
    payload_type = buf[1] & 0x7F
    sequence_number, timestamp, ssrc = struct.unpack_from("!HII", buf, 2)

    offset = RTP_HEADER_SIZE + 4 * csrc_count
    if offset > size:
        raise RtpError(f"RTP CSRC list overflows the packet: {csrc_count} CSRCs need {offset} bytes, packet has {size}")
    csrcs = struct.unpack_from(f"!{csrc_count}I", buf, RTP_HEADER_SIZE)

    extension_profile: int | None = None
    extension_data: bytes | None = None
    if extension:
        if offset + 4 > size:
            raise RtpError(
                "RTP header extension overflows the packet: "
                f"its 4-byte header needs {offset + 4} bytes, packet has {size}"
            )
        extension_profile, words = struct.unpack_from("!HH", buf, offset)
        start = offset + 4
        offset = start + 4 * words
        if offset > size:
            raise RtpError(
                f"RTP header extension overflows the packet: {words} words need {offset} bytes, packet has {size}"
            )
        extension_data = buf[start:offset]

    payload_length = size - offset
    if padding:
        if payload_length == 0:
            raise RtpError(f"RTP padding bit set but no bytes follow the {offset}-byte header")
        count = buf[-1]
        if count == 0:
            raise RtpError("RTP padding count is 0")
        if count > payload_length:
            raise RtpError(
                f"RTP padding count {count} exceeds the {payload_length} bytes after the {offset}-byte header"
            )
        payload_length -= count

    return RtpHeader(
        version,
        padding,
        extension,
        csrc_count,
        marker,
        payload_type,
        sequence_number,
        timestamp,
        ssrc,
        csrcs,
        extension_profile,
        extension_data,
        offset,
        payload_length,
    )


def build_rtp(
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    payload: BytesLike,
    *,
    marker: bool = False,
    csrcs: Iterable[int] = (),
    extension_profile: int | None = None,
    extension: BytesLike = b"",
    padding: int = 0,
) -> bytes:
    """Serialise an RTP packet; every field is range-checked (``ValueError``).

    ``extension`` is the header-extension body (a multiple of 4 bytes) and needs
    ``extension_profile``; ``extension_profile`` alone sets the X bit with an empty body.
    ``padding`` is the total number of padding bytes (0..255) including the count byte.
    """
    # Same order as the C argument parser: buffers and truthiness first, then values.
    body = _buffer(payload)
    marker = bool(marker)
    ext = _buffer(extension)
    pt = _uint("payload_type", payload_type, 0x7F)
    seq = _uint("sequence_number", sequence_number, 0xFFFF)
    ts = _uint("timestamp", timestamp, _U32_MAX)
    source = _uint("ssrc", ssrc, _U32_MAX)
    try:
        csrc_iter = iter(csrcs)
    except TypeError:
        raise TypeError("csrcs must be an iterable of integers") from None
    csrc_items = tuple(csrc_iter)
    if len(csrc_items) > 15:
        raise ValueError(f"at most 15 CSRCs fit in an RTP header, got {len(csrc_items)}")
    csrc_values = [_uint(f"csrcs[{i}]", item, _U32_MAX) for i, item in enumerate(csrc_items)]
    profile = None if extension_profile is None else _uint("extension_profile", extension_profile, 0xFFFF)
    if profile is None and ext:
        raise ValueError("extension data given without extension_profile")
    if len(ext) % 4:
        raise ValueError(f"extension length must be a multiple of 4, got {len(ext)} bytes")
    if len(ext) > 4 * 0xFFFF:
        raise ValueError(f"extension too long: {len(ext)} bytes, at most {4 * 0xFFFF}")
    pad = _uint("padding", padding, 0xFF)

    first = 0x80 | (0x20 if pad else 0) | (0x10 if profile is not None else 0) | len(csrc_values)
    parts = [struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq, ts, source)]
    parts.append(struct.pack(f"!{len(csrc_values)}I", *csrc_values))
    if profile is not None:
        parts.append(struct.pack("!HH", profile, len(ext) // 4))
        parts.append(ext)
    parts.append(body)
    if pad:
        parts.append(bytes(pad - 1) + bytes([pad]))
    return b"".join(parts)


# ------------------------------------------------------------------------------------- G.711

_SIGN_BIT = 0x80
_QUANT_MASK = 0x0F
_SEG_MASK = 0x70
_SEG_SHIFT = 4
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159  # 14-bit magnitude
_SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)  # 14-bit mu-law segment ends
_SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)  # 13-bit A-law segment ends


def _segment(value: int, ends: tuple[int, ...]) -> int:
    for seg, end in enumerate(ends):
        if value <= end:
            return seg
    return len(ends)


def _ulaw_decode(code: int) -> int:
    code = ~code & 0xFF
    t = (((code & _QUANT_MASK) << 3) + _ULAW_BIAS) << ((code & _SEG_MASK) >> _SEG_SHIFT)
    return _ULAW_BIAS - t if code & _SIGN_BIT else t - _ULAW_BIAS


def _alaw_decode(code: int) -> int:
    code ^= 0x55
    t = (code & _QUANT_MASK) << 4
    seg = (code & _SEG_MASK) >> _SEG_SHIFT
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if code & _SIGN_BIT else -t


def _ulaw_encode(sample: int) -> int:
    pcm = sample >> 2  # 16-bit -> 14-bit (floor, like C's arithmetic shift)
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    else:
        mask = 0xFF
    pcm = min(pcm, _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = _segment(pcm, _SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & _QUANT_MASK)) ^ mask


def _alaw_encode(sample: int) -> int:
    pcm = sample >> 3  # 16-bit -> 13-bit
    if pcm >= 0:
        mask = 0xD5
    else:
        pcm, mask = -pcm - 1, 0x55
    seg = _segment(pcm, _SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    quant = (pcm >> 1) if seg < 2 else (pcm >> seg)
    return ((seg << 4) | (quant & _QUANT_MASK)) ^ mask


# ITU-T G.711 Tables 3 and 4 in Sun's compact form: _U2A[m] - 1 is the A-law magnitude for
# mu-law magnitude m, _A2U[m] the mu-law magnitude for A-law magnitude m.  Sun's original
# listing had two typos ("81" at _U2A[80], "79" at _A2U[79]); these are the corrected values.
# fmt: off
_U2A = (
    1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8,
    9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
    25, 27, 29, 31, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44,
    46, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62,
    64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79,
    80, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96,
    97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112,
    113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128,
)
_A2U = (
    1, 3, 5, 7, 9, 11, 13, 15, 16, 17, 18, 19, 20, 21, 22, 23,
    24, 25, 26, 27, 28, 29, 30, 31, 32, 32, 33, 33, 34, 34, 35, 35,
    36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 48, 49, 49,
    50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 64,
    65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80,
    80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95,
    96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
    112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127,
)
# fmt: on


def _ulaw_to_alaw_code(code: int) -> int:
    if code & 0x80:
        return 0xD5 ^ (_U2A[0xFF ^ code] - 1)
    return 0x55 ^ (_U2A[0x7F ^ code] - 1)


def _alaw_to_ulaw_code(code: int) -> int:
    if code & 0x80:
        return 0xFF ^ _A2U[0xD5 ^ code]
    return 0x7F ^ _A2U[0x55 ^ code]


_ULAW_TO_ALAW = bytes(_ulaw_to_alaw_code(c) for c in range(256))
_ALAW_TO_ULAW = bytes(_alaw_to_ulaw_code(c) for c in range(256))
_ULAW_TO_LIN = tuple(_ulaw_decode(c) for c in range(256))
_ALAW_TO_LIN = tuple(_alaw_decode(c) for c in range(256))


def _samples(buf: BytesLike) -> array[int]:
    data = _buffer(buf)
    if len(data) % 2:
        raise ValueError(f"lin16 buffer length must be even, got {len(data)} bytes")
    samples = array("h")
    samples.frombytes(data)  # native byte order, like the C side
    return samples


def ulaw_to_alaw(buf: BytesLike, /) -> bytes:
    """Transcode G.711 mu-law to A-law with the G.711 conversion table."""
    return _buffer(buf).translate(_ULAW_TO_ALAW)


def alaw_to_ulaw(buf: BytesLike, /) -> bytes:
    """Transcode G.711 A-law to mu-law with the G.711 conversion table."""
    return _buffer(buf).translate(_ALAW_TO_ULAW)


def ulaw_to_lin16(buf: BytesLike, /) -> bytes:
    """Decode mu-law to native-endian signed 16-bit samples."""
    return array("h", [_ULAW_TO_LIN[c] for c in _buffer(buf)]).tobytes()


def alaw_to_lin16(buf: BytesLike, /) -> bytes:
    """Decode A-law to native-endian signed 16-bit samples."""
    return array("h", [_ALAW_TO_LIN[c] for c in _buffer(buf)]).tobytes()


def lin16_to_ulaw(buf: BytesLike, /) -> bytes:
    """Encode native-endian signed 16-bit samples to mu-law."""
    return bytes(_ulaw_encode(s) for s in _samples(buf))


def lin16_to_alaw(buf: BytesLike, /) -> bytes:
    """Encode native-endian signed 16-bit samples to A-law."""
    return bytes(_alaw_encode(s) for s in _samples(buf))

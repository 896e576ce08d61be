"""Type stub for the C media core; nf_modules/mediacore/pure.py is its executable twin."""

from collections.abc import Iterable
from typing import Any, Final, final

from _typeshed import ReadableBuffer, structseq

RTP_HEADER_SIZE: Final[int]

class RtpError(ValueError):
    """A malformed RTP packet (RFC 3550 section 5.1)."""

@final
class RtpHeader(
    structseq[Any],
    tuple[
        int,  # version
        bool,  # padding
        bool,  # extension
        int,  # csrc_count
        bool,  # marker
        int,  # payload_type
        int,  # sequence_number
        int,  # timestamp
        int,  # ssrc
        tuple[int, ...],  # csrcs
        int | None,  # extension_profile
        bytes | None,  # extension_data
        int,  # payload_offset
        int,  # payload_length
    ],
):
    """The parsed header of an RTP packet; a tuple of 14 fields."""

    __match_args__: Final = (
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
    )

    @property
    def version(self) -> int: ...
    @property
    def padding(self) -> bool: ...
    @property
    def extension(self) -> bool: ...
    @property
    def csrc_count(self) -> int: ...
    @property
    def marker(self) -> bool: ...
    @property
    def payload_type(self) -> int: ...
    @property
    def sequence_number(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def ssrc(self) -> int: ...
    @property
    def csrcs(self) -> tuple[int, ...]: ...
    @property
    def extension_profile(self) -> int | None: ...
    @property
    def extension_data(self) -> bytes | None: ...
    @property
    def payload_offset(self) -> int: ...
    @property
    def payload_length(self) -> int: ...

def parse_rtp(data: ReadableBuffer, /) -> RtpHeader: ...
def build_rtp(
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    payload: ReadableBuffer,
    *,
    marker: bool = False,
    csrcs: Iterable[int] = (),
    extension_profile: int | None = None,
    extension: ReadableBuffer = b"",
    padding: int = 0,
) -> bytes: ...
def ulaw_to_alaw(buf: ReadableBuffer, /) -> bytes: ...
def alaw_to_ulaw(buf: ReadableBuffer, /) -> bytes: ...
def ulaw_to_lin16(buf: ReadableBuffer, /) -> bytes: ...
def alaw_to_lin16(buf: ReadableBuffer, /) -> bytes: ...
def lin16_to_ulaw(buf: ReadableBuffer, /) -> bytes: ...
def lin16_to_alaw(buf: ReadableBuffer, /) -> bytes: ...

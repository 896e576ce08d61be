"""The C media core and its pure-Python reference twin.

The names exported here are the C implementations from :mod:`._mediacore` (see the
"The C media core" section of DESIGN.md).  :mod:`.pure` (also reachable as ``pure``) has
exactly the same API in plain Python; it is the reference the differential and fuzz tests
hold the C code to.  The two ``RtpError`` classes are distinct, but both subclass
``ValueError``: catch ``ValueError`` when either implementation may be in use.

The media engine (the Media Processor's packet loop on its own thread) is in :mod:`.engine`
(``MediaEngine``, ``Instruction``, ``Metadata``, ``FlowStats``); its C side is ``_mediaengine``
(``_mediaengine.c`` + ``engine_core.c``, sharing ``rtp_g711.h`` with ``_mediacore``) and its
pure-Python twin :mod:`.pure_engine` (per packet: :mod:`.pure_packet`).  They are not imported
here, so importing the building blocks never loads the engine.
"""

from . import pure
from ._mediacore import (
    RTP_HEADER_SIZE,
    RtpError,
    RtpHeader,
    alaw_to_lin16,
    alaw_to_ulaw,
    build_rtp,
    lin16_to_alaw,
    lin16_to_ulaw,
    parse_rtp,
    ulaw_to_alaw,
    ulaw_to_lin16,
)

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
    "pure",
    "ulaw_to_alaw",
    "ulaw_to_lin16",
]

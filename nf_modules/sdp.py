"""SDP helpers for the AS Media Policy and the MRFC: read media addresses, rewrite them, build
the MRF's answer.

A B2BUA that anchors media at the MRFP changes two things in an SDP body and nothing else: the
connection address (``c=``) and the port of the audio stream (``m=``). aiosipua's
``parse_sdp``/``serialize_sdp`` round trip is lossy for that purpose (it regroups ``a=`` lines
by name, drops ``i=``/``u=``/``e=``/``k=``/``r=``/``z=`` lines and normalises spacing), so this
module works line by line on the body and leaves every other byte as it was, line endings
included. ``tests/unit/test_sdp.py`` checks the readings against aiosipua's parser on the same
bodies.

Rules of :func:`rewrite_audio` (``host``, ``port``: the MRFP's address for the receiving UE):

* the first audio stream with a non-zero port is *the* stream: its ``m=`` port becomes ``port``
  (a ``/<count>`` suffix is dropped), its media-level ``c=`` (if any) and the session-level
  ``c=`` (if any) get ``IN IP4 host`` (``IP6`` for an IPv6 host; a multicast TTL is dropped),
  and its ``a=rtcp:`` line (RFC 3605, a port of the UE's) is removed;
* every other stream gets port 0 (RFC 3264 section 6: disabled), since the MRFP relays one
  audio stream;
* ``o=`` is left alone.

The MRF's own SDP (the 200 the MRFC sends the AS, :func:`mrf_answer`) carries *two* audio
streams, one per side of the bridge, told apart by RFC 4574 labels::

    m=audio <A port> RTP/AVP 0 8      a=label:A   where UE-A (the caller) sends its media
    m=audio <B port> RTP/AVP 0 8      a=label:B   where UE-B (the callee) sends its media

This is a private AS <-> MRF convention: the answer has one more stream than the offer (the
caller's SDP), which RFC 3264 section 6 would not allow between two UAs. :func:`mrf_sides`
reads it back.

Bad input raises :class:`SdpError` (a ``ValueError``) with the line number; nothing here does
I/O. Runs wherever it is called (the AS's and the MRFC's actor loops).

A call's bodies are read several times (the Media Policy reads the caller's offer, the MRFC
builds its answer from it, the Media Policy rewrites it...), so the split lines and streams of
the last few hundred distinct bodies are kept, keyed by the body's bytes (immutable entries,
oldest dropped first); readings and rewrites are the same as without the cache.
"""

from __future__ import annotations

import re
from functools import lru_cache
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_SDP_SIZE",
    "MediaStream",
    "SdpError",
    "audio_address",
    "is_sdp",
    "mrf_answer",
    "mrf_sides",
    "parse_streams",
    "rewrite_audio",
]

MAX_SDP_SIZE = 65535
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HOST_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:")
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_CACHE_SIZE = 256  # distinct bodies kept (see _body)
_CACHE_BODY_MAX = 4096  # bytes; a bigger body is split every time rather than kept


class SdpError(ValueError):
    """An SDP body this module cannot read (the message says which line and why)."""


@dataclass(frozen=True, slots=True)
class MediaStream:
    """One ``m=`` section: its media type, port, protocol, formats, effective connection
    address (the media-level ``c=`` or else the session-level one; ``None`` if neither),
    RFC 4574 label, and its ``a=`` values as written (without ``a=``)."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    host: str | None
    label: str | None
    attributes: tuple[str, ...]


# A line is the tuple ``(number, kind, value, content, eol)``: its 1-based number, its type
# letter ("" for an empty line), what follows ``<type>=``, the whole line without its line
# ending (``content``, "" for an empty line) and that line ending ("\r\n", "\n", or "" for a
# last line without one). Plain tuples: a body is split once per distinct body (see _split).
_Line = tuple[int, str, str, str, str]


class _Body:
    """One body split into lines: ``session`` (the lines before the first ``m=``) and
    ``sections`` (one list per ``m=``, the ``m=`` line first), never changed once built;
    ``streams``: its :func:`parse_streams` reading once made (``None`` before)."""

    __slots__ = ("session", "sections", "streams")

    def __init__(self, session: list[_Line], sections: list[list[_Line]]) -> None:
        self.session = session
        self.sections = sections
        self.streams: tuple[MediaStream, ...] | None = None


# The same body is read several times per call (the AS Media Policy reads the caller's offer
# and then rewrites it; the MRFC reads it for its answer; 2xx retransmissions come again), each
# time from a fresh bytes object of the same value. The split (and the streams) of the last
# distinct bodies are kept by value; call bodies are a few hundred bytes (bigger ones are not
# kept) and the entries immutable. The least recently used go first. Bodies that do not split
# are not kept (they raise again).
def _body(body: bytes) -> _Body:
    """``body`` split into lines (from the cache when the same bytes were split lately)."""
    if type(body) is not bytes:
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise TypeError(f"an SDP body is bytes, not {type(body).__name__}")
        body = bytes(body)
    return _split_kept(body) if len(body) <= _CACHE_BODY_MAX else _split(body)


def _split(body: bytes) -> _Body:
    """Split and check every line (``<letter>=<value>``, ``v=0`` first); raises SdpError."""
    if not body:
        raise SdpError("empty SDP body")
    if len(body) > MAX_SDP_SIZE:
        raise SdpError(f"SDP body of {len(body)} bytes is over {MAX_SDP_SIZE}")
    pieces = body.decode("utf-8", "surrogateescape").split("\n")
    last = len(pieces) - 1
    session: list[_Line] = []
    sections: list[list[_Line]] = []
    current = session
    first = None
    for i, content in enumerate(pieces):
        # Line endings are "\r\n" or a bare "\n"; a lone "\r" is part of the line.
        if i == last:
            eol = ""
        elif content[-1:] == "\r":
            content, eol = content[:-1], "\r\n"
        else:
            eol = "\n"
        if not content:
            if eol:
                current.append((i + 1, "", "", "", eol))
            continue
        kind = content[0]
        if content[1:2] != "=" or kind not in _LETTERS:
            raise SdpError(f"line {i + 1}: not <type>=<value>: {content[:40]!r}")
        line = (i + 1, kind, content[2:], content, eol)
        if first is None:
            first = line
        if kind == "m":
            current = [line]
            sections.append(current)
        else:
            current.append(line)
    if first is None or first[1] != "v" or first[2] != "0":
        raise SdpError("an SDP body starts with v=0")
    return _Body(session, sections)


_split_kept = lru_cache(maxsize=_CACHE_SIZE)(_split)


def _connection_host(number: int, value: str) -> str:
    parts = value.split(" ")
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"line {number}: c= is not 'IN IP4|IP6 <address>': {value[:60]!r}")
    host = parts[2].split("/", 1)[0]
    if not host or not _HOST_CHARS.issuperset(host):
        raise SdpError(f"line {number}: bad connection address {parts[2][:60]!r}")
    return host


def _media_fields(number: int, value: str) -> tuple[str, int, str, tuple[str, ...]]:
    parts = value.split(" ")
    if len(parts) < 4 or not all(parts):
        raise SdpError(f"line {number}: m= is not '<media> <port> <proto> <fmt> ...': {value[:60]!r}")
    media, port_text, proto = parts[0], parts[1].split("/", 1)[0], parts[2]
    if not _TOKEN.fullmatch(media) or not _TOKEN.fullmatch(proto.replace("/", "")):
        raise SdpError(f"line {number}: bad media or protocol in {value[:60]!r}")
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
        raise SdpError(f"line {number}: bad port {parts[1][:12]!r}")
    return media, int(port_text), proto, tuple(parts[3:])


def _session_host(session: list[_Line]) -> str | None:
    hosts = [_connection_host(number, value) for number, kind, value, _, _ in session if kind == "c"]
    if len(hosts) > 1:
        raise SdpError("more than one session-level c= line")
    return hosts[0] if hosts else None


def _streams(parsed: _Body) -> tuple[MediaStream, ...]:
    """The streams of a split body (read once, then kept with it). Raises SdpError."""
    streams = parsed.streams
    if streams is None:
        default_host = _session_host(parsed.session)
        found = []
        for section in parsed.sections:
            number, _, value, _, _ = section[0]
            media, port, proto, formats = _media_fields(number, value)
            host = label = None
            attributes = []
            for n, kind, v, _, _ in section:
                if kind == "c":  # every one is checked; the first is the stream's
                    own = _connection_host(n, v)
                    if host is None:
                        host = own
                elif kind == "a":
                    attributes.append(v)
                    if label is None and v.startswith("label:"):
                        label = v[6:]
            found.append(MediaStream(media, port, proto, formats, host if host is not None else default_host,
                                     label, tuple(attributes)))
        streams = parsed.streams = tuple(found)
    return streams


def parse_streams(body: bytes) -> list[MediaStream]:
    """The media streams of ``body``, in order. Raises :class:`SdpError`."""
    return list(_streams(_body(body)))


def _audio_index(streams: Sequence[MediaStream]) -> int:
    for i, stream in enumerate(streams):
        if stream.media == "audio" and stream.port != 0:
            if stream.host is None:
                raise SdpError(f"audio stream {i + 1} has no connection address (no c= line)")
            return i
    raise SdpError("no active audio stream (m=audio with a non-zero port)")


def audio_address(body: bytes) -> tuple[str, int]:
    """``(host, port)`` where the sender of ``body`` receives its audio. Raises :class:`SdpError`."""
    streams = _streams(_body(body))
    stream = streams[_audio_index(streams)]
    return stream.host, stream.port  # type: ignore[return-value]


def _connection_value(host: str) -> str:
    return f"IN {'IP6' if ':' in host else 'IP4'} {host}"


def rewrite_audio(body: bytes, host: str, port: int) -> bytes:
    """``body`` with its audio stream moved to ``host:port`` (see the module docstring)."""
    if not host or not _HOST_CHARS.issuperset(host):
        raise ValueError(f"bad host {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
        raise ValueError(f"bad port {port!r}")
    parsed = _body(body)
    session, sections = parsed.session, parsed.sections
    try:
        # A body parse_streams reads passes every check below with the same hosts and ports.
        target = _audio_index(_streams(parsed))
    except SdpError:
        # Rewriting checks less than parse_streams (only each section's first c=): do exactly
        # its checks, in its order.
        default_host = _session_host(session)
        streams = []
        for section in sections:
            number, _, value, _, _ = section[0]
            own = [(n, v) for n, kind, v, _, _ in section if kind == "c"]
            own_host = _connection_host(*own[0]) if own else default_host
            streams.append(MediaStream(*_media_fields(number, value), own_host, None, ()))
        target = _audio_index(streams)
    connection = f"c={_connection_value(host)}"
    out: list[str] = []
    for _, kind, _, content, eol in session:
        out.append(connection if kind == "c" else content)
        out.append(eol)
    for i, section in enumerate(sections):
        _, _, value, _, eol = section[0]
        fields = value.split(" ")
        fields[1] = str(port) if i == target else "0"
        out.append("m=" + " ".join(fields))
        out.append(eol)
        for _, kind, value, content, eol in section[1:]:
            if i == target and kind == "c":
                out.append(connection)
            elif i == target and kind == "a" and value.startswith("rtcp:"):
                continue
            else:
                out.append(content)
            out.append(eol)
    return "".join(out).encode("utf-8", "surrogateescape")


def mrf_answer(
    host: str, a_port: int, b_port: int, *, offer: bytes | None = None, version: int = 1
) -> bytes:
    """The MRF's SDP: two audio streams labelled ``A`` and ``B`` on ``host``.

    The formats (and their ``rtpmap``/``fmtp`` attributes) are the offer's audio stream's when
    an ``offer`` is given, else PCMU and PCMA. ``version`` goes into ``o=``.
    """
    for name, port in (("a_port", a_port), ("b_port", b_port)):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
            raise ValueError(f"bad {name} {port!r}")
    if not host or not _HOST_CHARS.issuperset(host):
        raise ValueError(f"bad host {host!r}")
    formats: tuple[str, ...] = ("0", "8")
    attributes: list[str] = ["rtpmap:0 PCMU/8000", "rtpmap:8 PCMA/8000"]
    if offer is not None:
        streams = _streams(_body(offer))
        stream = streams[_audio_index(streams)]
        formats = stream.formats
        attributes = [a for a in stream.attributes if a.startswith(("rtpmap:", "fmtp:"))]
    connection = _connection_value(host)
    lines = ["v=0", f"o=mrf {version} {version} {connection}", "s=mrf", f"c={connection}", "t=0 0"]
    for label, port in (("A", a_port), ("B", b_port)):
        lines.append(f"m=audio {port} RTP/AVP {' '.join(formats)}")
        lines.extend(f"a={a}" for a in attributes)
        lines.append(f"a=label:{label}")
    return ("\r\n".join(lines) + "\r\n").encode()


def mrf_sides(body: bytes) -> dict[str, tuple[str, int]]:
    """``{"A": (host, port), "B": (host, port)}`` from an MRF answer. Raises :class:`SdpError`."""
    sides: dict[str, tuple[str, int]] = {}
    for stream in _streams(_body(body)):
        if stream.media != "audio" or stream.label not in ("A", "B"):
            continue
        if stream.label in sides:
            raise SdpError(f"two audio streams labelled {stream.label}")
        if stream.port == 0 or stream.host is None:
            raise SdpError(f"audio stream {stream.label} has no address")
        sides[stream.label] = (stream.host, stream.port)
    missing = {"A", "B"} - set(sides)
    if missing:
        raise SdpError(f"no audio stream labelled {' or '.join(sorted(missing))}")
    return sides


def is_sdp(message: object) -> bool:
    """Whether a ``SipMessage`` carries an SDP body (Content-Type ``application/sdp``)."""
    body = getattr(message, "body", b"")
    if not body:
        return False
    content_type = message.get("Content-Type")  # type: ignore[attr-defined]
    if content_type is None:
        return False
    if content_type == "application/sdp":  # what every module here sends
        return True
    return content_type.split(";", 1)[0].strip().lower() == "application/sdp"

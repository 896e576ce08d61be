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
"""

from __future__ import annotations

import re
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
_LINE_SPLIT = re.compile(r"(\r\n|\n)")
_HOST_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:")
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")


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


@dataclass(slots=True)
class _Line:
    number: int  # 1-based
    kind: str  # the type letter, "" for an empty line
    value: str
    eol: str


def _lines(body: bytes) -> list[_Line]:
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"an SDP body is bytes, not {type(body).__name__}")
    body = bytes(body)
    if not body:
        raise SdpError("empty SDP body")
    if len(body) > MAX_SDP_SIZE:
        raise SdpError(f"SDP body of {len(body)} bytes is over {MAX_SDP_SIZE}")
    text = body.decode("utf-8", "surrogateescape")
    parts = _LINE_SPLIT.split(text)
    out: list[_Line] = []
    for i in range(0, len(parts), 2):
        content = parts[i]
        eol = parts[i + 1] if i + 1 < len(parts) else ""
        number = i // 2 + 1
        if content == "":
            if eol:
                out.append(_Line(number, "", "", eol))
            continue
        if len(content) < 2 or content[1] != "=" or not content[0].isascii() or not content[0].isalpha():
            raise SdpError(f"line {number}: not <type>=<value>: {content[:40]!r}")
        out.append(_Line(number, content[0], content[2:], eol))
    first = next((ln for ln in out if ln.kind), None)
    if first is None or first.kind != "v" or first.value != "0":
        raise SdpError("an SDP body starts with v=0")
    return out


def _connection_host(line: _Line) -> str:
    parts = line.value.split(" ")
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"line {line.number}: c= is not 'IN IP4|IP6 <address>': {line.value[:60]!r}")
    host = parts[2].split("/", 1)[0]
    if not host or not _HOST_CHARS.issuperset(host):
        raise SdpError(f"line {line.number}: bad connection address {parts[2][:60]!r}")
    return host


def _media_fields(line: _Line) -> tuple[str, int, str, tuple[str, ...]]:
    parts = line.value.split(" ")
    if len(parts) < 4 or not all(parts):
        raise SdpError(f"line {line.number}: m= is not '<media> <port> <proto> <fmt> ...': {line.value[:60]!r}")
    media, port_text, proto = parts[0], parts[1].split("/", 1)[0], parts[2]
    if not _TOKEN.fullmatch(media) or not _TOKEN.fullmatch(proto.replace("/", "")):
        raise SdpError(f"line {line.number}: bad media or protocol in {line.value[:60]!r}")
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
        raise SdpError(f"line {line.number}: bad port {parts[1][:12]!r}")
    return media, int(port_text), proto, tuple(parts[3:])


def _sections(lines: list[_Line]) -> tuple[list[_Line], list[list[_Line]]]:
    session: list[_Line] = []
    media: list[list[_Line]] = []
    for line in lines:
        if line.kind == "m":
            media.append([line])
        elif media:
            media[-1].append(line)
        else:
            session.append(line)
    return session, media


def _session_host(session: list[_Line]) -> str | None:
    hosts = [_connection_host(ln) for ln in session if ln.kind == "c"]
    if len(hosts) > 1:
        raise SdpError("more than one session-level c= line")
    return hosts[0] if hosts else None


def parse_streams(body: bytes) -> list[MediaStream]:
    """The media streams of ``body``, in order. Raises :class:`SdpError`."""
    session, sections = _sections(_lines(body))
    default_host = _session_host(session)
    streams = []
    for section in sections:
        media, port, proto, formats = _media_fields(section[0])
        hosts = [_connection_host(ln) for ln in section if ln.kind == "c"]
        attributes = tuple(ln.value for ln in section if ln.kind == "a")
        label = next((a[6:] for a in attributes if a.startswith("label:")), None)
        streams.append(MediaStream(media, port, proto, formats, hosts[0] if hosts else default_host, label, attributes))
    return streams


def _audio_index(streams: list[MediaStream]) -> int:
    for i, stream in enumerate(streams):
        if stream.media == "audio" and stream.port != 0:
            if stream.host is None:
                raise SdpError(f"audio stream {i + 1} has no connection address (no c= line)")
            return i
    raise SdpError("no active audio stream (m=audio with a non-zero port)")


def audio_address(body: bytes) -> tuple[str, int]:
    """``(host, port)`` where the sender of ``body`` receives its audio. Raises :class:`SdpError`."""
    streams = parse_streams(body)
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
    lines = _lines(body)
    session, sections = _sections(lines)
    default_host = _session_host(session)
    streams = []
    for section in sections:
        own = [ln for ln in section if ln.kind == "c"]
        own_host = _connection_host(own[0]) if own else default_host
        streams.append(MediaStream(*_media_fields(section[0]), own_host, None, ()))
    target = _audio_index(streams)
    connection = _connection_value(host)
    out: list[str] = []
    for line in session:
        out.append(f"c={connection}{line.eol}" if line.kind == "c" else _text(line))
    for i, section in enumerate(sections):
        head = section[0]
        fields = head.value.split(" ")
        fields[1] = str(port) if i == target else "0"
        out.append(f"m={' '.join(fields)}{head.eol}")
        for line in section[1:]:
            if i == target and line.kind == "c":
                out.append(f"c={connection}{line.eol}")
            elif i == target and line.kind == "a" and line.value.startswith("rtcp:"):
                continue
            else:
                out.append(_text(line))
    return "".join(out).encode("utf-8", "surrogateescape")


def _text(line: _Line) -> str:
    return f"{line.kind}={line.value}{line.eol}" if line.kind else line.eol


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
        streams = parse_streams(offer)
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
    for stream in parse_streams(body):
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
    return content_type.split(";", 1)[0].strip().lower() == "application/sdp"

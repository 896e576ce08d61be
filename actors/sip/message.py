"""Sans-IO SIP message codec: parse bytes into a :class:`SipMessage`, edit it, write bytes.

This is the hot path (every module hop parses, modifies and serialises a message), so the
codec is lean: the start line and the header lines are split with ``str`` methods, header
values stay strings, and structured values (URIs, Via, name-addrs) are parsed only when
asked for (:mod:`actors.sip.headers`).  The few values parse() must check (request line,
From, To, top Via) go through one precompiled ``fullmatch`` for their canonical shape - a
single C call, measured faster than the equivalent str-method checks - and through the
full structural check in :mod:`actors.sip.headers` only when that does not match (From and
To values that passed are remembered in a bounded set, since every hop of a call parses
the same ones again).  Derived values the hop logic reads repeatedly (CSeq, branch, tags,
Call-ID) are cached on the message (see :class:`SipMessage`).  It never imports asyncio
and never does I/O.

Input rules (decided here, checked in ``tests/unit/test_sip_message*.py``):

* At most ``max_size`` bytes (default 65535, the UDP limit), else 513.
* CRLFs before the start line are skipped (keep-alives, RFC 3261 7.5).
* Line ends may be CRLF or bare LF (mixed is fine); a bare CR in the header section is
  malformed (400).  Output always uses CRLF.  A datagram without the empty line that ends
  the header section is truncated (400).
* Folded header lines (continuation lines starting with SP or HTAB) are unfolded into one
  value joined by a single space; values are stripped of SP/HTAB.
* Header names are canonicalised (``v`` -> ``Via``, ``cseq`` -> ``CSeq``); unknown names keep
  their spelling and are matched case-insensitively by the accessors.  A name must be a
  token; a line without a colon is malformed (400).  At most ``MAX_HEADERS`` header lines.
* Non-UTF-8 bytes are TOLERATED, consistently: the header section is decoded as UTF-8 with
  ``surrogateescape``, so valid UTF-8 reads as text and any other byte survives as a lone
  surrogate and is written back byte for byte.  (The Request-URI alone must be ASCII.)
* NUL bytes in the header section are rejected (400), except as the quoted-pair
  ``\\`` NUL that RFC 3261's grammar allows inside quoted strings (RFC 4475 intmeth).  The
  body is raw bytes and may hold anything.
* Requests and responses need Via, From, To, Call-ID and CSeq (400 naming the missing
  one); Max-Forwards may be absent.  From, To, Call-ID, CSeq and Max-Forwards appear at
  most once (400).  From and To must be structurally valid name-addr / addr-spec values
  (display name, ``<>``, parameters; a URI of any scheme without whitespace) and the top
  Via a valid via-parm (400; a Via protocol version other than 2.0 is 505).
* CSeq is ``<number> <method>`` with number < 2**31 and, in a request, the request's
  method (400).  Max-Forwards is 0..255 (400).  Leading zeros are fine.
* Content-Length must be a non-negative decimal number (400); more than ``max_size`` is
  413; more than the bytes after the header section is 400 (RFC 3261 18.3, UDP); a longer
  body is cut to Content-Length.  Without Content-Length the body is the rest of the
  datagram.  Duplicate Content-Length headers must agree (400) and are merged into one.
* The request line is exactly ``method SP Request-URI SP SIP/2.0`` (400: extra or missing
  SP, ``<>``, whitespace or control characters in the URI, a method that is no token); a
  Request-URI longer than ``MAX_URI_LENGTH`` is 414; a sip:/sips: Request-URI must not
  carry ``?headers`` (400).  Any scheme parses; :func:`actors.sip.headers.parse_uri`
  answers 416 for schemes other than sip, sips and tel.
* A SIP version other than 2.0 (``SIP/x.y``) is 505; anything else in its place is 400.
  A status code is three digits, 100..699.

Every rejection is a :class:`SipParseError` (a ``ValueError``) carrying ``status``,
``reason`` and, once the header section could be split, the partly parsed ``message`` so
that a 4xx can still be answered.

Serialisation always writes a ``Content-Length`` equal to ``len(body)``, in place of the
first Content-Length header (any other one dropped) or appended last.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from itertools import repeat
from operator import itemgetter
from typing import Any

from .headers import (
    TOKEN_CHARS,
    SipParseError,
    Via,
    check_name_addr,
    first_value_end,
    parse_name_addr,
    scan_value_end,
    parse_uri,
    parse_via,
    split_header_values,
    _split_semis,
)

__all__ = [
    "MAX_MESSAGE_SIZE",
    "MAX_URI_LENGTH",
    "MAX_HEADERS",
    "REASON_PHRASES",
    "SipMessage",
    "SipParseError",
    "canonical_name",
]

MAX_MESSAGE_SIZE = 65535
MAX_URI_LENGTH = 4096
MAX_HEADERS = 256

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    430: "Flow Failed",
    433: "Anonymity Disallowed",
    436: "Bad Identity-Info",
    437: "Unsupported Certificate",
    438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    469: "Bad Info Package",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}

_CANONICAL = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Accept-Resource-Priority",
    "Alert-Info", "Allow", "Allow-Events", "Answer-Mode", "Authentication-Info", "Authorization",
    "Call-ID", "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
    "Content-ID", "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date",
    "Error-Info", "Event", "Expires", "Feature-Caps", "Flow-Timer", "From", "Geolocation",
    "History-Info", "Identity", "Identity-Info", "Info-Package", "In-Reply-To", "Join",
    "Max-Breadth", "Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE", "Organization",
    "P-Access-Network-Info", "P-Asserted-Identity", "P-Associated-URI", "P-Called-Party-ID",
    "P-Charging-Function-Addresses", "P-Charging-Vector", "P-Early-Media",
    "P-Media-Authorization", "P-Preferred-Identity", "P-Profile-Key", "P-Served-User",
    "P-Visited-Network-ID", "Path", "Priority", "Privacy", "Proxy-Authenticate",
    "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route", "Recv-Info",
    "Refer-Sub", "Refer-To", "Referred-By", "Reject-Contact", "Replaces", "Reply-To",
    "Request-Disposition", "Require", "Resource-Priority", "Retry-After", "Route", "RSeq",
    "Security-Client", "Security-Server", "Security-Verify", "Server", "Service-Route",
    "Session-Expires", "Session-ID", "SIP-ETag", "SIP-If-Match", "Subject",
    "Subscription-State", "Supported", "Suppress-If-Match", "Target-Dialog", "Timestamp", "To",
    "Trigger-Consent", "Unsupported", "User-Agent", "User-to-User", "Via", "Warning",
    "WWW-Authenticate",
]

# RFC 3261 7.3.3 and later extensions (IANA "SIP Parameters: Header Fields").
_COMPACT = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact", "k": "Supported",
    "l": "Content-Length", "m": "Contact", "n": "Identity-Info", "o": "Event", "r": "Refer-To",
    "s": "Subject", "t": "To", "u": "Allow-Events", "v": "Via", "x": "Session-Expires",
    "y": "Identity",
}

# lower-case name -> canonical name
_CANON_LOWER: dict[str, str] = {n.lower(): n for n in _CANONICAL}
_CANON_LOWER.update(_COMPACT)
# exact spelling -> canonical name (the fast path: one dict hit per header line)
_CANON_EXACT: dict[str, str] = dict(_CANON_LOWER)
_CANON_EXACT.update({n: n for n in _CANONICAL})
_CANON_EXACT.update({k.upper(): v for k, v in _COMPACT.items()})
_CANON_EXACT.update({n.upper(): n for n in _CANONICAL})

_KNOWN = frozenset(_CANONICAL)
# The parser's name table: the known names plus valid unknown names already seen (mapped to
# themselves, bounded), so that extension headers stay on the fast path.
_PARSE_NAMES: dict[str, str] = dict(_CANON_EXACT)
_PARSE_NAMES_MAX = len(_PARSE_NAMES) + 512

# Headers whose value is a comma-separated list (RFC 3261 7.3.1): get_all() splits them.
# Deliberately absent: the auth headers (commas inside one challenge), Date, Retry-After,
# From/To/Call-ID/CSeq, Subject, User-Agent, Server, Timestamp.
_LIST_HEADERS = frozenset({
    "Via", "Route", "Record-Route", "Contact", "Path", "Service-Route", "Allow", "Supported",
    "Require", "Proxy-Require", "Unsupported", "Accept", "Accept-Encoding", "Accept-Language",
    "Allow-Events", "Content-Encoding", "Content-Language", "In-Reply-To", "Warning",
    "Error-Info", "Alert-Info", "Call-Info", "Reason", "P-Asserted-Identity",
    "P-Preferred-Identity", "P-Associated-URI", "History-Info", "Security-Client",
    "Security-Server", "Security-Verify", "Accept-Contact", "Reject-Contact",
    "Request-Disposition", "Privacy", "P-Charging-Function-Addresses", "P-Early-Media",
    "P-Media-Authorization", "Recv-Info", "Resource-Priority", "Accept-Resource-Priority",
    "Feature-Caps", "Geolocation", "Max-Breadth",
})

_SINGLE = ("From", "To", "Call-ID", "CSeq", "Max-Forwards")
_NAME = itemgetter(0)
_SINGLE_SET = frozenset(_SINGLE)
_COLONS = repeat(":")
_S = ("S", "s")
_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")
_RESPONSE_COPY = frozenset(_MANDATORY)
_WS = " \t"
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")


_new_message = object.__new__


def canonical_name(name: str) -> str:
    """Canonical spelling of a header name; compact forms expanded; unknown names as given."""
    c = _CANON_EXACT.get(name)
    if c is not None:
        return c
    return _CANON_LOWER.get(name.lower(), name)


def _check_value(value: str) -> str:
    """A header value from the API: no CR or LF (header injection), NUL only as the
    quoted-pair ``\\`` NUL that parse() accepts too."""
    if type(value) is not str:
        value = str(value)
    if "\n" in value or "\r" in value:
        raise ValueError("header value must not contain CR or LF")
    if "\x00" in value:
        try:
            _check_nul(value)
        except SipParseError:
            raise ValueError("header value must not contain NUL (except as a quoted-pair)") from None
    return value


def _is_uint(s: str) -> bool:
    return s.isdigit() and s.isascii()


class _FirstLineValue:
    """A read-only property of :class:`SipMessage`: ``derive(value)`` of the first header line
    named ``name`` (``None`` when there is none), cached in the slot ``slot`` as ``(index,
    header tuple, result)`` and used while that very tuple is still at that index."""

    def __init__(self, name: str, derive: Callable[[str], Any], slot: str, doc: str | None = None) -> None:
        self.name = name
        self.derive = derive
        self.slot = slot
        self.__doc__ = doc

    def __get__(self, msg: SipMessage | None, owner: type | None = None) -> Any:
        if msg is None:
            return self
        c = getattr(msg, self.slot)
        if c is not None:
            i, h, r = c
            hs = msg.headers
            if i < len(hs) and hs[i] is h:
                return r
        found = _first_line(msg.headers, self.name)
        if found is None:
            return None
        i, h = found
        r = self.derive(h[1])
        setattr(msg, self.slot, (i, h, r))
        return r


class SipMessage:
    """One SIP request or response.

    Requests have ``method`` and ``uri`` (``status``/``reason`` are ``None``), responses
    the reverse.  ``headers`` is the ordered list of ``(canonical name, value)`` pairs as
    on the wire (a comma list stays one entry until split by :meth:`get_all` or
    :meth:`pop_first`).  ``body`` is raw bytes.  Equality compares start line, headers
    (except Content-Length, which is derived from the body) and body.

    Header names given to the accessors are matched case-insensitively, compact forms
    accepted.  Unknown (extension) names are compared case-insensitively too.

    The derived values every hop reads several times (``cseq``, ``branch``, ``call_id``,
    ``from_tag``, ``to_tag``) are cached as ``(index, header tuple, value)``: a cached value
    is used only while ``headers[index]`` is still that very tuple object, so any edit that
    replaces, removes or shifts the header line it came from (through the methods below or
    directly on ``headers``) recomputes it.  The one edit it cannot see is a direct
    ``headers[j] = (name, value)`` that turns a line *above* it into another line of the same
    name without shifting anything; use :meth:`add` (``first=True``) or :meth:`set` for that.
    """

    __slots__ = (
        "method", "uri", "status", "reason", "headers", "body",
        "_cseq_c", "_via_c", "_cid_c", "_from_c", "_to_c",
    )

    def __init__(
        self,
        method: str | None = None,
        uri: str | None = None,
        status: int | None = None,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        self.method = method
        self.uri = uri
        self.status = status
        self.reason = reason
        self.headers = [] if headers is None else headers
        self.body = body
        # derived-value caches (see the class docstring)
        self._cseq_c = self._via_c = self._cid_c = self._from_c = self._to_c = None

    # --- construction ----------------------------------------------------------------

    @classmethod
    def request(
        cls,
        method: str,
        uri: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> SipMessage:
        """A request; header names are canonicalised, values checked for CR/LF/NUL."""
        if not method or not TOKEN_CHARS.issuperset(method):
            raise ValueError(f"bad method {method!r}")
        uri = str(uri)
        if not uri or not uri.isprintable() or " " in uri:
            raise ValueError(f"bad Request-URI {uri!r}")
        hs = [(canonical_name(n), _check_value(v)) for n, v in headers]
        return cls(method, uri, None, None, hs, bytes(body))

    @classmethod
    def response(
        cls,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> SipMessage:
        """A response; ``reason=None`` takes the standard phrase from REASON_PHRASES."""
        status = int(status)
        if not 100 <= status <= 699:
            raise ValueError(f"bad status code {status}")
        if reason is None:
            reason = REASON_PHRASES.get(status, "")
        elif "\r" in reason or "\n" in reason or "\x00" in reason:
            raise ValueError("reason phrase must not contain CR, LF or NUL")
        hs = [(canonical_name(n), _check_value(v)) for n, v in headers]
        return cls(None, None, status, reason, hs, bytes(body))

    # --- parsing ---------------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes, *, max_size: int = MAX_MESSAGE_SIZE) -> SipMessage:
        """Parse one datagram (see the module docstring for the rules).

        Raises :class:`SipParseError` and nothing else on bad bytes (``TypeError`` only
        when ``data`` is not bytes-like).
        """
        if type(data) is not bytes:
            if isinstance(data, (bytearray, memoryview)):
                data = bytes(data)
            else:
                raise TypeError("SipMessage.parse() takes bytes")
        if len(data) > max_size:
            raise SipParseError(513, f"message larger than {max_size} bytes")

        # --- split the header section into lines, find the body
        lines = None
        i = data.find(b"\r\n\r\n")
        if i > 0:
            text = data[:i].decode("utf-8", "surrogateescape")
            lines = text.split("\r\n")
            # a bare CR or LF stays inside a line after the split (joining and two memchr
            # scans are cheaper than counting every CR and LF in the text)
            joined = "".join(lines)
            if "\n" in joined or "\r" in joined:
                lines = None  # bare LF or CR somewhere: the general path decides
            else:
                body_start = i + 4
        if lines is None:
            lines, text, body_start = _split_general(data)
        if "\x00" in text:
            _check_nul(text)

        # --- start line
        start = lines[0]
        if not start:
            # CRLFs before the start line (keep-alives, RFC 3261 7.5): skip them
            stripped = data.lstrip(b"\r\n")
            if stripped and stripped is not data:
                return cls.parse(stripped, max_size=max_size)
            raise SipParseError(400, "empty start line")
        if start[:1] in _S and start[:4].upper() == "SIP/":
            method = uri = None
            version, _, rest = start.partition(" ")
            code, _, reason = rest.partition(" ")
            _check_version(version)
            if len(code) != 3 or not (code.isdigit() and code.isascii()) or code[0] not in "123456":
                raise SipParseError(400, f"bad status code {code[:12]!r}")
            status = int(code)
        else:
            status = reason = None
            parts = start.split(" ")
            if len(parts) != 3:
                raise SipParseError(400, "bad request line")
            method, uri, version = parts
            if len(uri) > MAX_URI_LENGTH or _REQUEST_LINE_FAST(start) is None:
                if not method or not TOKEN_CHARS.issuperset(method):
                    raise SipParseError(400, f"bad method {method[:20]!r}")
                _check_version(version)
                _check_request_uri(uri)

        # --- header lines: fast path for the common shape (known names, no folding)
        ce = _PARSE_NAMES
        del lines[0]
        headers = [(ce.get(n) if s else None, v.strip(_WS)) for n, s, v in map(str.partition, lines, _COLONS)]
        names = list(map(_NAME, headers))
        if None in names:
            headers = _parse_header_lines(lines)
            names = list(map(_NAME, headers))
        msg = cls(method, uri, status, reason, headers, b"")
        if len(names) > MAX_HEADERS:
            raise SipParseError(400, f"more than {MAX_HEADERS} header fields", msg)

        # --- mandatory and single-instance headers, their values
        try:
            ivia = names.index("Via")
            ifrom = names.index("From")
            ito = names.index("To")
            icid = names.index("Call-ID")
            icseq = names.index("CSeq")
        except ValueError:
            for n in _MANDATORY:
                if n not in names:
                    raise SipParseError(400, f"missing {n} header", msg) from None
            raise
        has_mf = "Max-Forwards" in names
        if sum(map(_SINGLE_SET.__contains__, names)) != (5 if has_mf else 4):
            for n in _SINGLE:
                if names.count(n) > 1:
                    raise SipParseError(400, f"more than one {n} header", msg)
        hcseq = headers[icseq]
        cseq = hcseq[1]
        num, _, cmethod = cseq.partition(" ")
        # canonical "<digits> <token>": the value the cseq property computes, cached below
        canonical_cseq = True
        if not (num.isdigit() and num.isascii()) or len(num) > 10:
            canonical_cseq = False
            num, _, cmethod = cseq.replace("\t", " ").partition(" ")
            if not (num.isdigit() and num.isascii()) or len(num.lstrip("0")) > 10:
                raise SipParseError(400, f"bad CSeq {cseq[:40]!r}", msg)
        number = int(num)
        if number >= 0x80000000:
            raise SipParseError(400, f"CSeq number out of range {cseq[:40]!r}", msg)
        if cmethod != method:
            stripped = cmethod.strip(_WS)
            if len(stripped) != len(cmethod):
                canonical_cseq = False
            cmethod = stripped
            if method is None:
                if not cmethod or not TOKEN_CHARS.issuperset(cmethod):
                    raise SipParseError(400, f"bad CSeq method {cseq[:40]!r}", msg)
            elif cmethod != method:
                raise SipParseError(400, f"CSeq method {cmethod[:20]!r} does not match {method!r}", msg)
        if canonical_cseq:
            msg._cseq_c = (icseq, hcseq, (number, cmethod))
        cid = headers[icid][1]
        if not cid or " " in cid or "\t" in cid:
            raise SipParseError(400, "bad Call-ID", msg)
        if has_mf:
            mf = headers[names.index("Max-Forwards")][1]
            if not (mf.isdigit() and mf.isascii()) or (len(mf) > 3 and len(mf.lstrip("0")) > 3) or int(mf) > 255:
                raise SipParseError(400, f"bad Max-Forwards {mf[:20]!r}", msg)
        v = headers[ifrom][1]
        if v not in _NAME_ADDR_SEEN:
            if _NAME_ADDR_FAST(v) is None:
                try:
                    check_name_addr(v)
                except SipParseError as e:
                    raise SipParseError(400, f"bad From header: {e.reason}", msg) from None
            _name_addr_seen(v)
        v = headers[ito][1]
        if v not in _NAME_ADDR_SEEN:
            if _NAME_ADDR_FAST(v) is None:
                try:
                    check_name_addr(v)
                except SipParseError as e:
                    raise SipParseError(400, f"bad To header: {e.reason}", msg) from None
            _name_addr_seen(v)
        v = headers[ivia][1]
        if _VIA_FAST(v) is None:
            try:
                _check_via(v)
            except SipParseError as e:
                raise SipParseError(e.status, f"bad Via header: {e.reason}", msg) from None

        # --- body
        rest_len = len(data) - body_start
        try:
            ci = names.index("Content-Length")
        except ValueError:
            if rest_len > 0:
                msg.body = data[body_start:]
            return msg
        clen = headers[ci][1]
        if "Content-Length" in names[ci + 1 :]:
            for n, v in headers[ci + 1 :]:
                if n == "Content-Length" and v != clen:
                    raise SipParseError(400, "conflicting Content-Length headers", msg)
            # identical duplicates: keep the first
            headers[ci + 1 :] = [h for h in headers[ci + 1 :] if h[0] != "Content-Length"]
        if not (clen.isdigit() and clen.isascii()):
            raise SipParseError(400, f"bad Content-Length {clen[:20]!r}", msg)
        if len(clen) > 10 and len(clen.lstrip("0")) > 10:
            raise SipParseError(413, f"Content-Length {clen[:20]}... larger than {max_size}", msg)
        n = int(clen)
        if n > max_size:
            raise SipParseError(413, f"Content-Length {n} larger than {max_size}", msg)
        if n > rest_len:
            raise SipParseError(400, f"body shorter than Content-Length {n}", msg)
        if n:
            msg.body = data[body_start : body_start + n]
        return msg

    # --- serialisation ---------------------------------------------------------------

    def start_line(self) -> str:
        if self.method is not None:
            return f"{self.method} {self.uri} SIP/2.0"
        reason = self.reason
        if reason is None:
            reason = REASON_PHRASES.get(self.status, "")  # type: ignore[arg-type]
        return f"SIP/2.0 {self.status} {reason}"

    def __bytes__(self) -> bytes:
        """Wire bytes: CRLF line ends, Content-Length always equal to ``len(body)`` (in
        place of the first Content-Length header, or appended last)."""
        body = self.body
        method = self.method
        if method is not None:
            start = f"{method} {self.uri} SIP/2.0"
        else:  # start_line(), inlined
            reason = self.reason
            if reason is None:
                reason = REASON_PHRASES.get(self.status, "")  # type: ignore[arg-type]
            start = f"SIP/2.0 {self.status} {reason}"
        hs = self.headers
        text = start + "\r\n" + "\r\n".join(map(": ".join, hs)) if hs else start
        i = text.find("\r\nContent-Length: ")
        if i < 0:
            text += "\r\nContent-Length: %d" % len(body)
        else:
            j = text.find("\r", i + 18)
            if j < 0:
                if text[i + 18 :] != str(len(body)):
                    text = self._text_fixing_content_length(start)
            elif text[i + 18 : j] != str(len(body)) or text.find("\r\nContent-Length:", j) >= 0:
                text = self._text_fixing_content_length(start)
        return (text + "\r\n\r\n").encode("utf-8", "surrogateescape") + body

    def _text_fixing_content_length(self, start: str) -> str:
        cl = "Content-Length: %d" % len(self.body)
        lines = [start]
        for n, v in self.headers:
            if n == "Content-Length":
                if cl is not None:
                    lines.append(cl)
                    cl = None
            else:
                lines.append(f"{n}: {v}")
        if cl is not None:
            lines.append(cl)
        return "\r\n".join(lines)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipMessage):
            return NotImplemented
        return (
            self.method == other.method
            and self.uri == other.uri
            and self.status == other.status
            and self.reason == other.reason
            and self.body == other.body
            and [h for h in self.headers if h[0] != "Content-Length"]
            == [h for h in other.headers if h[0] != "Content-Length"]
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<SipMessage {self.start_line()!r} headers={len(self.headers)} body={len(self.body)}B>"

    # --- header access ---------------------------------------------------------------

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def get(self, name: str) -> str | None:
        """First value of ``name``.  For list headers (Via, Route, Contact...) this is the
        first element of the first header line: ``get("Via")`` is the top Via even when
        written ``Via: a, b``."""
        key = _CANON_EXACT.get(name)
        if key is None:
            return self._get_slow(name)
        for n, v in self.headers:
            if n == key:
                if key in _LIST_HEADERS and "," in v:
                    end = first_value_end(v)
                    if end >= 0:
                        head = v[:end].rstrip(_WS)
                        return head if head else (split_header_values(v) or [None])[0]
                return v
        return None

    def _get_slow(self, name: str) -> str | None:
        key = _CANON_LOWER.get(name.lower())
        if key is not None:
            return self.get(key)
        low = name.lower()
        for n, v in self.headers:
            if n.lower() == low:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """All values of ``name`` in order; comma lists split for list headers."""
        key = _CANON_EXACT.get(name)
        if key is None:
            key = canonical_name(name)
            if key not in _KNOWN:
                low = name.lower()
                return [v for n, v in self.headers if n.lower() == low]
        vals = [v for n, v in self.headers if n == key]
        if not vals or key not in _LIST_HEADERS:
            return vals
        out: list[str] = []
        for v in vals:
            if "," in v:
                out.extend(split_header_values(v))
            else:  # split_header_values' answer for a single element, without the call
                v = v.strip(_WS)
                if v:
                    out.append(v)
        return out

    def has(self, name: str) -> bool:
        key = canonical_name(name)
        if key in _KNOWN:
            return any(n == key for n, _ in self.headers)
        low = name.lower()
        return any(n.lower() == low for n, _ in self.headers)

    __contains__ = has

    def _indices(self, name: str) -> tuple[str, list[int]]:
        key = canonical_name(name)
        if key in _KNOWN:
            return key, [i for i, h in enumerate(self.headers) if h[0] == key]
        low = name.lower()
        return key, [i for i, h in enumerate(self.headers) if h[0].lower() == low]

    def set(self, name: str, value: str) -> None:
        """Replace all values of ``name`` by one, at the position of the first (or append)."""
        if type(value) is not str or "\n" in value or "\r" in value or "\x00" in value:
            value = _check_value(value)
        key = _CANON_EXACT.get(name)
        hs = self.headers
        if key is not None:
            names = list(map(_NAME, hs))
            try:
                i = names.index(key)
            except ValueError:
                hs.append((key, value))
                return
            hs[i] = (key, value)
            if names.count(key) > 1:
                hs[i + 1 :] = [h for h in hs[i + 1 :] if h[0] != key]
            return
        key, idx = self._indices(name)
        if not idx:
            hs.append((key, value))
            return
        hs[idx[0]] = (key, value)
        for i in reversed(idx[1:]):
            del hs[i]

    def decrement_max_forwards(self, default: int = 70) -> int:
        """A proxy's Max-Forwards step (RFC 3261 16.6 item 3), in place: the value minus
        one, or ``default`` added when there is none.  Returns the new value.  Raises
        :class:`SipParseError` 483 when it is already 0 (the proxy answers 483 instead of
        forwarding, 16.3 item 3) and 400 when it is not a number."""
        hs = self.headers
        i = 0
        for n, v in hs:
            if n == "Max-Forwards":
                if not _is_uint(v) or len(v) > 20:
                    raise SipParseError(400, f"bad Max-Forwards {v[:20]!r}", self)
                new = int(v) - 1
                if new < 0:
                    raise SipParseError(483, "Too Many Hops", self)
                hs[i] = ("Max-Forwards", str(new))
                return new
            i += 1
        hs.append(("Max-Forwards", str(default)))
        return default

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Add a value.  ``first=True``: above the existing values of ``name`` (at the top
        of the header list when there are none); else after the last one (or at the end)."""
        if type(value) is not str or "\n" in value or "\r" in value or "\x00" in value:
            value = _check_value(value)
        key = _CANON_EXACT.get(name)
        hs = self.headers
        if key is not None:
            if first:
                i = 0
                for n, _ in hs:
                    if n == key:
                        hs.insert(i, (key, value))
                        return
                    i += 1
                hs.insert(0, (key, value))
                return
            i = len(hs)
            while i:
                i -= 1
                if hs[i][0] == key:
                    hs.insert(i + 1, (key, value))
                    return
            hs.append((key, value))
            return
        key, idx = self._indices(name)
        if first:
            hs.insert(idx[0] if idx else 0, (key, value))
        elif idx:
            hs.insert(idx[-1] + 1, (key, value))
        else:
            hs.append((key, value))

    def remove(self, name: str) -> None:
        """Remove every value of ``name``."""
        key = canonical_name(name)
        if key in _KNOWN:
            self.headers[:] = [h for h in self.headers if h[0] != key]
        else:
            low = name.lower()
            self.headers[:] = [h for h in self.headers if h[0].lower() != low]

    def pop_first(self, name: str) -> str | None:
        """Remove and return the top-most single value of ``name``; a comma list keeps
        its other elements (``Via: a, b`` -> returns ``a``, leaves ``Via: b``)."""
        key = _CANON_EXACT.get(name)
        if key is None:
            key = canonical_name(name)
            if key not in _KNOWN:
                key, idx = self._indices(name)
                if not idx:
                    return None
                return self.headers.pop(idx[0])[1]
        hs = self.headers
        i = 0
        while i < len(hs):
            n, v = hs[i]
            if n != key:
                i += 1
                continue
            if key not in _LIST_HEADERS or "," not in v:
                del hs[i]
                return v
            start = 0
            simple = '"' not in v and "<" not in v
            while True:
                end = v.find(",", start) if simple else scan_value_end(v, start)
                head = (v[start:] if end < 0 else v[start:end]).strip(_WS)
                if head:
                    rest = "" if end < 0 else v[end + 1 :].strip(_WS)
                    if rest:
                        hs[i] = (n, rest)
                    else:
                        del hs[i]
                    return head
                if end < 0:  # only empty elements on this line: drop it, look further
                    del hs[i]
                    break
                start = end + 1
        return None

    def copy(self) -> SipMessage:
        """A copy with its own header list (values are immutable strings).  The header
        tuples are shared, at the same positions, so the derived-value caches carry over."""
        m = _new_message(SipMessage)
        m.method = self.method
        m.uri = self.uri
        m.status = self.status
        m.reason = self.reason
        m.headers = list(self.headers)
        m.body = self.body
        m._cseq_c = self._cseq_c
        m._via_c = self._via_c
        m._cid_c = self._cid_c
        m._from_c = self._from_c
        m._to_c = self._to_c
        return m

    # --- common fields ---------------------------------------------------------------
    # The derivations are looked up when first needed: they are defined below the class.

    call_id = _FirstLineValue("Call-ID", str, "_cid_c")
    cseq = _FirstLineValue("CSeq", lambda v: _cseq_of(v), "_cseq_c",
                           "``(number, method)`` or ``None`` when absent or malformed.")
    branch = _FirstLineValue("Via", lambda v: branch_of(_list_head(v)), "_via_c",
                             "The top Via's branch parameter (cheap: no full Via parse).")
    from_tag = _FirstLineValue("From", lambda v: _tag_of(v), "_from_c")
    to_tag = _FirstLineValue("To", lambda v: _tag_of(v), "_to_c")

    @property
    def max_forwards(self) -> int | None:
        for n, v in self.headers:
            if n == "Max-Forwards":
                return int(v) if _is_uint(v) and len(v) <= 20 else None
        return None

    @property
    def top_via(self) -> Via | None:
        """The top Via value parsed (raises SipParseError if it is malformed)."""
        v = self.get("Via")
        return parse_via(v) if v is not None else None

    def make_response(self, status: int, reason: str | None = None, *, to_tag: str | None = None) -> SipMessage:
        """A response to this request (RFC 3261 8.2.6): copies every Via, From, To (adding
        ``;tag=to_tag`` when given and To has none), Call-ID and CSeq; empty body."""
        out = [h for h in self.headers if h[0] in _RESPONSE_COPY]  # the tuples are shared
        if to_tag is not None:
            i = 0
            for n, v in out:
                if n == "To" and _tag_of(v) is None:
                    out[i] = ("To", f"{v};tag={_check_value(to_tag)}")
                i += 1
        # SipMessage.response()'s checks, without its header canonicalisation pass
        status = int(status)
        if not 100 <= status <= 699:
            raise ValueError(f"bad status code {status}")
        if reason is None:
            reason = REASON_PHRASES.get(status, "")
        elif "\r" in reason or "\n" in reason or "\x00" in reason:
            raise ValueError("reason phrase must not contain CR, LF or NUL")
        return SipMessage(None, None, status, reason, out, b"")

    def response_bytes(self, status: int, reason: str | None = None) -> bytes:
        """``bytes(self.make_response(status, reason))`` without building the message: what
        a proxy's immediate 100 Trying needs at every hop (nothing reads that response)."""
        out = [h for h in self.headers if h[0] in _RESPONSE_COPY]
        status = int(status)  # make_response's checks
        if not 100 <= status <= 699:
            raise ValueError(f"bad status code {status}")
        if reason is None:
            reason = REASON_PHRASES.get(status, "")
        elif "\r" in reason or "\n" in reason or "\x00" in reason:
            raise ValueError("reason phrase must not contain CR, LF or NUL")
        # __bytes__ of that response: no Content-Length among the copied headers, so it is
        # appended, and the body is empty
        start = f"SIP/2.0 {status} {reason}"
        text = start + "\r\n" + "\r\n".join(map(": ".join, out)) if out else start
        return (text + "\r\nContent-Length: 0\r\n\r\n").encode("utf-8", "surrogateescape")


# --- parse helpers ---------------------------------------------------------------------


def _split_general(data: bytes) -> tuple[list[str], str, int]:
    """Split at the first empty line when line ends may be bare LF (or mixed)."""
    a = data.find(b"\n\r\n")
    b = data.find(b"\n\n")
    if a < 0:
        if b < 0:
            raise SipParseError(400, "truncated message: no empty line after the headers")
        head_end, body_start = b, b + 2
    elif b < 0 or a < b:
        head_end, body_start = a, a + 3
    else:
        head_end, body_start = b, b + 2
    text = data[:head_end].decode("utf-8", "surrogateescape")
    if text[-1:] == "\r":
        text = text[:-1]
    lines = [ln[:-1] if ln[-1:] == "\r" else ln for ln in text.split("\n")]
    for ln in lines:
        if "\r" in ln:
            raise SipParseError(400, "bare CR in header section")
    return lines, text, body_start


def _check_nul(text: str) -> None:
    """NUL is allowed only as a quoted-pair (``\\`` NUL inside a quoted string, RFC 4475
    intmeth); anywhere else in the header section it is malformed."""
    i = text.find("\x00")
    while i >= 0:
        if i == 0 or text[i - 1] != "\\":
            raise SipParseError(400, "NUL byte in header section")
        i = text.find("\x00", i + 1)


def _parse_header_lines(lines: list[str]) -> list[tuple[str, str]]:
    """The general header loop (``lines`` without the start line): folding, LWS before
    the colon, unknown names.  Linear in the input, however many continuation lines."""
    headers: list[tuple[str, str]] = []
    append = headers.append
    ce = _PARSE_NAMES
    name: str | None = None
    parts: list[str] = []
    for line in lines:
        c = line[:1]
        if c == " " or c == "\t":
            if name is None:
                raise SipParseError(400, "continuation line before the first header")
            cont = line.strip(_WS)
            if cont:
                parts.append(cont)
            continue
        if name is not None:
            append((name, parts[0] if len(parts) == 1 else " ".join(filter(None, parts))))
        if not line:
            raise SipParseError(400, "empty header line")
        raw, sep, value = line.partition(":")
        if not sep:
            raise SipParseError(400, f"header line without colon: {line[:40]!r}")
        name = ce.get(raw)
        if name is None:
            stripped = raw.rstrip(_WS)
            name = _CANON_LOWER.get(stripped.lower())
            if name is None:
                if not stripped or not TOKEN_CHARS.issuperset(stripped):
                    raise SipParseError(400, f"bad header name {stripped[:40]!r}")
                name = stripped
                if raw is stripped and len(ce) < _PARSE_NAMES_MAX:
                    ce[raw] = raw
        parts = [value.strip(_WS)]
    if name is not None:
        append((name, parts[0] if len(parts) == 1 else " ".join(filter(None, parts))))
    return headers


def _check_version(version: str) -> None:
    if version == "SIP/2.0":
        return
    v = version.upper()
    if v == "SIP/2.0":
        return
    if v.startswith("SIP/"):
        major, dot, minor = v[4:].partition(".")
        if dot and _is_uint(major) and _is_uint(minor):
            raise SipParseError(505, f"SIP version {version!r} not supported")
    raise SipParseError(400, f"bad SIP version {version[:20]!r}")


def _check_request_uri(uri: str) -> None:
    if len(uri) > MAX_URI_LENGTH:
        raise SipParseError(414, "Request-URI too long")
    scheme, colon, rest = uri.partition(":")
    if not colon or not rest or not scheme or not scheme[0].isalpha() or not _SCHEME_CHARS.issuperset(scheme):
        raise SipParseError(400, f"bad Request-URI {uri[:60]!r}")
    if not uri.isascii() or not uri.isprintable() or "<" in uri or ">" in uri or '"' in uri:
        raise SipParseError(400, f"bad character in Request-URI {uri[:60]!r}")
    low = scheme.lower()
    if (low == "sip" or low == "sips") and "?" in rest:
        try:
            parsed = parse_uri(uri)
        except SipParseError as e:
            raise SipParseError(400, f"bad Request-URI: {e.reason}") from None
        if parsed.headers:
            raise SipParseError(400, "headers not allowed in Request-URI")


# Fast paths (one C-level match each) for the canonical shapes of the values parse()
# checks; anything they do not match gets the full structural check, which decides.
_TOK = r"[A-Za-z0-9.!%*+`'~_-]"
_PVAL = r"[A-Za-z0-9.!%*+`'~_:\[\]-]"
_NAME_ADDR_FAST = re.compile(
    r'(?:"[^"\\\x00-\x1f\x7f]*"[ \t]*|' + _TOK + r"+(?:[ \t]+" + _TOK + r"+)*[ \t]*)?"
    r'<[A-Za-z][A-Za-z0-9+.-]*:[^\x00-\x20<>"\x7f]+>'
    r"(?:[ \t]*;[ \t]*" + _TOK + r"+(?:[ \t]*=[ \t]*" + _PVAL + r"+)?)*"
).fullmatch
_PORT = r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?"
_VIA_FAST = re.compile(
    r"SIP/2\.0/" + _TOK + r"+ (?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*\])" + _PORT
    + r"(?:;" + _TOK + r"+(?:=" + _PVAL + r"+)?)*"
).fullmatch
_REQUEST_LINE_FAST = re.compile(
    _TOK + r'+ [A-Za-z][A-Za-z0-9+.-]*:[^\x00-\x20<>"?\x7f-\U0010ffff]+ SIP/2\.0'
).fullmatch


# From/To values that passed the check above.  The check is a pure function of the string
# and every hop of a call (and each of its responses) parses the same From and To again, so
# a set lookup replaces the regex; cleared when full (a rolling memo, not a growing one).
_NAME_ADDR_SEEN: set[str] = set()
_NAME_ADDR_SEEN_MAX = 4096


def _name_addr_seen(v: str) -> None:
    if len(_NAME_ADDR_SEEN) >= _NAME_ADDR_SEEN_MAX:
        _NAME_ADDR_SEEN.clear()
    _NAME_ADDR_SEEN.add(v)


def _check_via(v: str) -> None:
    if _VIA_FAST(v) is None:
        end = first_value_end(v)
        parse_via(v if end < 0 else v[:end])


def _param_of(ptext: str, name: str) -> str | None:
    """Value of parameter ``name`` in ``a=b;c=d`` text (quote-aware, LWS tolerant)."""
    for part in _split_semis(ptext) if '"' in ptext else ptext.split(";"):
        k, eq, v = part.partition("=")
        k = k.strip(_WS)
        if k == name or k.lower() == name:
            return v.strip(_WS) if eq else None
    return None


def branch_of(via: str | None) -> str | None:
    """The branch parameter of one Via value (``SipMessage.branch`` of its top Via)."""
    if via is None:
        return None
    _, semi, ptext = via.partition(";")
    if not semi:
        return None
    if ptext[:7] == "branch=" and '"' not in ptext:
        # fast path: branch is the first parameter (as every Via we write has it)
        end = ptext.find(";", 7)
        return (ptext[7:] if end < 0 else ptext[7:end]).strip(_WS)
    return _param_of(ptext, "branch")


def _first_line(hs: list[tuple[str, str]], key: str) -> tuple[int, tuple[str, str]] | None:
    """``(index, header tuple)`` of the first line named ``key`` (a canonical name)."""
    i = 0
    for h in hs:
        if h[0] == key:
            return i, h
        i += 1
    return None


def _list_head(v: str) -> str | None:
    """The first element of a list header's line (what :meth:`SipMessage.get` returns)."""
    if "," in v:
        end = first_value_end(v)
        if end >= 0:
            head = v[:end].rstrip(_WS)
            return head if head else (split_header_values(v) or [None])[0]
    return v


def _cseq_of(v: str) -> tuple[int, str] | None:
    """A CSeq value as ``(number, method)``, ``None`` when malformed."""
    # fast path, the canonical "<digits> <method>": exactly what split() gives
    num, sp, meth = v.partition(" ")
    if (meth and num.isdigit() and num.isascii() and len(num) <= 20
            and " " not in meth and meth.isprintable()):
        return int(num), meth
    parts = v.split()
    if len(parts) != 2 or not _is_uint(parts[0]) or len(parts[0]) > 20:
        return None
    return int(parts[0]), parts[1]


def _tag_of(v: str | None) -> str | None:
    if v is None or ("tag" not in v and "tag" not in v.lower()):
        return None
    if '"' in v:
        try:
            return parse_name_addr(v).tag
        except SipParseError:
            return None
    gt = v.rfind(">")
    ptext = v[gt + 1 :] if gt >= 0 else v
    if ptext[:5] == ";tag=":  # fast path, the shape we write: the tag is the only parameter
        val = ptext[5:]
        if ";" not in val:
            return val.strip(_WS)
    for part in ptext.split(";")[1:]:
        k, eq, val = part.partition("=")
        if k.strip(_WS).lower() == "tag":
            return val.strip(_WS) if eq else None
    return None

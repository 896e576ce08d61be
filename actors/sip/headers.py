"""Structured SIP header values: URIs, name-addrs, Via, parameters (RFC 3261 section 25).

Plain functions and small frozen dataclasses, no I/O and no asyncio.  The message codec
(:mod:`actors.sip.message`) keeps header values as strings and calls these only when a
value is asked for, so a proxy hop never pays for parsing what it merely forwards.

Every parse error raises :class:`SipParseError` (a ``ValueError``) with a status hint:
400 for malformed values, 416 for a URI scheme this codec does not understand.

Round trips: ``str(parse_x(s)) == s`` holds for values written in canonical form (single
spaces, no LWS around ``;``, ``=``, ``:`` or ``/``, quoted display names).  Values written
otherwise parse to the same structure and print in canonical form.  Escapes (``%41``) are
kept as written, never decoded, so a URI always prints back byte for byte.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = [
    "MAGIC_COOKIE",
    "SipParseError",
    "SipUri",
    "NameAddr",
    "Via",
    "parse_uri",
    "parse_name_addr",
    "parse_via",
    "parse_params",
    "check_name_addr",
    "check_uri_shape",
    "format_params",
    "split_header_values",
    "quote_string",
    "new_branch",
    "new_tag",
    "new_call_id",
]

MAGIC_COOKIE = "z9hG4bK"


class SipParseError(ValueError):
    """The one error type the SIP codec raises on bad input.

    ``status`` is the response a UAS should answer with where one applies (400 malformed,
    413 body too large, 414 Request-URI too long, 416 unsupported URI scheme, 505 version
    not supported, 513 message too large); ``reason`` is a short human-readable cause.
    ``message`` is the partly parsed :class:`~actors.sip.message.SipMessage` when the start
    line and header section could be split (so a 400 can still be answered), else ``None``.
    """

    def __init__(self, status: int, reason: str, message: object | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message

    def __reduce__(self):  # picklable across processes
        return (type(self), (self.status, self.reason, None))


# --- character classes (RFC 3261 section 25.1) ---------------------------------------

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
TOKEN_CHARS = _ALNUM | frozenset("-.!%*_+`'~")
_UNRESERVED = _ALNUM | frozenset("-_.!~*'()")
_USER_CHARS = _UNRESERVED | frozenset("%&=+$,;?/")
_PASSWORD_CHARS = _UNRESERVED | frozenset("%&=+$,")
_PARAM_CHARS = _UNRESERVED | frozenset("%[]/:&+$")
_HNV_CHARS = _UNRESERVED | frozenset("%[]/?:+$")
_HOST_CHARS = _ALNUM | frozenset("-.")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_SCHEME_CHARS = _ALNUM | frozenset("+-.")
_DIGITS = frozenset("0123456789")
_WS = " \t"
# generic-param values may also be quoted strings or IPv6 references
_GEN_VALUE_CHARS = TOKEN_CHARS | frozenset("[]:")


def _err(reason: str, status: int = 400) -> SipParseError:
    return SipParseError(status, reason)


def is_token(s: str) -> bool:
    return bool(s) and TOKEN_CHARS.issuperset(s)


# --- quoted strings and list splitting -----------------------------------------------


def _scan_quoted(s: str, i: int) -> int:
    """``s[i]`` is an opening quote; return the index just past the closing quote
    (quoted-pairs ``\\x`` skipped)."""
    j = i + 1
    while True:
        q = s.find('"', j)
        if q < 0:
            raise _err("unterminated quoted string")
        b = s.find("\\", j, q)
        if b < 0:
            return q + 1
        j = b + 2


def unquote_string(q: str) -> str:
    """``'"a \\"b\\""'`` -> ``'a "b"'`` (q includes its quotes)."""
    inner = q[1:-1]
    if "\\" not in inner:
        return inner
    out = []
    i = 0
    n = len(inner)
    while i < n:
        c = inner[i]
        if c == "\\" and i + 1 < n:
            out.append(inner[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def quote_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_header_values(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas inside quotes and ``<...>``.

    Empty elements are dropped (``"a,,b"`` -> ``["a", "b"]``); elements are stripped.
    """
    if "," not in value:
        v = value.strip(_WS)
        return [v] if v else []
    if '"' not in value and "<" not in value:
        return [p for p in (x.strip(_WS) for x in value.split(",")) if p]
    parts = []
    start = 0
    while True:
        end = scan_value_end(value, start)
        p = (value[start:] if end < 0 else value[start:end]).strip(_WS)
        if p:
            parts.append(p)
        if end < 0:
            return parts
        start = end + 1


def first_value_end(value: str, start: int = 0) -> int:
    """Index of the first top-level comma in ``value[start:]`` (outside quotes and <>),
    or -1."""
    if '"' not in value and "<" not in value:
        return value.find(",", start)
    return scan_value_end(value, start)


def scan_value_end(value: str, start: int = 0) -> int:
    """:func:`first_value_end` without the shortcut checks (for repeated calls)."""
    i = start
    n = len(value)
    while i < n:
        c = value[i]
        if c == '"':
            i = _scan_quoted(value, i)
            continue
        if c == "<":
            j = value.find(">", i + 1)
            if j < 0:
                raise _err("unterminated <")
            i = j + 1
            continue
        if c == ",":
            return i
        i += 1
    return -1


# --- parameters ----------------------------------------------------------------------


def _split_semis(s: str) -> list[str]:
    """Split on ``;`` outside quoted strings."""
    if '"' not in s:
        return s.split(";")
    parts = []
    start = 0
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == '"':
            i = _scan_quoted(s, i)
            continue
        if c == ";":
            parts.append(s[start:i])
            start = i + 1
        i += 1
    parts.append(s[start:])
    return parts


def parse_params(s: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` (one leading ``;`` optional) into an ordered dict.

    Names keep their spelling (compare case-insensitively yourself, or use the helpers on
    the dataclasses); a parameter without ``=`` maps to ``None``; quoted values keep their
    quotes so they print back unchanged.  LWS around ``;`` and ``=`` is allowed.  Empty
    parameters (``;;``) and empty values (``a=``) are errors.
    """
    s = s.lstrip(_WS)
    if not s:
        return {}
    if s[0] == ";":
        s = s[1:]
    return _parse_params(s)


def _parse_params(s: str) -> dict[str, str | None]:
    """Parameters after the first ``;`` (no leading ``;``)."""
    if not s.strip(_WS):
        raise _err("empty parameter")
    params: dict[str, str | None] = {}
    for part in _split_semis(s):
        name, eq, value = part.partition("=")
        name = name.strip(_WS)
        if not name or not TOKEN_CHARS.issuperset(name):
            raise _err(f"bad parameter name {name[:40]!r}")
        if eq:
            value = value.strip(_WS)
            if not value:
                raise _err(f"empty value for parameter {name[:40]!r}")
            if value[0] == '"':
                if _scan_quoted(value, 0) != len(value):
                    raise _err(f"bad quoted value for parameter {name[:40]!r}")
            elif not _GEN_VALUE_CHARS.issuperset(value):
                raise _err(f"bad value for parameter {name[:40]!r}")
            params[name] = value
        else:
            params[name] = None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _param_get(params: dict[str, str | None], name: str) -> str | None:
    if name in params:
        return params[name]
    for k, v in params.items():
        if k.lower() == name:
            return v
    return None


# --- URIs ----------------------------------------------------------------------------


def _parse_port(s: str) -> int:
    if not s or len(s) > 5 or not _DIGITS.issuperset(s):
        raise _err(f"bad port {s[:60]!r}")
    port = int(s)
    if port > 65535:
        raise _err(f"port out of range {s[:60]!r}")
    return port


def _split_hostport(s: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` -> (host, port)."""
    if not s:
        raise _err("empty host")
    if s[0] == "[":
        j = s.find("]")
        if j < 0:
            raise _err("unterminated IPv6 reference")
        host = s[: j + 1]
        if not _IPV6_CHARS.issuperset(host[1:-1]) or ":" not in host:
            raise _err(f"bad IPv6 reference {host[:60]!r}")
        rest = s[j + 1 :]
        if not rest:
            return host, None
        if rest[0] != ":":
            raise _err(f"junk after IPv6 reference {s[:60]!r}")
        return host, _parse_port(rest[1:])
    host, colon, port = s.partition(":")
    if not host or not _HOST_CHARS.issuperset(host):
        raise _err(f"bad host {host[:60]!r}")
    if colon:
        return host, _parse_port(port)
    return host, None


@dataclass(frozen=True, slots=True, eq=True)
class SipUri:
    """A sip:, sips: or tel: URI.  ``user``/``password`` keep their %-escapes.

    For tel: URIs the subscriber number is ``user`` and ``host`` is empty.
    ``params`` and ``headers`` map names to values (``None`` for a valueless entry).
    """

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str | None] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.scheme.lower() == "tel":
            return f"{self.scheme}:{self.user}{format_params(self.params)}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":")
                out.append(self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        if self.params:
            out.append(format_params(self.params))
        if self.headers:
            out.append("?")
            out.append("&".join(k if v is None else f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)

    def param(self, name: str) -> str | None:
        """Value of a URI parameter, case-insensitive name (``None`` if absent or flag)."""
        return _param_get(self.params, name.lower())

    def has_param(self, name: str) -> bool:
        n = name.lower()
        return any(k.lower() == n for k in self.params)

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


def _parse_uri_params(s: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for part in s.split(";"):
        name, eq, value = part.partition("=")
        if not name or not _PARAM_CHARS.issuperset(name):
            raise _err(f"bad URI parameter {part[:40]!r}")
        if eq:
            if not value or not _PARAM_CHARS.issuperset(value):
                raise _err(f"bad URI parameter value {part[:40]!r}")
            params[name] = value
        else:
            params[name] = None
    return params


def parse_uri(s: str) -> SipUri:
    """Parse a sip:, sips: or tel: URI (RFC 3261 19.1, RFC 3966).

    Other schemes raise ``SipParseError`` with status 416.  Whitespace anywhere is an error.
    """
    scheme, colon, rest = s.partition(":")
    if not colon or not scheme or not scheme[0].isalpha() or not _SCHEME_CHARS.issuperset(scheme):
        raise _err(f"bad URI {s[:60]!r}")
    low = scheme.lower()
    if low == "tel":
        number, semi, ptext = rest.partition(";")
        if not number or not _PARAM_CHARS.issuperset(number):
            raise _err(f"bad tel URI {s[:60]!r}")
        return SipUri(scheme, number, None, "", None, _parse_uri_params(ptext) if semi else {}, {})
    if low != "sip" and low != "sips":
        raise SipParseError(416, f"unsupported URI scheme {scheme!r}")
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        user, pcolon, pw = userinfo.partition(":")
        if not user or not _USER_CHARS.issuperset(user):
            raise _err(f"bad URI user part {userinfo[:40]!r}")
        if pcolon:
            if not _PASSWORD_CHARS.issuperset(pw):
                raise _err("bad URI password")
            password = pw
    hostport, qmark, htext = rest.partition("?")
    hostport, semi, ptext = hostport.partition(";")
    host, port = _split_hostport(hostport)
    params = _parse_uri_params(ptext) if semi else {}
    headers: dict[str, str | None] = {}
    if qmark:
        for part in htext.split("&"):
            name, eq, value = part.partition("=")
            if not name or not _HNV_CHARS.issuperset(name) or not _HNV_CHARS.issuperset(value):
                raise _err(f"bad URI header {part[:40]!r}")
            headers[name] = value if eq else None
    return SipUri(scheme, user, password, host, port, params, headers)


# --- name-addr / addr-spec -----------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=True)
class NameAddr:
    """From/To/Contact/Route-style value: optional display name, URI, header params.

    ``display`` is the display name without quotes and with quoted-pairs resolved
    (``None`` when absent).  ``str()`` always writes it quoted, the URI in ``<>``.
    """

    display: str | None
    uri: SipUri
    params: dict[str, str | None] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.display is None:
            head = f"<{self.uri}>"
        else:
            head = f"{quote_string(self.display)} <{self.uri}>"
        return head + format_params(self.params) if self.params else head

    @property
    def tag(self) -> str | None:
        return _param_get(self.params, "tag")

    def param(self, name: str) -> str | None:
        return _param_get(self.params, name.lower())

    def with_params(self, **params: str | None) -> NameAddr:
        merged = dict(self.params)
        merged.update(params)
        return NameAddr(self.display, self.uri, merged)


def _name_addr_parts(s: str) -> tuple[str | None, str, str | None]:
    """Split a name-addr / addr-spec into (display, uri text, parameter text after the
    first ``;`` or ``None``) and check its structure; the URI itself is not parsed."""
    s = s.strip(_WS)
    if not s:
        raise _err("empty address")
    display: str | None = None
    c = s[0]
    if c == '"':
        end = _scan_quoted(s, 0)
        display = unquote_string(s[:end])
        rest = s[end:].lstrip(_WS)
        if not rest or rest[0] != "<":
            raise _err("quoted display name not followed by <uri>")
    elif c == "<":
        rest = s
    else:
        lt = s.find("<")
        if lt < 0:
            # addr-spec form: everything after the first ';' is header parameters
            uri_text, semi, ptext = s.partition(";")
            uri_text = uri_text.rstrip(_WS)
            if "," in uri_text or "?" in uri_text or " " in uri_text or "\t" in uri_text:
                raise _err(f"URI with , ? or space must be enclosed in <>: {s[:60]!r}")
            if semi:
                _parse_params(ptext)  # an empty parameter list after ';' is an error
            return None, uri_text, ptext if semi else None
        dn = s[:lt].strip(_WS)
        for word in dn.split():
            if not TOKEN_CHARS.issuperset(word):
                raise _err(f"display name needs quotes: {dn[:40]!r}")
        display = " ".join(dn.split())
        rest = s[lt:]
    gt = rest.find(">")
    if gt < 0:
        raise _err("missing >")
    uri_text = rest[1:gt]
    if not uri_text or uri_text[0] in _WS or uri_text[-1] in _WS:
        raise _err(f"whitespace inside <>: {s[:60]!r}")
    tail = rest[gt + 1 :].lstrip(_WS)
    if not tail:
        return display, uri_text, None
    if tail[0] != ";":
        raise _err(f"junk after >: {tail[:40]!r}")
    return display, uri_text, tail[1:]


_URI_SHAPE_BAD = frozenset(' \t<>"') | frozenset(chr(i) for i in range(32)) | {"\x7f"}


def check_uri_shape(uri: str) -> None:
    """Lenient check of any absolute URI: ``scheme:rest`` without whitespace, ``<>``, quotes
    or control characters.  Used where an unknown scheme must still be accepted."""
    scheme, colon, rest = uri.partition(":")
    if not colon or not rest or not scheme or not scheme[0].isalpha() or not _SCHEME_CHARS.issuperset(scheme):
        raise _err(f"bad URI {uri[:60]!r}")
    if not _URI_SHAPE_BAD.isdisjoint(uri):
        raise _err(f"bad character in URI {uri[:60]!r}")


def check_name_addr(s: str) -> None:
    """Structural check of a name-addr / addr-spec value: display name, ``<>``,
    parameters, and a URI of any scheme checked by :func:`check_uri_shape` only."""
    _, uri_text, ptext = _name_addr_parts(s)
    check_uri_shape(uri_text)
    if ptext is not None:
        _parse_params(ptext)


def parse_name_addr(s: str) -> NameAddr:
    """Parse ``"Name" <uri>;p=v``, ``Name <uri>;p=v``, ``<uri>;p=v`` or ``uri;p=v``.

    In the bare form (no ``<>``) everything after the first ``;`` is a header parameter
    (RFC 3261 20.10), and the URI must not contain ``,``, ``?`` or whitespace.  The URI is
    parsed by :func:`parse_uri` (so a scheme other than sip/sips/tel raises 416).
    """
    display, uri_text, ptext = _name_addr_parts(s)
    uri = parse_uri(uri_text)
    return NameAddr(display, uri, _parse_params(ptext) if ptext is not None else {})


# --- Via -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=True)
class Via:
    """One Via value: ``SIP/2.0/<transport> host[:port];params``."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    def __str__(self) -> str:
        hp = self.host if self.port is None else f"{self.host}:{self.port}"
        if self.params:
            return f"SIP/2.0/{self.transport} {hp}{format_params(self.params)}"
        return f"SIP/2.0/{self.transport} {hp}"

    @property
    def branch(self) -> str | None:
        return _param_get(self.params, "branch")

    @property
    def received(self) -> str | None:
        return _param_get(self.params, "received")

    @property
    def rport(self) -> str | None:
        return _param_get(self.params, "rport")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def param(self, name: str) -> str | None:
        return _param_get(self.params, name.lower())

    def with_params(self, **params: str | None) -> Via:
        merged = dict(self.params)
        merged.update(params)
        return Via(self.transport, self.host, self.port, merged)


def parse_via(s: str) -> Via:
    """Parse one Via value (not a comma list; see :func:`split_header_values`)."""
    proto, slash, rest = s.partition("/")
    if not slash or proto.strip(_WS).upper() != "SIP":
        raise _err(f"bad Via protocol {s[:60]!r}")
    version, slash, rest = rest.partition("/")
    if not slash:
        raise _err(f"bad Via {s[:60]!r}")
    if version.strip(_WS) != "2.0":
        raise SipParseError(505, f"unsupported Via version {version.strip(_WS)!r}")
    rest = rest.lstrip(_WS)
    i = 0
    n = len(rest)
    while i < n and rest[i] not in _WS:
        i += 1
    transport = rest[:i]
    if not transport or not TOKEN_CHARS.issuperset(transport):
        raise _err(f"bad Via transport {transport[:20]!r}")
    sent = rest[i:].lstrip(_WS)
    if not sent:
        raise _err("Via without sent-by")
    hostport, semi, ptext = sent.partition(";")
    hostport = hostport.strip(_WS)
    if " " in hostport or "\t" in hostport:
        # LWS around the port colon is legal: "host : 5060"
        hostport = ":".join(p.strip(_WS) for p in hostport.split(":")) if hostport[0] != "[" else hostport
        if " " in hostport or "\t" in hostport:
            raise _err(f"bad Via sent-by {hostport[:60]!r}")
    host, port = _split_hostport(hostport)
    params = _parse_params(ptext) if semi else {}
    return Via(transport, host, port, params)


# --- identifiers ---------------------------------------------------------------------

_getrandbits = random.getrandbits  # reseeded by CPython in forked children


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie plus 72 random bits."""
    return "z9hG4bK%018x" % _getrandbits(72)


def new_tag() -> str:
    """A fresh From/To tag (64 random bits, RFC 3261 19.3 asks for at least 32)."""
    return "%016x" % _getrandbits(64)


def new_call_id(host: str | None = None) -> str:
    """A fresh Call-ID, ``<128 random bits>@host`` when a host is given."""
    token = "%032x" % _getrandbits(128)
    return f"{token}@{host}" if host else token

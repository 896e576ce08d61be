"""HTTP Digest authentication for SIP, sans-IO (RFC 2617, RFC 7616, RFC 3261 s.22.4, RFC 8760).

Three pieces, all plain functions and classes that take ``now`` where time matters (no asyncio):

- **Header values.** :func:`parse_challenge` reads a ``WWW-Authenticate`` / ``Proxy-Authenticate``
  value into a :class:`DigestChallenge`, :func:`parse_credentials` an ``Authorization`` /
  ``Proxy-Authorization`` value into :class:`DigestCredentials`; ``str()`` of either writes the
  header value back. The parser follows RFC 7235's ``auth-param`` grammar (``token BWS "=" BWS
  ( token / quoted-string )``, comma separated, quoted-pairs unescaped, empty list elements
  tolerated) and raises :class:`DigestParseError` (a ``ValueError``) with a precise reason on
  anything else: unterminated quotes, a parameter without ``=``, a duplicated parameter, a missing
  mandatory parameter, a bad ``nc``. :class:`DigestUnsupported` (also a ``ValueError``) is raised
  for well-formed values we cannot serve: another scheme than Digest, an unknown algorithm, or a
  qop list without ``auth``.
- **Hashes.** :func:`ha1`, :func:`ha2`, :func:`digest_response` for ``MD5`` and ``SHA-256``
  (RFC 8760's SIP names), with ``qop=auth`` or the legacy RFC 2069 form without qop.
  ``auth-int`` and the ``-sess`` variants are not supported (nor are they by aiosipua).
- **Both ends.** The client builds its credentials with :func:`authorization_for`. The server's
  :class:`DigestChallenger` issues challenges and verifies credentials without keeping per-nonce
  state: a nonce carries the time it was issued, a counter and an HMAC over both and the realm, so
  it is checked by recomputing the HMAC, and it turns *stale* ``nonce_ttl`` seconds after issue.
  Replays of a captured Authorization within the nonce's lifetime are therefore not detected
  (there is no nonce-count memory); for an emulator's registrar that is the intended trade-off.

Times are the caller's clock in seconds (the actor's emulated time); the nonce stores the float
``now`` exactly, so expiry instants are exact: a nonce issued at ``t`` verifies ``OK`` for
``t <= now < t + nonce_ttl`` and ``STALE`` from ``now >= t + nonce_ttl`` on.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
import re
import struct
from dataclasses import dataclass, field
from types import MappingProxyType
from collections.abc import Callable, Mapping

__all__ = [
    "ALGORITHMS",
    "DigestChallenge",
    "DigestChallenger",
    "DigestCredentials",
    "DigestError",
    "DigestParseError",
    "DigestUnsupported",
    "Verdict",
    "authorization_for",
    "canonical_algorithm",
    "digest_response",
    "ha1",
    "ha2",
    "parse_auth_params",
    "parse_challenge",
    "parse_credentials",
]

#: Supported algorithms (RFC 8760 names) and their hash functions.
ALGORITHMS: Mapping[str, Callable[..., "hashlib._Hash"]] = MappingProxyType(
    {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
)
_BY_UPPER = {name.upper(): name for name in ALGORITHMS}

#: Longest header value we parse; a real one is a few hundred bytes.
MAX_HEADER_LENGTH = 8192

_TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
)
_WS = " \t\r\n"
_HEX = frozenset("0123456789abcdefABCDEF")


# --------------------------------------------------------------------------- errors


class DigestError(ValueError):
    """Base of the errors this module raises; ``reason`` says what was wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DigestParseError(DigestError):
    """A header value that is not a well-formed Digest challenge or credentials."""


class DigestUnsupported(DigestError):
    """Well-formed, but asks for something we do not do (scheme, algorithm, qop)."""


# --------------------------------------------------------------------------- hashes


def canonical_algorithm(name: str | None) -> str:
    """``"md5"`` -> ``"MD5"``, ``None`` -> ``"MD5"`` (the RFC default); unknown: DigestUnsupported."""
    if name is None:
        return "MD5"
    canonical = _BY_UPPER.get(name.upper())
    if canonical is None:
        raise DigestUnsupported(f"unsupported digest algorithm {name!r}")
    return canonical


def _h(algorithm: str, data: str) -> str:
    return ALGORITHMS[canonical_algorithm(algorithm)](data.encode("utf-8")).hexdigest()


def ha1(user: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """``H(user ":" realm ":" password)``: what a registrar stores instead of the password."""
    return _h(algorithm, f"{user}:{realm}:{password}")


def ha2(method: str, uri: str, algorithm: str = "MD5") -> str:
    """``H(method ":" digest-uri)`` (qop ``auth`` or none)."""
    return _h(algorithm, f"{method}:{uri}")


def digest_response(
    ha1_hex: str,
    nonce: str,
    method: str,
    uri: str,
    *,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The ``response`` value: ``KD(HA1, nonce:nc:cnonce:qop:HA2)``, or ``KD(HA1, nonce:HA2)`` without qop."""
    h2 = ha2(method, uri, algorithm)
    if qop is None:
        return _h(algorithm, f"{ha1_hex}:{nonce}:{h2}")
    if qop != "auth":
        raise DigestUnsupported(f"unsupported qop {qop!r}")
    if nc is None or cnonce is None:
        raise DigestParseError("qop=auth needs nc and cnonce")
    return _h(algorithm, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{h2}")


# --------------------------------------------------------------------------- parsing


def _skip_ws(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] in _WS:
        i += 1
    return i


def _scan_token(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] in _TOKEN_CHARS:
        i += 1
    return i


def _scan_quoted(s: str, i: int) -> tuple[str, int]:
    """``s[i]`` is ``"``; return the unescaped content and the index past the closing quote."""
    out: list[str] = []
    n = len(s)
    i += 1
    while i < n:
        c = s[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            if i + 1 >= n:
                break
            out.append(s[i + 1])
            i += 2
            continue
        if c in "\r\n" or (ord(c) < 0x20 and c != "\t") or c == "\x7f":
            raise DigestParseError(f"control character in quoted string at offset {i}")
        out.append(c)
        i += 1
    raise DigestParseError("unterminated quoted string")


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``"Digest a=b, c=\\"d, e\\""`` into ``("Digest", {"a": "b", "c": "d, e"})``.

    Parameter names are lower-cased; values are returned unquoted. Raises
    :class:`DigestParseError` on a malformed value.
    """
    if not isinstance(value, str):
        raise DigestParseError(f"header value must be str, got {type(value).__name__}")
    if len(value) > MAX_HEADER_LENGTH:
        raise DigestParseError(f"header value longer than {MAX_HEADER_LENGTH} characters")
    s = value
    n = len(s)
    i = _skip_ws(s, 0)
    end = _scan_token(s, i)
    if end == i:
        raise DigestParseError("missing auth scheme")
    scheme = s[i:end]
    i = end
    if i < n and s[i] not in _WS:
        raise DigestParseError(f"unexpected {s[i]!r} after the auth scheme")
    params: dict[str, str] = {}
    expect_param = True  # at the start of a list element
    while True:
        i = _skip_ws(s, i)
        if i >= n:
            break
        if s[i] == ",":  # empty list elements are allowed (RFC 7230 s.7)
            i += 1
            expect_param = True
            continue
        if not expect_param:
            raise DigestParseError(f"expected ',' at offset {i}, got {s[i]!r}")
        end = _scan_token(s, i)
        if end == i:
            raise DigestParseError(f"expected a parameter name at offset {i}, got {s[i]!r}")
        name = s[i:end].lower()
        i = _skip_ws(s, end)
        if i >= n or s[i] != "=":
            raise DigestParseError(f"parameter {name!r} has no value")
        i = _skip_ws(s, i + 1)
        if i < n and s[i] == '"':
            val, i = _scan_quoted(s, i)
        else:
            end = _scan_token(s, i)
            if end == i:
                raise DigestParseError(f"parameter {name!r} has an empty or invalid value")
            val, i = s[i:end], end
        if name in params:
            raise DigestParseError(f"parameter {name!r} appears twice")
        params[name] = val
        expect_param = False
    return scheme, params


def _require_digest(scheme: str) -> None:
    if scheme.lower() != "digest":
        raise DigestUnsupported(f"auth scheme {scheme!r} is not Digest")


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """A ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest value.

    ``qop`` is the offered list (empty: legacy, no qop). ``extra`` keeps unknown parameters.
    """

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ("auth",)
    opaque: str | None = None
    stale: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        return "Digest " + ", ".join(parts)


def parse_challenge(value: str) -> DigestChallenge:
    """Parse a Digest challenge; ``realm`` and ``nonce`` are mandatory."""
    scheme, p = parse_auth_params(value)
    _require_digest(scheme)
    for name in ("realm", "nonce"):
        if name not in p:
            raise DigestParseError(f"challenge without {name}")
    algorithm = canonical_algorithm(p.get("algorithm"))
    qop: tuple[str, ...] = ()
    if "qop" in p:
        qop = tuple(q.strip().lower() for q in p["qop"].split(",") if q.strip())
        if not qop:
            raise DigestParseError("empty qop list")
    stale_value = p.get("stale", "false").lower()
    if stale_value not in ("true", "false"):
        raise DigestParseError(f"stale must be true or false, got {p['stale']!r}")
    known = {"realm", "nonce", "algorithm", "qop", "opaque", "stale"}
    return DigestChallenge(
        realm=p["realm"],
        nonce=p["nonce"],
        algorithm=algorithm,
        qop=qop,
        opaque=p.get("opaque"),
        stale=stale_value == "true",
        extra={k: v for k, v in p.items() if k not in known},
    )


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """An ``Authorization`` / ``Proxy-Authorization`` Digest value.

    ``qop`` is ``"auth"`` or ``None`` (legacy); ``nc`` is the 8-hex-digit nonce count as sent.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
            f"algorithm={self.algorithm}",
        ]
        if self.qop is not None:
            parts += [f"cnonce={_quote(self.cnonce or '')}", f"qop={self.qop}", f"nc={self.nc}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        return "Digest " + ", ".join(parts)


def parse_credentials(value: str) -> DigestCredentials:
    """Parse Digest credentials; username, realm, nonce, uri and response are mandatory.

    With ``qop`` present, ``nc`` (8 hex digits) and ``cnonce`` are mandatory too (RFC 7616 s.3.4).
    ``qop`` other than ``auth`` raises :class:`DigestUnsupported`.
    """
    scheme, p = parse_auth_params(value)
    _require_digest(scheme)
    for name in ("username", "realm", "nonce", "uri", "response"):
        if name not in p:
            raise DigestParseError(f"credentials without {name}")
    algorithm = canonical_algorithm(p.get("algorithm"))
    qop = p.get("qop")
    nc = p.get("nc")
    cnonce = p.get("cnonce")
    if qop is not None:
        qop = qop.lower()
        if qop != "auth":
            raise DigestUnsupported(f"unsupported qop {qop!r}")
        if nc is None or cnonce is None:
            raise DigestParseError("qop=auth without nc or cnonce")
        if len(nc) != 8 or not _HEX.issuperset(nc):
            raise DigestParseError(f"nc must be 8 hex digits, got {nc!r}")
        nc = nc.lower()
    response = p["response"]
    if not response or not _HEX.issuperset(response):
        raise DigestParseError("response is not a hex digest")
    known = {"username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc", "cnonce", "opaque"}
    return DigestCredentials(
        username=p["username"],
        realm=p["realm"],
        nonce=p["nonce"],
        uri=p["uri"],
        response=response.lower(),
        algorithm=algorithm,
        qop=qop,
        nc=nc if qop is not None else None,
        cnonce=cnonce if qop is not None else None,
        opaque=p.get("opaque"),
        extra={k: v for k, v in p.items() if k not in known},
    )


# --------------------------------------------------------------------------- client side


def authorization_for(
    challenge: str | DigestChallenge,
    method: str,
    uri: str,
    user: str,
    password: str,
    cnonce: str,
    nc: int = 1,
) -> str:
    """The ``Authorization`` value answering ``challenge`` for ``method`` on ``uri``.

    Uses ``qop=auth`` when the challenge offers it (``nc`` is this nonce's use count, from 1),
    the legacy form when it offers no qop; raises :class:`DigestUnsupported` when it offers only
    qops we do not do (``auth-int``). ``opaque`` is echoed.
    """
    if isinstance(challenge, str):
        challenge = parse_challenge(challenge)
    if isinstance(nc, bool) or not isinstance(nc, int) or not 1 <= nc <= 0xFFFFFFFF:
        raise ValueError(f"nc must be an int in 1..0xFFFFFFFF, got {nc!r}")
    if challenge.qop and "auth" not in challenge.qop:
        raise DigestUnsupported(f"challenge offers only qop {','.join(challenge.qop)!r}")
    qop = "auth" if challenge.qop else None
    nc_hex = f"{nc:08x}" if qop else None
    secret = ha1(user, challenge.realm, password, challenge.algorithm)
    response = digest_response(
        secret,
        challenge.nonce,
        method,
        uri,
        algorithm=challenge.algorithm,
        qop=qop,
        nc=nc_hex,
        cnonce=cnonce if qop else None,
    )
    credentials = DigestCredentials(
        username=user,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,
        qop=qop,
        nc=nc_hex,
        cnonce=cnonce if qop else None,
        opaque=challenge.opaque,
    )
    return str(credentials)


# --------------------------------------------------------------------------- server side


class Verdict(enum.Enum):
    """What :meth:`DigestChallenger.verify` concluded.

    A registrar typically answers: ``OK`` accept; ``STALE`` 401 with a fresh challenge and
    ``stale=true`` (the client retries without asking its user); ``BAD_NONCE`` 401 with a fresh
    challenge (not a nonce of ours, or for another realm/algorithm); ``BAD_RESPONSE`` 403 (or 401)
    (wrong password); ``MALFORMED`` 400.
    """

    OK = "ok"
    STALE = "stale"
    BAD_RESPONSE = "bad_response"
    BAD_NONCE = "bad_nonce"
    MALFORMED = "malformed"


_NONCE_STRUCT = struct.Struct(">dQ")  # issued-at (float seconds), counter
_NONCE_MAC_BYTES = 16
_NONCE_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of 32 bytes, unpadded


class DigestChallenger:
    """Issues Digest challenges and verifies the answers, without per-nonce state.

    ``realm`` is the protection domain (the home domain in IMS). ``secret`` keys the nonce HMAC;
    give a fixed one to make nonces reproducible (tests) or to let several instances verify each
    other's nonces; ``None`` draws 32 random bytes. Nonces are ``base64url(issued_at, counter,
    HMAC-SHA256(secret, realm|algorithm|issued_at|counter)[:16])``, 43 characters. ``qop`` is
    ``"auth"`` (RFC 7616) or ``None`` for legacy RFC 2069 challenges; when ``"auth"``, credentials
    without qop are refused as ``BAD_RESPONSE``.

    Not thread-safe; use from one loop (a counter advances per challenge).
    """

    def __init__(
        self,
        realm: str,
        *,
        secret: bytes | None = None,
        nonce_ttl: float = 300.0,
        algorithm: str = "MD5",
        qop: str | None = "auth",
        opaque: str | None = None,
    ) -> None:
        if not nonce_ttl > 0:
            raise ValueError(f"nonce_ttl must be > 0, got {nonce_ttl!r}")
        if qop not in ("auth", None):
            raise DigestUnsupported(f"unsupported qop {qop!r}")
        self.realm = realm
        self.algorithm = canonical_algorithm(algorithm)
        self.nonce_ttl = float(nonce_ttl)
        self.qop = qop
        self.opaque = opaque
        self._secret = secret if secret is not None else os.urandom(32)
        self._counter = 0

    # -- nonces ------------------------------------------------------------------

    def _mac(self, body: bytes) -> bytes:
        key_material = f"{self.realm}\x00{self.algorithm}\x00".encode() + body
        return hmac.new(self._secret, key_material, hashlib.sha256).digest()[:_NONCE_MAC_BYTES]

    def new_nonce(self, now: float) -> str:
        """A fresh nonce stamped with ``now``."""
        self._counter += 1
        body = _NONCE_STRUCT.pack(float(now), self._counter)
        return base64.urlsafe_b64encode(body + self._mac(body)).rstrip(b"=").decode("ascii")

    def nonce_issued_at(self, nonce: str) -> float | None:
        """When we issued ``nonce``, or ``None`` if it is not one of ours (bad MAC, bad shape)."""
        if not _NONCE_SHAPE.fullmatch(nonce):
            return None
        raw = base64.urlsafe_b64decode(nonce + "=")
        body, mac = raw[: _NONCE_STRUCT.size], raw[_NONCE_STRUCT.size :]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        issued_at, _ = _NONCE_STRUCT.unpack(body)
        return issued_at

    # -- challenges --------------------------------------------------------------

    def challenge(self, now: float, *, stale: bool = False) -> str:
        """A header value for ``WWW-Authenticate`` (401) or ``Proxy-Authenticate`` (407)."""
        return str(
            DigestChallenge(
                realm=self.realm,
                nonce=self.new_nonce(now),
                algorithm=self.algorithm,
                qop=(self.qop,) if self.qop else (),
                opaque=self.opaque,
                stale=stale,
            )
        )

    def verify(
        self,
        authorization: str | DigestCredentials,
        method: str,
        ha1_hex: str,
        now: float,
        *,
        request_uri: str | None = None,
    ) -> Verdict:
        """Check credentials against the user's stored ``ha1_hex`` (for ``self.algorithm``).

        Order of checks: parse (``MALFORMED``; an unsupported algorithm or qop is malformed for
        us too); realm, algorithm, opaque and the nonce's MAC (``BAD_NONCE``; a nonce issued
        after ``now`` is ours from a clock we no longer share, also ``BAD_NONCE``); the response
        and qop policy (``BAD_RESPONSE``); the nonce's age (``STALE``, only once the response is
        right, as RFC 7616 s.3.3 asks). ``request_uri``, when given, must equal the digest-uri
        (RFC 2617 s.3.2.2.5), else ``BAD_RESPONSE``.
        """
        if isinstance(authorization, DigestCredentials):
            cred = authorization
        else:
            try:
                cred = parse_credentials(authorization)
            except DigestError:
                return Verdict.MALFORMED
        if cred.realm != self.realm or cred.algorithm != self.algorithm:
            return Verdict.BAD_NONCE
        if self.opaque is not None and cred.opaque != self.opaque:
            return Verdict.BAD_NONCE
        issued_at = self.nonce_issued_at(cred.nonce)
        if issued_at is None or issued_at > now:
            return Verdict.BAD_NONCE
        if self.qop is not None and cred.qop is None:
            return Verdict.BAD_RESPONSE
        if request_uri is not None and request_uri != cred.uri:
            return Verdict.BAD_RESPONSE
        try:
            expected = digest_response(
                ha1_hex,
                cred.nonce,
                method,
                cred.uri,
                algorithm=cred.algorithm,
                qop=cred.qop,
                nc=cred.nc,
                cnonce=cred.cnonce,
            )
        except DigestError:
            return Verdict.MALFORMED
        if not hmac.compare_digest(expected, cred.response):
            return Verdict.BAD_RESPONSE
        if now >= issued_at + self.nonce_ttl:
            return Verdict.STALE
        return Verdict.OK

"""The HSS's data, sans-IO: subscribers, their credentials, their registrations.

Plain classes that take ``now`` (the HSS's clock, emulated seconds); no asyncio, no sockets.
:class:`nf_modules.hss.Hss` serves this over the control protocol.

- **Subscribers** (:class:`Subscriber`) are public identities ``sip:user@domain`` (IMPU) with a
  private identity ``user@domain`` (IMPI) and a digest username. Only HA1 values are stored, one
  per supported algorithm, for the subscriber's realm (the home domain unless configured); the
  password is forgotten once hashed.
- **Registrations** (:class:`Binding`) are contacts bound to an IMPU until ``expires_at``, with the
  Path the REGISTER took and the P-CSCF that serves the user. A binding is live while
  ``now < expires_at`` and invisible from ``now >= expires_at`` on; expired bindings are purged
  lazily (a heap of deadlines), so reads never return them even before the purge.
- **Identities** are accepted as ``sip:user@domain`` (``sips:``, ``<...>``, URI parameters and a
  display name are ignored), ``user@domain`` or a bare ``user`` (the default domain). The domain
  is compared case-insensitively, the user part exactly (RFC 3261 s.19.1.4).

Errors: :class:`UnknownSubscriber` (a ``LookupError``) for an identity we do not serve;
``ValueError`` for bad arguments (negative expiry, empty contact, unknown algorithm).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.sip.digest import ALGORITHMS, canonical_algorithm, ha1

__all__ = [
    "Binding",
    "HssConfig",
    "HssStore",
    "Subscriber",
    "UnknownSubscriber",
    "normalize_impu",
]


class UnknownSubscriber(LookupError):
    """No subscriber has this identity."""

    def __init__(self, identity: str) -> None:
        super().__init__(f"unknown subscriber {identity!r}")
        self.identity = identity


def normalize_impu(identity: str, default_domain: str) -> str:
    """``'<sip:Ue1@IMS.example;transport=udp>'`` -> ``'sip:Ue1@ims.example'``; ``'ue1'`` -> default domain.

    Raises ``ValueError`` for what cannot be an identity (empty, a non-SIP scheme, no user).
    """
    if not isinstance(identity, str):
        raise ValueError(f"identity must be a string, got {type(identity).__name__}")
    s = identity.strip()
    if "<" in s:  # name-addr: keep what is inside the brackets
        start, end = s.find("<"), s.find(">")
        if end < start:
            raise ValueError(f"unbalanced <> in identity {identity!r}")
        s = s[start + 1 : end].strip()
    lower = s.lower()
    if lower.startswith("sip:"):
        s = s[4:]
    elif lower.startswith("sips:"):
        s = s[5:]
    elif ":" in s.split("@", 1)[0]:
        raise ValueError(f"not a SIP identity: {identity!r}")
    for stop in ";?":
        s = s.split(stop, 1)[0]
    user, at, host = s.partition("@")
    if ":" in user:  # user:password@host - drop the password
        user = user.split(":", 1)[0]
    if not at:
        host = default_domain
    host = host.split(":", 1)[0] if not host.startswith("[") else host  # drop a port
    if not user or not host or any(c in user + host for c in " \t\r\n<>\"@"):
        raise ValueError(f"not a SIP identity: {identity!r}")
    return f"sip:{user}@{host.lower()}"


@dataclass(frozen=True, slots=True)
class Subscriber:
    impu: str  # sip:ue0001@ims.example
    impi: str  # ue0001@ims.example
    username: str  # digest username (the user part)
    realm: str
    ha1: Mapping[str, str]  # algorithm -> HA1 hex

    def auth_vector(self, algorithm: str = "MD5") -> dict[str, str]:
        algorithm = canonical_algorithm(algorithm)
        return {
            "impu": self.impu,
            "impi": self.impi,
            "username": self.username,
            "realm": self.realm,
            "algorithm": algorithm,
            "ha1": self.ha1[algorithm],
        }


@dataclass(slots=True)
class Binding:
    """One registered contact of an IMPU."""

    contact: str
    expires_at: float
    registered_at: float
    path: tuple[str, ...] = ()
    pcscf: str | None = None

    def remaining(self, now: float) -> int:
        """Seconds left, rounded up (what a Contact's ``expires`` parameter would say)."""
        return max(0, math.ceil(self.expires_at - now))

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "contact": self.contact,
            "expires": self.remaining(now),
            "path": list(self.path),
            "pcscf": self.pcscf,
        }


@dataclass(frozen=True, slots=True)
class HssConfig:
    """Which subscribers exist. From a topology's ``[nf.hss.options]`` via :meth:`from_options`.

    ``users`` subscribers named ``user_format.format(i)`` for ``i`` in ``first .. first+users-1``
    at ``domain`` with ``password``; plus ``extra`` subscribers, each ``{"user": ..., "password":
    ..., "domain": ...(optional)}``. ``realm`` defaults to the domain. ``max_expires`` caps a
    registration's lifetime (seconds).
    """

    domain: str = "ims.example"
    users: int = 1000
    user_format: str = "ue{:04d}"
    first: int = 1
    password: str = "secret"
    realm: str | None = None
    max_expires: int = 7200
    extra: tuple[Mapping[str, str], ...] = ()

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None, *, domain: str | None = None) -> HssConfig:
        """Build from a mapping; unknown keys and wrong types raise ``ValueError``."""
        options = dict(options or {})
        known = {f for f in cls.__dataclass_fields__}  # type: ignore[attr-defined]
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown HSS options: {', '.join(sorted(unknown))}")
        if domain is not None:
            options.setdefault("domain", domain)
        for name, kind in (("users", int), ("first", int), ("max_expires", int)):
            if name in options and (type(options[name]) is not kind or options[name] < 0):
                raise ValueError(f"HSS option {name} must be a non-negative integer, got {options[name]!r}")
        for name in ("domain", "user_format", "password", "realm"):
            if name in options and options[name] is not None and not isinstance(options[name], str):
                raise ValueError(f"HSS option {name} must be a string, got {options[name]!r}")
        extra = options.get("extra", ())
        if not isinstance(extra, (list, tuple)) or not all(
            isinstance(e, Mapping) and isinstance(e.get("user"), str) and isinstance(e.get("password"), str)
            for e in extra
        ):
            raise ValueError("HSS option extra must be a list of {user, password[, domain]} tables")
        options["extra"] = tuple(dict(e) for e in extra)
        config = cls(**options)
        try:
            config.user_format.format(config.first)
        except (IndexError, KeyError, ValueError) as error:
            raise ValueError(f"HSS option user_format {config.user_format!r}: {error}") from None
        return config


@dataclass(slots=True)
class _Registration:
    bindings: dict[str, Binding] = field(default_factory=dict)  # contact -> binding


class HssStore:
    """Subscribers and registrations. Every method that looks at time takes ``now``."""

    def __init__(self, config: HssConfig | None = None) -> None:
        """Create the configured subscribers. The config's passwords are hashed, not kept."""
        c = config or HssConfig()
        self.default_domain = c.domain.lower()
        self.max_expires = c.max_expires
        self._subscribers: dict[str, Subscriber] = {}
        self._registrations: dict[str, _Registration] = {}
        self._expiry: list[tuple[float, str, str]] = []  # (expires_at, impu, contact), lazy
        self.counters: Counter[str] = Counter()
        for i in range(c.first, c.first + c.users):
            self.add_subscriber(c.user_format.format(i), c.password, domain=c.domain, realm=c.realm)
        for e in c.extra:
            self.add_subscriber(e["user"], e["password"], domain=e.get("domain", c.domain), realm=c.realm)

    # -- subscribers ---------------------------------------------------------------

    def add_subscriber(self, user: str, password: str, *, domain: str | None = None, realm: str | None = None) -> Subscriber:
        """Add (or replace) ``sip:user@domain``; stores HA1 for every supported algorithm."""
        domain = (domain or self.default_domain).lower()
        impu = normalize_impu(f"sip:{user}@{domain}", self.default_domain)
        realm = realm or domain
        username = impu[4:].split("@", 1)[0]
        subscriber = Subscriber(
            impu=impu,
            impi=f"{username}@{domain}",
            username=username,
            realm=realm,
            ha1={alg: ha1(username, realm, password, alg) for alg in ALGORITHMS},
        )
        self._subscribers[impu] = subscriber
        return subscriber

    def subscriber(self, identity: str) -> Subscriber:
        """The subscriber an IMPU, IMPI or username names; raises :class:`UnknownSubscriber`.

        A non-string identity is a ``ValueError``.
        """
        if not isinstance(identity, str):
            raise ValueError(f"identity must be a string, got {type(identity).__name__}")
        # Fast path: an identity already in canonical form (what the S-CSCF sends for a call's
        # callee, and every IMPU the store hands out) is its own key; normalize_impu maps it
        # to itself. Anything else is normalised.
        subscriber = self._subscribers.get(identity)
        if subscriber is not None:
            return subscriber
        try:
            impu = normalize_impu(identity, self.default_domain)
        except ValueError:
            impu = None
        subscriber = self._subscribers.get(impu) if impu is not None else None
        if subscriber is None:
            self.counters["not_found"] += 1
            raise UnknownSubscriber(str(identity))
        return subscriber

    def __contains__(self, identity: object) -> bool:
        try:
            return normalize_impu(identity, self.default_domain) in self._subscribers  # type: ignore[arg-type]
        except ValueError:
            return False

    def __len__(self) -> int:
        return len(self._subscribers)

    def auth_vector(self, identity: str, algorithm: str = "MD5") -> dict[str, str]:
        """``{impu, impi, username, realm, algorithm, ha1}`` for a digest challenge."""
        subscriber = self.subscriber(identity)
        self.counters["auth_vector"] += 1
        return subscriber.auth_vector(algorithm)

    # -- registrations -------------------------------------------------------------

    def register(
        self,
        identity: str,
        contact: str,
        expires: float,
        now: float,
        *,
        path: Iterable[str] = (),
        pcscf: str | None = None,
    ) -> tuple[int, list[Binding]]:
        """Add or refresh ``contact`` for ``expires`` seconds (capped at ``max_expires``).

        ``expires == 0`` removes the contact (RFC 3261 s.10.2.2). Returns the granted expiry and
        the live bindings afterwards.
        """
        subscriber = self.subscriber(identity)
        if not isinstance(contact, str) or not contact.strip():
            raise ValueError("contact must be a non-empty string")
        if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not math.isfinite(expires) or expires < 0:
            raise ValueError(f"expires must be a finite number >= 0, got {expires!r}")
        if isinstance(path, str):
            path = (path,)
        path = tuple(path)
        if not all(isinstance(p, str) for p in path):
            raise ValueError("path must be a list of strings")
        if pcscf is not None and not isinstance(pcscf, str):
            raise ValueError("pcscf must be a string or null")
        contact = contact.strip()
        self.purge(now)
        if expires == 0:
            self._remove(subscriber.impu, contact)
            self.counters["deregister"] += 1
            return 0, self.lookup(subscriber.impu, now)
        granted = min(expires, self.max_expires)
        expires_at = now + granted
        registration = self._registrations.setdefault(subscriber.impu, _Registration())
        binding = registration.bindings.get(contact)
        self.counters["reregister" if binding is not None else "register"] += 1
        # A refresh keeps its place; a new contact goes last. Calls go to the last binding, so a
        # UA that registers a subscriber takes its calls until it leaves, even while the binding
        # registered before it (the emulated UE's) keeps being refreshed.
        registered_at = binding.registered_at if binding is not None else now
        registration.bindings[contact] = Binding(contact, expires_at, registered_at, path, pcscf)
        heapq.heappush(self._expiry, (expires_at, subscriber.impu, contact))
        return math.ceil(granted), self.lookup(subscriber.impu, now)

    def deregister(self, identity: str, now: float, contact: str | None = None) -> int:
        """Remove one contact (or all: ``contact`` None or ``"*"``); returns how many bindings went."""
        subscriber = self.subscriber(identity)
        self.purge(now)
        self.counters["deregister"] += 1
        if contact is None or contact.strip() == "*":
            registration = self._registrations.pop(subscriber.impu, None)
            return len(registration.bindings) if registration else 0
        return 1 if self._remove(subscriber.impu, contact.strip()) else 0

    def _remove(self, impu: str, contact: str) -> bool:
        registration = self._registrations.get(impu)
        if registration is None or registration.bindings.pop(contact, None) is None:
            return False
        if not registration.bindings:
            del self._registrations[impu]
        return True

    def lookup(self, identity: str, now: float) -> list[Binding]:
        """The live bindings of an identity, oldest registration first."""
        return self.bindings_of(self.subscriber(identity), now)

    def bindings_of(self, subscriber: Subscriber, now: float) -> list[Binding]:
        """:meth:`lookup` for a subscriber already found (no second look-up of the identity)."""
        registration = self._registrations.get(subscriber.impu)
        if registration is None:
            return []
        return [b for b in registration.bindings.values() if now < b.expires_at]

    def serving_pcscf(self, identity: str, now: float) -> str | None:
        """The P-CSCF of the most recently registered live binding, or None."""
        for binding in reversed(self.lookup(identity, now)):
            if binding.pcscf is not None:
                return binding.pcscf
        return None

    def list_registered(self, now: float) -> list[str]:
        """IMPUs with at least one live binding, sorted."""
        self.purge(now)
        return sorted(self._registrations)

    def next_expiry(self) -> float | None:
        """The earliest ``expires_at`` still pending in the purge heap (may be a stale entry)."""
        return self._expiry[0][0] if self._expiry else None

    def purge(self, now: float) -> int:
        """Drop bindings with ``expires_at <= now``; returns how many went."""
        removed = 0
        heap = self._expiry
        while heap and heap[0][0] <= now:
            expires_at, impu, contact = heapq.heappop(heap)
            registration = self._registrations.get(impu)
            binding = registration.bindings.get(contact) if registration else None
            if binding is not None and binding.expires_at == expires_at:
                self._remove(impu, contact)
                removed += 1
        self.counters["expired"] += removed
        return removed

    def stats(self, now: float) -> dict[str, int]:
        """Subscribers, registered users, live bindings, and operation counters."""
        self.purge(now)
        out = {
            "subscribers": len(self._subscribers),
            "registered": len(self._registrations),
            "bindings": sum(len(r.bindings) for r in self._registrations.values()),
        }
        out.update(self.counters)
        return out

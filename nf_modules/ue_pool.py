"""``UePool``: one actor on one UDP port that emulates many IMS users (kind ``"ue_pool"``).

Each user (``ue0001`` ... at the home domain) has its own registration and its own dialogs;
they share the pool's socket and transaction layer. Every user's Contact is
``<sip:USER@host:port>`` (the pool's address), so a request the core delivers to the pool is
dispatched by the Request-URI's user part (a user the pool does not serve gets 404).

- **Registration** (``register``, ``register_all``, ``deregister``): REGISTER to the P-CSCF
  (the outbound proxy), which adds Path and forwards it to the S-CSCF Session Controller; a 401
  is answered with digest credentials (:func:`~actors.sip.digest.authorization_for`, nonce count
  per nonce, a ``stale=true`` challenge retried once), a 200 gives the granted expiry, and a
  refresh is armed on the actor's clock at ``refresh_ratio`` (80 %) of it. A refresh reuses the
  cached nonce with the next nonce count; a registrar that no longer knows the nonce challenges
  again and the pool answers once. De-registration (``Expires: 0``) and ``on_stop`` disarm the
  refresh.
- **Calls out** (``call``, ``call_many``, ``start_call``): INVITE through the P-CSCF with a
  G.711 SDP offer; ACK, BYE, re-INVITE and UPDATE follow the dialog's route set (the
  Record-Route of the 2xx), so in-dialog requests cross the same modules; CANCEL before answer
  (after ``cancel_after`` seconds and the first 18x) expects 487.
- **Calls in**, answered automatically ("ring 50 ms, answer, hang up when the caller does"):
  180 at once, 200 with a G.711 SDP answer after ``ring_delay`` (re-sent with T1 doubling until
  the ACK comes), 486 when ``single_line`` and the user is already in a call, 487 after CANCEL,
  200 to BYE, to re-INVITE (with SDP), UPDATE and OPTIONS, 481 for an in-dialog request of no
  dialog we know. Per-call RTP port numbers come from ``rtp_port_min..rtp_port_max`` (only the
  numbers) unless the pool has media on.
- **Media** (``media=...``, off by default; :mod:`nf_modules.ue_media`): every call leg gets a
  UDP port pair of the pool's media engine (the kernel picks it; it goes into the SDP), sends a
  tone or a WAV file as G.711 RTP to the peer's SDP address from the 2xx (caller) or the ACK
  (callee) until the BYE, sends RTCP receiver reports, and may record what it gets to a WAV
  file. Each leg's :class:`~nf_modules.ue_media.MediaResult` goes to ``CallResult.media``
  (caller) and into ``get_media_stats()`` / ``get_media_results()``.
- **Queries**: ``get_stats()``, ``active_calls()``, ``registration_state(user)``,
  ``get_media_stats()``, ``get_media_results()``.

Threads and loops: everything runs on the actor's loop. SIP hooks run straight from the UDP
endpoint's callback (see ``SipActor``). ``call`` is ``@concurrent``: many calls can be in
progress at once, each its own task of the actor. The other asked methods (``register_all``...)
are coroutines run by the actor's inbox, so while one of them awaits, later asks wait in the
inbox but SIP input, timers and the pool's background tasks go on. ``call_many`` and
``start_call`` are conveniences for overlapping calls from one ask.

The sans-IO parts (user lists, RTP port numbers, the digest client state, registration timing,
reading a 200's granted expiry) are plain classes and functions at the top of this file.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from functools import lru_cache
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from actors.actor import concurrent
from actors.sip.dialog import Dialog, DialogError, DialogRequestError
from actors.sip.digest import DigestChallenge, DigestError, authorization_for, parse_challenge
from actors.sip.headers import SipParseError, new_call_id, new_tag, parse_name_addr, parse_uri
from actors.sip.message import SipMessage
from actors.sip.transaction import Transaction
from actors.sip_actor import Address, SipActor
from nf_modules.sip_proxy import uri_address
from nf_modules.ue_media import MediaConfig, MediaResult, UeMedia, media_config, peer_media_address
from nf_modules.user_agent import CallResult, via_destination

__all__ = [
    "CallLeg",
    "CallResult",
    "DigestSession",
    "Registration",
    "RtpPorts",
    "UePool",
    "UnknownUser",
    "expand_users",
    "g711_sdp",
    "granted_expires",
    "request_user",
]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE"
DEFAULT_REGISTER_TIMEOUT = 10.0  # real seconds an asked register() waits for each final response


# =============================================================================== sans-IO parts


class UnknownUser(LookupError):
    """The pool does not serve this user."""

    def __init__(self, user: object) -> None:
        super().__init__(f"this pool serves no user {user!r}")
        self.user = user


def expand_users(users: int | Iterable[str], user_format: str = "ue{:04d}", first: int = 1) -> list[str]:
    """The user names of a pool: ``users`` names ``user_format.format(i)`` from ``first`` on
    (the HSS's convention), or an explicit list. Raises ``ValueError`` on a bad value:
    a negative count, a format that does not take one integer, an empty or duplicated name,
    or a name with characters a SIP user part cannot carry unescaped."""
    if isinstance(users, bool):
        raise ValueError(f"users must be a count or a list of names, got {users!r}")
    if isinstance(users, int):
        if users < 0:
            raise ValueError(f"users must be >= 0, got {users}")
        if isinstance(first, bool) or not isinstance(first, int) or first < 0:
            raise ValueError(f"first must be a non-negative integer, got {first!r}")
        try:
            names = [user_format.format(i) for i in range(first, first + users)]
        except (IndexError, KeyError, ValueError, AttributeError) as error:
            raise ValueError(f"user_format {user_format!r}: {error}") from None
    elif isinstance(users, str):
        raise ValueError("users must be a count or a list of names, not a single string")
    else:
        names = list(users)
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a user name must be a non-empty string, got {name!r}")
        if any(c in name for c in " \t\r\n<>\"@:;?,/"):
            raise ValueError(f"user name {name!r} has a character a SIP user part cannot carry")
        if name in seen:
            raise ValueError(f"user {name!r} is listed twice")
        seen.add(name)
    return names


class RtpPorts:
    """Per-call RTP port numbers from ``low..high``: even ports (RTCP takes the odd one above),
    handed out round robin so a released port is not reused at once. Numbers only; nothing is
    bound. ``allocate()`` returns ``None`` when every port is in use."""

    def __init__(self, low: int = 30000, high: int = 39999) -> None:
        for name, value in (("rtp_port_min", low), ("rtp_port_max", high)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
                raise ValueError(f"{name} must be an integer 1..65535, got {value!r}")
        first = low + (low & 1)
        if first + 1 > high:
            raise ValueError(f"RTP port range {low}..{high} holds no even/odd port pair")
        self.low, self.high = low, high
        self._ports = range(first, high, 2)  # each p with p + 1 <= high
        self._next = 0
        self._in_use: set[int] = set()

    def __len__(self) -> int:
        return len(self._ports)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def allocate(self) -> int | None:
        ports = self._ports
        if len(self._in_use) >= len(ports):
            return None
        while True:
            port = ports[self._next]
            self._next = (self._next + 1) % len(ports)
            if port not in self._in_use:
                self._in_use.add(port)
                return port

    def release(self, port: int | None) -> None:
        if port is not None:
            self._in_use.discard(port)


class DigestSession:
    """One user's digest state against the registrar: the last challenge and its nonce count.

    ``authorization(method, uri)`` answers the cached challenge with the next nonce count
    (``None`` before any challenge); ``challenged(value)`` caches a new challenge (raises
    :class:`~actors.sip.digest.DigestError` for one we cannot answer). ``cnonce`` comes from
    ``rng`` (seeded by the pool)."""

    def __init__(self, user: str, password: str, rng: random.Random) -> None:
        self.user = user
        self.password = password
        self.challenge: DigestChallenge | None = None
        self.nc = 0
        self._rng = rng

    def challenged(self, value: str) -> DigestChallenge:
        challenge = parse_challenge(value)
        if challenge.qop and "auth" not in challenge.qop:
            raise DigestError(f"challenge offers only qop {','.join(challenge.qop)!r}")
        self.challenge = challenge
        self.nc = 0
        return challenge

    def authorization(self, method: str, uri: str) -> str | None:
        if self.challenge is None:
            return None
        self.nc += 1
        cnonce = f"{self._rng.getrandbits(64):016x}"
        return authorization_for(self.challenge, method, uri, self.user, self.password, cnonce, self.nc)

    def forget(self) -> None:
        self.challenge = None
        self.nc = 0


@dataclass
class Registration:
    """One user's registration binding as the UE sees it (times: the pool's clock, seconds).

    ``state``: ``unregistered`` -> ``registering`` -> ``registered`` (or ``failed``);
    ``deregistering`` -> ``unregistered``. ``refresh_at`` is when the next refresh is due
    (``refresh_ratio`` of the granted expiry after the 200), ``expires_at`` when the binding
    lapses if nothing refreshes it."""

    call_id: str
    cseq: int = 0
    state: str = "unregistered"
    status: int = 0  # final status of the last REGISTER exchange
    requested: int = 0  # expiry we asked for
    granted: int = 0  # expiry the registrar granted (0: none)
    expires_at: float | None = None
    refresh_at: float | None = None
    registrations: int = 0  # successful (200, expires > 0) REGISTER exchanges, refreshes included
    refreshes: int = 0
    service_route: list[str] = field(default_factory=list)

    def next_cseq(self) -> int:
        self.cseq += 1
        return self.cseq

    def registered(self, granted: int, now: float, refresh_ratio: float) -> float | None:
        """A 200 granted ``granted`` seconds at ``now``: returns the refresh deadline."""
        self.state = "registered"
        self.status = 200
        self.granted = granted
        self.expires_at = now + granted
        self.registrations += 1
        self.refresh_at = now + granted * refresh_ratio if granted > 0 else None
        return self.refresh_at

    def cleared(self, state: str, status: int) -> None:
        self.state = state
        self.status = status
        self.granted = 0
        self.expires_at = None
        self.refresh_at = None

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "state": self.state if self.state != "registered" or (self.expires_at or 0) > now else "expired",
            "status": self.status,
            "granted": self.granted,
            "expires_in": None if self.expires_at is None else max(0.0, self.expires_at - now),
            "refresh_in": None if self.refresh_at is None else max(0.0, self.refresh_at - now),
            "registrations": self.registrations,
            "refreshes": self.refreshes,
            "service_route": list(self.service_route),
        }


def granted_expires(response: SipMessage, contact: str, default: int | None = None) -> int | None:
    """The expiry a registrar's 200 grants ``contact`` (a SIP URI): the ``expires`` parameter of
    the matching Contact, else the ``Expires`` header, else ``default``. ``None`` when the 200
    lists contacts but not ours (the binding is gone). Contacts are matched on user, host and
    port (RFC 3261 19.1.4 compares more, but the registrar echoes what we sent)."""
    try:
        ours = parse_uri(contact)
    except SipParseError:
        return None
    key = (ours.user, ours.host.lower(), ours.port or 5060)
    listed = response.get_all("Contact")
    for value in listed:
        for item in _split_contacts(value):
            try:
                addr = parse_name_addr(item)
            except ValueError:
                continue
            uri = addr.uri
            if (uri.user, uri.host.lower(), uri.port or 5060) != key:
                continue
            raw = addr.params.get("expires")
            if raw is not None and raw.isdigit():
                return int(raw)
            return _int_or(response.get("Expires"), default)
    if listed:
        return None
    return _int_or(response.get("Expires"), default)


def _split_contacts(value: str) -> list[str]:
    """Split a Contact header value on commas outside ``<>`` and quotes."""
    out, depth, quoted, start = [], 0, False, 0
    for i, c in enumerate(value):
        if c == '"':
            quoted = not quoted
        elif not quoted and c == "<":
            depth += 1
        elif not quoted and c == ">":
            depth = max(0, depth - 1)
        elif not quoted and depth == 0 and c == ",":
            out.append(value[start:i].strip())
            start = i + 1
    out.append(value[start:].strip())
    return [item for item in out if item]


def _int_or(value: str | None, default: int | None) -> int | None:
    if value is not None and value.strip().isdigit():
        return int(value.strip())
    return default


def request_user(uri: str | None) -> str | None:
    """The user part of a Request-URI (``None`` when it has none or is not a SIP URI)."""
    if not uri:
        return None
    return _request_user(uri)


# A pool's users are called at the same few URIs (their Contacts) call after call, three
# requests a call: the answer for the last few thousand distinct URIs is kept.
@lru_cache(maxsize=4096)
def _request_user(uri: str) -> str | None:
    try:
        return parse_uri(uri).user
    except SipParseError:
        return None


def g711_sdp(host: str, port: int, session: int = 1, version: int = 1) -> bytes:
    """A G.711 (PCMU, PCMA) audio SDP body; ``version`` goes up with every new offer/answer."""
    return (
        "v=0\r\n"
        f"o=- {session} {version} IN IP4 {host}\r\n"
        "s=vims\r\n"
        f"c=IN IP4 {host}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 8\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=sendrecv\r\n"
    ).encode()


# ==================================================================================== state


@dataclass(eq=False)
class CallLeg:
    """One of a user's calls, either side. Keyed in the user's table by (Call-ID, local tag).

    ``state``: ``calling`` (UAC, INVITE out) / ``ringing`` (UAS, 180 sent) -> ``answered``
    (UAS: 200 sent, no ACK yet) -> ``confirmed`` -> ``ended``."""

    user: str
    call_id: str
    local_tag: str
    role: str  # "uac" | "uas"
    peer: str
    rtp_port: int | None
    started_at: float
    state: str = "calling"
    dialog: Dialog | None = None
    invite: SipMessage | None = None  # the initial INVITE (sent or received)
    server_tx: Transaction | None = None  # UAS: the INVITE server transaction
    ok: SipMessage | None = None  # UAS: our 200, re-sent until the ACK
    ack: SipMessage | None = None  # UAC: the ACK of the 2xx, re-sent on 2xx retransmissions
    ack_destination: Address | None = None
    sdp_version: int = 1
    timer: Any = None  # the pending answer or 2xx retransmission (a clock handle)
    retransmit_interval: float = 0.0
    answer_deadline: float = 0.0
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    ended_by: str | None = None
    hangup: asyncio.Event = field(default_factory=asyncio.Event)
    remote_media: tuple[str, int] | None = None  # UAS with media on: the caller's SDP audio address
    media: MediaResult | None = None  # the leg's media once it is over (pool with media on)

    @property
    def key(self) -> tuple[str, str]:
        return (self.call_id, self.local_tag)

    def info(self, now: float) -> dict[str, Any]:
        return {
            "user": self.user,
            "call_id": self.call_id,
            "role": self.role,
            "state": self.state,
            "peer": self.peer,
            "rtp_port": self.rtp_port,
            "age": now - self.started_at,
        }


@dataclass(eq=False)
class _User:
    name: str
    aor: str
    contact_uri: str
    digest: DigestSession
    registration: Registration
    ring_delay: float | None = None  # per-user override of the pool's ring_delay
    legs: dict[tuple[str, str], CallLeg] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    refresh_handle: Any = None
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    @property
    def contact(self) -> str:
        return f"<{self.contact_uri}>"


@dataclass(eq=False)
class _Waiter:
    final: asyncio.Future[SipMessage]
    provisional: asyncio.Future[SipMessage] | None = None  # the first 1xx
    ringing: asyncio.Future[SipMessage] | None = None  # the first 18x


# ==================================================================================== actor


class UePool(SipActor):
    """Many emulated UEs on one UDP port, registering and calling through the P-CSCF."""

    kind: ClassVar[str] = "ue_pool"

    def __init__(
        self,
        name: str = "ue_pool",
        bind: Address = ("127.0.0.1", 0),
        *,
        users: int | Sequence[str] = 1000,
        user_format: str = "ue{:04d}",
        first: int = 1,
        password: str = "secret",
        domain: str = "ims.example",
        pcscf: Address | None = None,
        ring_delay: float = 0.05,
        single_line: bool = False,
        rtp_port_min: int = 30000,
        rtp_port_max: int = 39999,
        refresh_ratio: float = 0.8,
        seed: int = 0,
        media: bool | MediaConfig | dict[str, Any] = False,
        **kwargs: Any,
    ) -> None:
        """``users``/``user_format``/``first`` as the HSS's config (or a list of names), all with
        ``password`` at ``domain``; ``pcscf`` the outbound proxy (``set_pcscf`` later is fine);
        ``ring_delay`` emulated seconds from 180 to 200; ``single_line``: a user in a call
        answers a new INVITE with 486; ``refresh_ratio`` of the granted expiry after which a
        registration is refreshed; ``seed`` for cnonces, SSRCs and RTCP intervals; ``media``:
        real RTP for the calls (``True``, a :class:`~nf_modules.ue_media.MediaConfig` or a dict
        of its fields; ``False``: SIP only). Other keyword arguments go to
        :class:`~actors.sip_actor.SipActor` (``timers``, ``time_scale``, ``capacity``...)."""
        super().__init__(name, bind, **kwargs)
        if not isinstance(password, str):
            raise ValueError("password must be a string")
        if isinstance(ring_delay, bool) or not isinstance(ring_delay, (int, float)) or not ring_delay >= 0:
            raise ValueError(f"ring_delay must be a number >= 0, got {ring_delay!r}")
        if isinstance(refresh_ratio, bool) or not isinstance(refresh_ratio, (int, float)) or not 0 < refresh_ratio < 1:
            raise ValueError(f"refresh_ratio must be a number in (0, 1), got {refresh_ratio!r}")
        self.user_names = expand_users(users, user_format, first)
        self.password = password
        self.domain = domain
        self.pcscf: Address | None = tuple(pcscf) if pcscf is not None else None  # type: ignore[assignment]
        self.ring_delay = float(ring_delay)
        self.single_line = bool(single_line)
        self.refresh_ratio = float(refresh_ratio)
        self.rtp_ports = RtpPorts(rtp_port_min, rtp_port_max)
        self.media_config = media_config(media)
        self.media: UeMedia | None = None
        self.ue_stats: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._users: dict[str, _User] = {}
        self._waiters: dict[Transaction, _Waiter] = {}
        self._server_legs: dict[Transaction, CallLeg] = {}  # INVITE server tx -> UAS leg
        self._calls: dict[str, CallLeg] = {}  # UAC legs by Call-ID (our Call-IDs are unique)
        self._background: dict[str, tuple[asyncio.Task[CallResult], CallLeg]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle (on the actor's loop) ---------------------------------------------------

    async def on_start(self) -> None:
        await super().on_start()
        host, port = self.address
        for name in self.user_names:
            self._users[name] = _User(
                name=name,
                aor=f"sip:{name}@{self.domain}",
                contact_uri=f"sip:{name}@{host}:{port}",
                digest=DigestSession(name, self.password, self._rng),
                registration=Registration(call_id=f"reg-{name}-{new_call_id(host)}"),
            )
        if self.media_config is not None:
            self.media = UeMedia(self.name, self.media_config, self.clock, self.loop, self._rng, self.log,  # type: ignore[arg-type]
                                 default_host=host)

    def on_stop(self) -> None:
        self._shutdown()
        super().on_stop()

    def on_failure(self, *exc_info: Any) -> None:
        self._shutdown()
        super().on_failure(*exc_info)

    def _shutdown(self) -> None:
        for user in self._users.values():
            if user.refresh_handle is not None:
                user.refresh_handle.cancel()
                user.refresh_handle = None
            for leg in user.legs.values():
                if leg.timer is not None:
                    leg.timer.cancel()
        for task in list(self._tasks) + [task for task, _ in self._background.values()]:
            task.cancel()
        if self.media is not None:
            self.media.close_all()

    def set_pcscf(self, address: Address) -> None:
        """Point the pool at its P-CSCF (topology wiring)."""
        self.pcscf = tuple(address)  # type: ignore[assignment]

    def set_ring_delay(self, user: str, delay: float | None) -> None:
        """Per-user ring time before the 200 (``math.inf``: ring until CANCEL; ``None``: the
        pool's ``ring_delay``)."""
        if delay is not None and (isinstance(delay, bool) or not isinstance(delay, (int, float)) or not delay >= 0):
            raise ValueError(f"ring delay must be a number >= 0 or None, got {delay!r}")
        self._user(user).ring_delay = delay

    # -- helpers -----------------------------------------------------------------------------

    def _user(self, name: str) -> _User:
        user = self._users.get(name) if isinstance(name, str) else None
        if user is None:
            raise UnknownUser(name)
        return user

    def _outbound(self) -> Address:
        if self.pcscf is None:
            raise RuntimeError(f"{self.name}: no P-CSCF configured (pcscf=... or set_pcscf())")
        return self.pcscf

    def _scaled(self, seconds: float) -> float:
        """Emulated seconds -> real seconds for asyncio waits."""
        return seconds / (self.clock.time_scale if self.clock else 1.0)

    def _spawn_task(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.ue_stats["task_errors"] += 1
                self.log.error("ue_task_failed", error=repr(t.exception()), exc_info=t.exception())

        task.add_done_callback(done)
        return task

    def _later(self, delay: float, callback: Any, *args: Any) -> Any:
        """``callback(*args)`` after ``delay`` emulated seconds on the actor's clock; an
        exception in it is logged and counted (``timer_errors``), never lost in the loop."""
        return self.clock.call_later(delay, self._guarded, callback, *args)  # type: ignore[union-attr]

    def _guarded(self, callback: Any, *args: Any) -> None:
        try:
            callback(*args)
        except Exception as error:  # noqa: BLE001
            self.ue_stats["timer_errors"] += 1
            self.log.error("ue_timer_failed", callback=getattr(callback, "__name__", "?"), error=repr(error), exc_info=error)

    def _request(self, request: SipMessage, destination: Address, *, ringing: bool = False) -> tuple[Transaction, _Waiter]:
        transaction = self.send_request(request, destination)
        waiter = _Waiter(final=self.loop.create_future())
        if ringing:
            waiter.provisional = self.loop.create_future()
            waiter.ringing = self.loop.create_future()
        self._waiters[transaction] = waiter
        return transaction, waiter

    async def _final(self, transaction: Transaction, waiter: _Waiter, timeout: float) -> SipMessage | None:
        """The final response of ``transaction`` (a 408 made here on Timer B/F), or ``None``
        when ``timeout`` real seconds pass first."""
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.final), timeout)
        except TimeoutError:
            return None
        finally:
            if waiter.final.done() or transaction.terminated:
                self._waiters.pop(transaction, None)

    def _send_in_dialog(self, request: SipMessage, dialog: Dialog) -> Address:
        """Where an in-dialog request goes: its first Route, else the Request-URI (the remote
        target), else the P-CSCF. ``Dialog.create_request`` already put our one Via on it."""
        routes = request.get_all("Route")
        destination = uri_address(routes[0]) if routes else uri_address(request.uri)
        return destination or self._outbound()

    def _notify(self, user: _User) -> None:
        waiters, user.waiters = user.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # == registration =========================================================================

    async def register(self, user: str, expires: int = 600, *, timeout: float = DEFAULT_REGISTER_TIMEOUT) -> dict[str, Any]:
        """Register ``user`` for ``expires`` seconds (0 de-registers); the registration state after.

        Keeps it alive with refreshes until ``deregister`` or stop."""
        if isinstance(expires, bool) or not isinstance(expires, int) or expires < 0:
            raise ValueError(f"expires must be a non-negative integer, got {expires!r}")
        entry = self._user(user)
        await self._register(entry, expires, timeout=timeout)
        return self.registration_state(user)

    async def deregister(self, user: str, *, timeout: float = DEFAULT_REGISTER_TIMEOUT) -> dict[str, Any]:
        """Remove ``user``'s binding (REGISTER with ``Expires: 0``) and stop refreshing it."""
        return await self.register(user, 0, timeout=timeout)

    async def register_all(
        self, expires: int = 600, concurrency: int = 50, *, timeout: float = DEFAULT_REGISTER_TIMEOUT
    ) -> dict[str, Any]:
        """Register every user, ``concurrency`` at a time; a summary of the outcome."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
        if isinstance(expires, bool) or not isinstance(expires, int) or expires < 0:
            raise ValueError(f"expires must be a non-negative integer, got {expires!r}")
        semaphore = asyncio.Semaphore(concurrency)
        started = time.perf_counter()

        async def one(user: _User) -> int:
            async with semaphore:
                return await self._register(user, expires, timeout=timeout)

        statuses = await asyncio.gather(*(one(user) for user in self._users.values()))
        by_status = Counter(str(s) for s in statuses)
        ok = sum(1 for s in statuses if s == 200)
        return {
            "users": len(statuses),
            "registered" if expires else "deregistered": ok,
            "failed": len(statuses) - ok,
            "by_status": dict(sorted(by_status.items())),
            "elapsed_s": round(time.perf_counter() - started, 3),
        }

    async def deregister_all(self, concurrency: int = 50) -> dict[str, Any]:
        """De-register every user (``register_all(expires=0)``)."""
        return await self.register_all(0, concurrency)

    def registration_state(self, user: str) -> dict[str, Any]:
        """``{state, status, granted, expires_in, refresh_in, registrations, refreshes, service_route}``."""
        entry = self._user(user)
        return {"user": user, **entry.registration.snapshot(self.now)}

    def registered_users(self) -> list[str]:
        now = self.now
        return [u.name for u in self._users.values() if u.registration.snapshot(now)["state"] == "registered"]

    async def wait_registrations(self, user: str, count: int, *, timeout: float = 10.0) -> dict[str, Any]:
        """Wait (real seconds) until ``user`` has had ``count`` successful REGISTER exchanges
        (refreshes included); its registration state. ``TimeoutError`` if it does not happen."""
        entry = self._user(user)
        deadline = time.monotonic() + timeout
        while entry.registration.registrations < count:
            waiter: asyncio.Future[None] = self.loop.create_future()
            entry.waiters.append(waiter)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{user}: {entry.registration.registrations} registrations, wanted {count}")
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                raise TimeoutError(
                    f"{user}: {entry.registration.registrations} registrations after {timeout} s, wanted {count}"
                ) from None
        return self.registration_state(user)

    async def _register(self, user: _User, expires: int, *, timeout: float, refresh: bool = False) -> int:
        """One REGISTER exchange with its digest round(s); the final status (0: no answer)."""
        async with user.lock:
            reg = user.registration
            if user.refresh_handle is not None:
                user.refresh_handle.cancel()
                user.refresh_handle = None
            reg.requested = expires
            if expires == 0:
                reg.state = "deregistering"
            elif reg.state != "registered":
                reg.state = "registering"
            status, response = await self._register_exchange(user, expires, timeout)
            now = self.now
            granted = granted_expires(response, user.contact_uri, expires) if response is not None and status == 200 else None
            if status == 200 and expires > 0 and granted:
                deadline = reg.registered(granted, now, self.refresh_ratio)
                reg.service_route = response.get_all("Service-Route") if response is not None else []
                if refresh:
                    reg.refreshes += 1
                self.ue_stats["reregister_ok" if refresh else "register_ok"] += 1
                if deadline is not None:
                    user.refresh_handle = self.clock.call_at(deadline, self._guarded, self._refresh_due, user)  # type: ignore[union-attr]
            elif status == 200:
                reg.cleared("unregistered", 200)
                user.digest.forget()
                self.ue_stats["deregister_ok" if expires == 0 else "register_no_binding"] += 1
            else:
                reg.cleared("failed", status)
                self.ue_stats[f"register_failed_{status}"] += 1
                self.log.info("ue_register_failed", user=user.name, status=status, refresh=refresh)
            self._notify(user)
            return status

    async def _register_exchange(self, user: _User, expires: int, timeout: float) -> tuple[int, SipMessage | None]:
        """REGISTER, answering 401 challenges: the first challenge of an exchange, a stale one
        once, and a fresh one once when our cached nonce was refused."""
        uri = f"sip:{self.domain}"
        reg = user.registration
        stale_retried = fresh_retried = False
        while True:
            preemptive = user.digest.challenge is not None
            authorization = user.digest.authorization("REGISTER", uri)
            request = SipMessage.request(
                "REGISTER",
                uri,
                [
                    ("Via", self.new_via()),
                    ("Max-Forwards", "70"),
                    ("From", f"<{user.aor}>;tag={new_tag()}"),
                    ("To", f"<{user.aor}>"),
                    ("Call-ID", reg.call_id),
                    ("CSeq", f"{reg.next_cseq()} REGISTER"),
                    ("Contact", user.contact),
                    ("Expires", str(expires)),
                    ("Supported", "path"),
                    ("User-Agent", "vims-ue-pool"),
                ],
            )
            if authorization is not None:
                request.set("Authorization", authorization)
            self.ue_stats["register_sent"] += 1
            transaction, waiter = self._request(request, self._outbound())
            response = await self._final(transaction, waiter, timeout)
            if response is None:
                return 0, None
            status = response.status or 0
            if status != 401:
                return status, response
            try:
                challenge = user.digest.challenged(response.get("WWW-Authenticate") or "")
            except DigestError as error:
                self.ue_stats["register_bad_challenge"] += 1
                self.log.info("ue_bad_challenge", user=user.name, error=str(error))
                return 401, response
            if authorization is None:
                continue  # the ordinary first challenge
            if challenge.stale and not stale_retried:
                stale_retried = True
                self.ue_stats["register_stale_retry"] += 1
                continue
            if preemptive and not fresh_retried and not challenge.stale:
                fresh_retried = True  # the registrar forgot our nonce: answer its new one once
                continue
            return 401, response

    def _refresh_due(self, user: _User) -> None:
        """Clock callback (actor's loop): time to refresh ``user``'s registration."""
        user.refresh_handle = None
        if user.registration.state == "registered" and user.registration.requested > 0:
            self._spawn_task(self._register(user, user.registration.requested, timeout=DEFAULT_REGISTER_TIMEOUT, refresh=True))

    # == calls out ============================================================================

    @concurrent
    async def call(
        self,
        caller: str,
        callee: str,
        *,
        hold: float | None = 0.0,
        timeout: float = 40.0,
        cancel_after: float | None = None,
        reinvite_after: float | None = None,
        update_after: float | None = None,
    ) -> CallResult:
        """Place one call from ``caller`` (a pool user) to ``callee`` (``user`` at our domain or
        a ``sip:`` URI) through the P-CSCF, and hang it up.

        ``hold``: emulated seconds from answer to BYE (``None``: until ``hang_up(call_id)`` or the
        callee's BYE). ``timeout``: real seconds to wait for each final response.
        ``cancel_after``: CANCEL once this many seconds have passed since the INVITE and the
        first 18x has arrived (the INVITE is then expected to end 487). ``reinvite_after`` /
        ``update_after``: seconds after the ACK to send a re-INVITE (new SDP version, ACKed) /
        an UPDATE; their statuses land in ``reinvite_status`` / ``update_status``."""
        leg, invite = self._new_call(caller, callee)
        return await self._run_call(leg, invite, hold, timeout, cancel_after, reinvite_after, update_after)

    async def call_many(
        self,
        calls: Sequence[tuple[str, str]],
        *,
        concurrency: int = 10,
        hold: float | None = 0.0,
        timeout: float = 40.0,
    ) -> list[CallResult]:
        """Place ``(caller, callee)`` calls, ``concurrency`` at a time; results in order."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
        for caller, callee in calls:  # bad names fail before any call is placed
            self._user(caller)
            self._callee_uri(callee)
        semaphore = asyncio.Semaphore(concurrency)

        async def one(caller: str, callee: str) -> CallResult:
            async with semaphore:
                leg, invite = self._new_call(caller, callee)
                return await self._run_call(leg, invite, hold, timeout, None, None, None)

        return list(await asyncio.gather(*(one(caller, callee) for caller, callee in calls)))

    def start_call(
        self,
        caller: str,
        callee: str,
        *,
        hold: float | None = None,
        timeout: float = 40.0,
        cancel_after: float | None = None,
        reinvite_after: float | None = None,
        update_after: float | None = None,
    ) -> str:
        """Place a call in the background (same arguments as ``call``; ``hold`` defaults to
        ``None``: until ``hang_up``); returns its Call-ID for ``call_result`` / ``hang_up``."""
        leg, invite = self._new_call(caller, callee)
        task = self.loop.create_task(
            self._run_call(leg, invite, hold, timeout, cancel_after, reinvite_after, update_after)
        )
        self._background[leg.call_id] = (task, leg)
        return leg.call_id

    async def wait_answered(self, call_id: str, *, timeout: float = 10.0) -> str:
        """Wait (real seconds) until the background call ``call_id`` is answered (``"confirmed"``)
        or over (``"ended"``)."""
        entry = self._background.get(call_id)
        if entry is None:
            raise KeyError(f"no background call {call_id!r}")
        leg = entry[1]
        waits = {self.loop.create_task(leg.confirmed.wait()), self.loop.create_task(leg.ended.wait())}
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        if not done:
            raise TimeoutError(f"call {call_id} still {leg.state} after {timeout} s")
        return "ended" if leg.ended.is_set() else "confirmed"

    async def call_result(self, call_id: str, *, timeout: float = 60.0) -> CallResult:
        """The result of a background call, once it is over (forgets it)."""
        entry = self._background.get(call_id)
        if entry is None:
            raise KeyError(f"no background call {call_id!r}")
        result = await asyncio.wait_for(asyncio.shield(entry[0]), timeout)
        self._background.pop(call_id, None)
        return result

    def hang_up(self, call_id: str) -> bool:
        """Ask the caller side of ``call_id`` to send BYE now (False: no such call up)."""
        leg = self._calls.get(call_id)
        if leg is None or leg.state == "ended":
            return False
        leg.hangup.set()
        return True

    def _callee_uri(self, callee: str) -> str:
        if not isinstance(callee, str) or not callee:
            raise ValueError(f"callee must be a user name or a sip: URI, got {callee!r}")
        uri = callee if callee.lower().startswith(("sip:", "sips:")) else f"sip:{callee}@{self.domain}"
        try:
            parse_uri(uri)
        except SipParseError as error:
            raise ValueError(f"callee {callee!r}: {error}") from None
        return uri

    def _new_call(self, caller: str, callee: str) -> tuple[CallLeg, SipMessage]:
        user = self._user(caller)
        uri = self._callee_uri(callee)
        self._outbound()
        call_id = new_call_id(self.address[0])
        tag = new_tag()
        leg = CallLeg(user=caller, call_id=call_id, local_tag=tag, role="uac", peer=uri, rtp_port=None, started_at=self.now)
        port = leg.rtp_port = self._rtp_port(leg)
        invite = SipMessage.request(
            "INVITE",
            uri,
            [
                ("Via", self.new_via()),
                ("Max-Forwards", "70"),
                ("From", f"<{user.aor}>;tag={tag}"),
                ("To", f"<{uri}>"),
                ("Call-ID", call_id),
                ("CSeq", "1 INVITE"),
                ("Contact", user.contact),
                ("Allow", ALLOW),
                ("Content-Type", "application/sdp"),
            ],
            g711_sdp(self._media_host(), port or 0),
        )
        leg.invite = invite
        user.legs[leg.key] = leg
        self._calls[call_id] = leg
        return leg, invite

    async def _run_call(
        self,
        leg: CallLeg,
        invite: SipMessage,
        hold: float | None,
        timeout: float,
        cancel_after: float | None,
        reinvite_after: float | None,
        update_after: float | None,
    ) -> CallResult:
        result = CallResult(leg.call_id)
        start = time.perf_counter()

        def mark(what: str) -> None:
            result.timeline.append((time.perf_counter() - start, what))

        try:
            if leg.rtp_port is None:
                mark("no RTP port free")
                result.status = 503
                self._count_failure(503)
                return result
            self.ue_stats["calls_placed"] += 1
            transaction, waiter = self._request(invite, self._outbound(), ringing=True)
            assert waiter.ringing is not None
            waiter.ringing.add_done_callback(
                lambda f: setattr(result, "ringing_after", time.perf_counter() - start) if not f.cancelled() else None
            )
            if cancel_after is not None:
                response = await self._cancel_when_due(leg, transaction, waiter, cancel_after, timeout, result, mark)
            else:
                response = await self._final(transaction, waiter, timeout)
            if response is None:
                mark("no final response")
                self._count_failure(0)
                return result
            result.status = response.status or 0
            mark(f"INVITE {result.status}")
            if not 200 <= result.status < 300:
                self._count_failure(result.status)
                return result
            result.answered_after = time.perf_counter() - start
            self.ue_stats["calls_answered"] += 1
            if not self._confirm(leg, invite, response):
                mark("bad 2xx")
                return result
            if self.media is not None:
                self.media.connect(leg.key, peer_media_address(response.body))
            if cancel_after is not None:
                mark("answered before the CANCEL took effect")
            await self._in_call(leg, hold, timeout, reinvite_after, update_after, result, mark)
            if self.media is not None:
                self.media.stop_sending(leg.key)
            if leg.ended_by == "callee":
                result.bye_status = 200
                result.ended_by = "callee"
                mark("BYE from the callee")
            else:
                result.bye_status = await self._bye(leg, timeout)
                result.ended_by = "caller"
                mark(f"BYE {result.bye_status}")
            self.ue_stats["calls_completed" if result.completed else "calls_failed_bye"] += 1
            return result
        finally:
            self._drop_leg(leg)
            result.media = leg.media

    def _count_failure(self, status: int) -> None:
        self.ue_stats["calls_failed"] += 1
        self.ue_stats[f"calls_failed_{status}"] += 1

    async def _cancel_when_due(
        self, leg: CallLeg, transaction: Transaction, waiter: _Waiter, cancel_after: float,
        timeout: float, result: CallResult, mark: Any,
    ) -> SipMessage | None:
        """Wait ``cancel_after`` and the first 18x, then CANCEL; the INVITE's final response."""
        assert waiter.ringing is not None
        deadline = time.monotonic() + timeout
        await asyncio.wait({waiter.final}, timeout=self._scaled(max(0.0, cancel_after)))
        if not waiter.final.done():
            await asyncio.wait({waiter.final, waiter.ringing}, timeout=max(0.0, deadline - time.monotonic()),
                               return_when=asyncio.FIRST_COMPLETED)
        if not waiter.final.done() and waiter.ringing.done():
            try:
                cancel = transaction.make_cancel()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001  (a final response raced us: nothing to cancel)
                cancel = None
            if cancel is not None:
                self.ue_stats["cancels_sent"] += 1
                cancel_tx, cancel_waiter = self._request(cancel, transaction.destination)  # type: ignore[attr-defined]
                mark("CANCEL")
                cancel_response = await self._final(cancel_tx, cancel_waiter, max(0.01, deadline - time.monotonic()))
                result.cancel_status = cancel_response.status or 0 if cancel_response is not None else 0
                mark(f"CANCEL {result.cancel_status}")
        return await self._final(transaction, waiter, max(0.01, deadline - time.monotonic()))

    def _confirm(self, leg: CallLeg, invite: SipMessage, response: SipMessage) -> bool:
        """The 2xx to our INVITE: make the dialog and ACK along its route set."""
        try:
            dialog = Dialog.from_uac(invite, response)
            ack = dialog.create_request("ACK")
        except (DialogError, ValueError) as error:
            self.ue_stats["bad_2xx"] += 1
            self.log.info("ue_bad_2xx", call_id=leg.call_id, error=str(error))
            return False
        leg.dialog = dialog
        leg.state = "confirmed"
        leg.confirmed.set()
        leg.ack = ack
        leg.ack_destination = self._send_in_dialog(ack, dialog)
        self.send_stateless(ack, leg.ack_destination)
        return True

    async def _in_call(
        self, leg: CallLeg, hold: float | None, timeout: float, reinvite_after: float | None,
        update_after: float | None, result: CallResult, mark: Any,
    ) -> None:
        """The talk phase: optional UPDATE / re-INVITE, then wait out ``hold``."""
        elapsed = 0.0
        actions = sorted(
            [(t, m) for t, m in ((update_after, "UPDATE"), (reinvite_after, "INVITE")) if t is not None],
            key=lambda item: item[0],
        )
        for at, method in actions:
            if await self._pause(leg, max(0.0, at - elapsed)):
                return
            elapsed = max(elapsed, at)
            status = await self._refresh_session(leg, method, timeout)
            if method == "INVITE":
                result.reinvite_status = status
            else:
                result.update_status = status
            mark(f"{'re-INVITE' if method == 'INVITE' else method} {status}")
        if hold is None:
            await self._pause(leg, None)
        elif hold > elapsed:
            await self._pause(leg, hold - elapsed)

    async def _pause(self, leg: CallLeg, seconds: float | None) -> bool:
        """Sleep ``seconds`` emulated (``None``: forever) unless the call is hung up or ended;
        True when the far end ended it."""
        waits = {self.loop.create_task(leg.ended.wait()), self.loop.create_task(leg.hangup.wait())}
        try:
            await asyncio.wait(waits, timeout=None if seconds is None else self._scaled(seconds),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        return leg.ended.is_set()

    async def _refresh_session(self, leg: CallLeg, method: str, timeout: float) -> int:
        """A re-INVITE (new SDP version, ACKed on 2xx) or an UPDATE in the dialog; its status."""
        dialog = leg.dialog
        assert dialog is not None
        body, headers = b"", []
        if method == "INVITE":
            leg.sdp_version += 1
            body = g711_sdp(self._media_host(), leg.rtp_port or 0, version=leg.sdp_version)
            headers = [("Content-Type", "application/sdp")]
        try:
            request = dialog.create_request(method, body, headers)
        except DialogError:
            return 0
        transaction, waiter = self._request(request, self._send_in_dialog(request, dialog))
        response = await self._final(transaction, waiter, timeout)
        if response is None:
            return 0
        try:
            dialog.receive_response(response)
        except DialogError:
            pass
        status = response.status or 0
        self.ue_stats[f"{method.lower()}_in_dialog_{status}"] += 1
        if method == "INVITE" and 200 <= status < 300:
            ack = dialog.create_request("ACK")
            leg.ack = ack
            leg.ack_destination = self._send_in_dialog(ack, dialog)
            self.send_stateless(ack, leg.ack_destination)
        if dialog.terminated:  # 481/408: the dialog is gone
            leg.ended_by = leg.ended_by or "error"
            leg.ended.set()
        return status

    async def _bye(self, leg: CallLeg, timeout: float) -> int:
        dialog = leg.dialog
        assert dialog is not None
        leg.state = "ending"
        try:
            bye = dialog.create_request("BYE")
        except DialogError:
            return 0
        transaction, waiter = self._request(bye, self._send_in_dialog(bye, dialog))
        response = await self._final(transaction, waiter, timeout)
        return response.status or 0 if response is not None else 0

    # == calls in =============================================================================

    def on_request(self, request: SipMessage, transaction: Transaction, source: Address) -> Any:
        method = request.method
        name = request_user(request.uri)
        user = self._users.get(name) if name is not None else None
        if user is None:
            self.ue_stats["unknown_user"] += 1
            self.send_response(transaction, request.make_response(404))
            return None
        if method == "CANCEL":
            return self._on_cancel(request, transaction)
        if request.to_tag is not None:
            return self._in_dialog(user, request, transaction)
        if method == "INVITE":
            return self._on_invite(user, request, transaction)
        if method == "OPTIONS":
            ok = request.make_response(200)
            ok.set("Allow", ALLOW)
            ok.set("Accept", "application/sdp")
            self.send_response(transaction, ok)
            return None
        if method in ("BYE", "UPDATE", "INFO", "PRACK"):
            self.send_response(transaction, request.make_response(481))
            return None
        answer = request.make_response(405)
        answer.set("Allow", ALLOW)
        self.send_response(transaction, answer)
        return None

    def _on_invite(self, user: _User, request: SipMessage, transaction: Transaction) -> None:
        self.ue_stats["calls_received"] += 1
        tag = new_tag()
        if self.single_line and user.legs:
            self.ue_stats["calls_rejected_486"] += 1
            self.send_response(transaction, request.make_response(486, to_tag=tag))
            return
        leg = CallLeg(
            user=user.name, call_id=request.call_id or "", local_tag=tag, role="uas",
            peer=request.get("From") or "", rtp_port=None, started_at=self.now, state="ringing",
            invite=request, server_tx=transaction,
        )
        port = leg.rtp_port = self._rtp_port(leg)
        if port is None:
            self.ue_stats["calls_rejected_503"] += 1
            busy = request.make_response(503, to_tag=tag)
            busy.set("Retry-After", "5")
            self.send_response(transaction, busy)
            return
        if self.media is not None:  # where our RTP goes once the ACK comes (on_ack)
            leg.remote_media = peer_media_address(request.body)
        ringing = self._uas_response(user, request, 180, tag)
        try:
            leg.dialog = Dialog.from_uas(request, ringing, via=self._via_prefix())
        except (DialogError, ValueError) as error:
            self._release_media(leg)
            self.ue_stats["bad_invite"] += 1
            self.send_response(transaction, request.make_response(400, f"Bad Request ({error})"[:120], to_tag=tag))
            return
        user.legs[leg.key] = leg
        self._server_legs[transaction] = leg
        self.send_response(transaction, ringing)
        delay = user.ring_delay if user.ring_delay is not None else self.ring_delay
        if math.isfinite(delay):
            leg.timer = self._later(delay, self._answer, leg)

    def _answer(self, leg: CallLeg) -> None:
        """Clock callback (actor's loop): ringing is over, send the 200 with our SDP answer."""
        leg.timer = None
        user = self._users[leg.user]
        if leg.state != "ringing" or leg.invite is None or leg.server_tx is None or leg.dialog is None:
            return
        ok = self._uas_response(user, leg.invite, 200, leg.local_tag)
        ok.set("Content-Type", "application/sdp")
        ok.body = g711_sdp(self._media_host(), leg.rtp_port or 0)
        try:
            self.send_response(leg.server_tx, ok)
        except Exception:  # noqa: BLE001  (the transaction ended meanwhile, e.g. CANCELled)
            self.ue_stats["late_answers"] += 1
            return
        try:
            leg.dialog.response_sent(ok)
        except DialogError:
            pass
        self._server_legs.pop(leg.server_tx, None)
        leg.state = "answered"
        leg.ok = ok
        self.ue_stats["calls_answered_in"] += 1
        timers = self.layer.timers
        leg.retransmit_interval = timers.t1
        leg.answer_deadline = self.now + 64 * timers.t1
        leg.timer = self._later(timers.t1, self._retransmit_ok, leg)

    def _retransmit_ok(self, leg: CallLeg) -> None:
        """Clock callback: no ACK yet for our 2xx (RFC 3261 13.3.1.4): re-send it, T1 doubling
        up to T2; after 64*T1 give up and end the call with BYE."""
        leg.timer = None
        if leg.state != "answered" or leg.ok is None or leg.server_tx is None:
            return
        if self.now >= leg.answer_deadline:
            self.ue_stats["ack_timeouts"] += 1
            self._spawn_task(self._uas_hang_up(leg))
            return
        self.ue_stats["ok_retransmitted"] += 1
        try:
            self.send_response(leg.server_tx, leg.ok)  # Accepted state sends it again
        except Exception:  # noqa: BLE001  (transaction gone: send on the Via path ourselves)
            self._send_ok_stateless(leg.ok)
        leg.retransmit_interval = min(2 * leg.retransmit_interval, self.layer.timers.t2)
        leg.timer = self._later(leg.retransmit_interval, self._retransmit_ok, leg)

    def _send_ok_stateless(self, ok: SipMessage) -> None:
        destination = via_destination(ok)
        if destination is not None:
            self.send_stateless(ok, destination)

    async def _uas_hang_up(self, leg: CallLeg) -> None:
        if leg.dialog is not None and not leg.dialog.terminated:
            await self._bye(leg, DEFAULT_REGISTER_TIMEOUT)
        leg.ended_by = "callee"
        self._drop_leg(leg)

    def _on_cancel(self, request: SipMessage, transaction: Transaction) -> None:
        invite_tx = self.layer.find_invite_for_cancel(request)
        leg = self._server_legs.get(invite_tx) if invite_tx is not None else None
        if invite_tx is None:
            self.send_response(transaction, request.make_response(481))
            return
        self.send_response(transaction, request.make_response(200))
        if leg is None or leg.state != "ringing":
            return  # answered already: the caller will ACK and BYE
        self.ue_stats["calls_cancelled_in"] += 1
        terminated = leg.invite.make_response(487, to_tag=leg.local_tag)  # type: ignore[union-attr]
        try:
            self.send_response(invite_tx, terminated)
        except Exception:  # noqa: BLE001
            pass
        leg.ended_by = "cancel"
        self._drop_leg(leg)

    def on_ack(self, request: SipMessage, transaction: Transaction | None, source: Address) -> Any:
        if transaction is not None:
            return None  # the ACK of our non-2xx, absorbed by its transaction
        user = self._users.get(request_user(request.uri) or "")
        leg = user.legs.get((request.call_id or "", request.to_tag or "")) if user is not None else None
        if leg is None or leg.dialog is None:
            self.ue_stats["stray_ack"] += 1
            return None
        try:
            leg.dialog.receive_request(request)
        except DialogError:
            pass
        if leg.state == "answered":
            leg.state = "confirmed"
            leg.ok = None
            if leg.timer is not None:
                leg.timer.cancel()
                leg.timer = None
            if self.media is not None:
                self.media.connect(leg.key, leg.remote_media)
        return None

    def _in_dialog(self, user: _User, request: SipMessage, transaction: Transaction) -> None:
        method = request.method
        leg = user.legs.get((request.call_id or "", request.to_tag or ""))
        dialog = leg.dialog if leg is not None else None
        if leg is None or dialog is None or not dialog.matches_request(request):
            self.ue_stats["no_dialog_481"] += 1
            self.send_response(transaction, request.make_response(481))
            return
        try:
            dialog.receive_request(request)
        except DialogRequestError as error:
            self.send_response(transaction, request.make_response(error.status_hint))
            return
        except DialogError:
            self.send_response(transaction, request.make_response(481))
            return
        if method == "BYE":
            if self.media is not None:
                self.media.stop_sending(leg.key)  # before the 200 goes out
            self.send_response(transaction, request.make_response(200))
            leg.ended_by = "caller" if leg.role == "uas" else "callee"
            self.ue_stats["bye_received"] += 1
            if leg.role == "uas":
                self._drop_leg(leg)
            else:
                leg.ended.set()  # the caller's task sees it, reports and cleans up
            return
        if method == "INVITE":  # re-INVITE: same port, next SDP version
            leg.sdp_version += 1
            ok = self._uas_response(user, request, 200, leg.local_tag)
            ok.set("Content-Type", "application/sdp")
            ok.body = g711_sdp(self._media_host(), leg.rtp_port or 0, version=leg.sdp_version)
            self.ue_stats["reinvite_received"] += 1
            self.send_response(transaction, ok)
            return
        if method in ("UPDATE", "OPTIONS", "INFO"):
            ok = request.make_response(200)
            if method == "UPDATE":
                ok.set("Contact", user.contact)
                if request.body:
                    leg.sdp_version += 1
                    ok.set("Content-Type", "application/sdp")
                    ok.body = g711_sdp(self._media_host(), leg.rtp_port or 0, version=leg.sdp_version)
            self.ue_stats[f"{method.lower()}_received"] += 1
            self.send_response(transaction, ok)
            return
        answer = request.make_response(405)
        answer.set("Allow", ALLOW)
        self.send_response(transaction, answer)

    def _uas_response(self, user: _User, request: SipMessage, status: int, tag: str) -> SipMessage:
        response = request.make_response(status, to_tag=tag)
        # The Record-Route values go below the copied Via/From/To/Call-ID/CSeq (make_response
        # copies no Record-Route), in order: what one add() each did, in one extend. They come
        # from the parsed request, so they are clean header values already.
        response.headers.extend([("Record-Route", rr) for rr in request.get_all("Record-Route")])
        response.set("Contact", user.contact)
        if status >= 200:
            response.set("Allow", ALLOW)
        return response

    def _via_prefix(self) -> str:
        host, port = self.address
        return f"SIP/2.0/UDP {host}:{port}"

    # == responses ============================================================================

    def on_response(self, response: SipMessage, transaction: Transaction) -> Any:
        status = response.status or 0
        waiter = self._waiters.get(transaction)
        if waiter is None or waiter.final.done():
            if 200 <= status < 300 and response.cseq and response.cseq[1] == "INVITE":
                self._reack(response)  # a 2xx retransmission: our ACK was lost
            return None
        if status < 200:
            if waiter.provisional is not None and not waiter.provisional.done():
                waiter.provisional.set_result(response)
            if status >= 180 and waiter.ringing is not None and not waiter.ringing.done():
                waiter.ringing.set_result(response)
            return None
        waiter.final.set_result(response)
        return None

    def on_stray_response(self, response: SipMessage, source: Address) -> Any:
        if 200 <= (response.status or 0) < 300 and response.cseq and response.cseq[1] == "INVITE":
            self._reack(response)
        return None

    def _reack(self, response: SipMessage) -> None:
        leg = self._calls.get(response.call_id or "")
        if leg is not None and leg.ack is not None and leg.ack_destination is not None:
            self.ue_stats["ack_resent"] += 1
            self.send_stateless(leg.ack, leg.ack_destination)

    def on_timeout(self, transaction: Transaction, timer: str) -> Any:
        waiter = self._waiters.get(transaction)
        if waiter is not None and not waiter.final.done():
            waiter.final.set_result(transaction.request.make_response(408))  # type: ignore[attr-defined]
        leg = self._server_legs.pop(transaction, None)
        if leg is not None:
            self._drop_leg(leg)
        return None

    def on_transaction_terminated(self, transaction: Transaction) -> Any:
        waiter = self._waiters.get(transaction)
        if waiter is not None and waiter.final.done():
            self._waiters.pop(transaction, None)
        self._server_legs.pop(transaction, None)
        return None

    # == leg bookkeeping ======================================================================

    def _drop_leg(self, leg: CallLeg) -> None:
        """The call is over for this user: forget its dialog and give back its RTP port."""
        if leg.timer is not None:
            leg.timer.cancel()
            leg.timer = None
        if leg.server_tx is not None:
            self._server_legs.pop(leg.server_tx, None)
        user = self._users.get(leg.user)
        if user is not None and user.legs.get(leg.key) is leg:
            del user.legs[leg.key]
            self._release_media(leg)
        if leg.role == "uac" and self._calls.get(leg.call_id) is leg:
            del self._calls[leg.call_id]
        leg.state = "ended"
        leg.ended.set()

    def _media_host(self) -> str:
        """The address of our SDP bodies: the media engine's (media on) or our SIP address."""
        return self.media.host if self.media is not None else self.address[0]

    def _rtp_port(self, leg: CallLeg) -> int | None:
        """The leg's RTP port: a port pair of the media engine (media on) or a number from the
        range; ``None`` when none is free."""
        if self.media is None:
            return self.rtp_ports.allocate()
        try:
            return self.media.open(leg.key, leg.call_id, leg.user, leg.role)
        except OSError as error:
            self.ue_stats["media_port_errors"] += 1
            self.log.info("ue_media_port_failed", call_id=leg.call_id, error=str(error))
            return None

    def _release_media(self, leg: CallLeg) -> None:
        if self.media is None:
            self.rtp_ports.release(leg.rtp_port)
        elif leg.rtp_port is not None:
            leg.media = self.media.close(leg.key)

    # == queries ==============================================================================

    def active_calls(self) -> list[dict[str, Any]]:
        """Every call leg a user of the pool has right now (both sides of an internal call)."""
        now = self.now
        return [leg.info(now) for user in self._users.values() for leg in user.legs.values()]

    def get_users(self) -> list[str]:
        return list(self.user_names)

    def get_stats(self) -> dict[str, Any]:
        """SIP counters (``SipActor``) plus the pool's: ``calls_placed``, ``calls_answered``,
        ``calls_completed``, ``calls_failed`` and ``calls_failed_<status>`` (``_0``: no final
        response in time), ``calls_failed_bye``, ``calls_received``,
        ``calls_answered_in``, ``calls_rejected_486``, ``register_ok``, ``reregister_ok``,
        ``deregister_ok``, ``register_failed_<status>``; gauges ``users``, ``registered``,
        ``active_calls``, ``rtp_ports_in_use``, ``pending_transactions``."""
        out: dict[str, Any] = super().get_stats()
        out.update(self.ue_stats)
        out["users"] = len(self._users)
        out["registered"] = len(self.registered_users())
        out["active_calls"] = sum(len(u.legs) for u in self._users.values())
        out["rtp_ports_in_use"] = self.rtp_ports.in_use
        out["pending_transactions"] = len(self._waiters)
        return out

    def get_media_stats(self) -> dict[str, Any]:
        """The media of the pool's finished call legs, both sides (``{}`` without media):
        ``legs``, ``packets_sent``, ``packets_received``, ``lost``, ``loss`` (fraction),
        ``latency_ms`` (``p50``, ``p90``, ``p99``, ``max``), ``jitter_ms``, ``rr_sent``,
        ``rr_received``, ``active_legs``, and the engine's counters."""
        return self.media.stats() if self.media is not None else {}

    def get_media_results(self) -> list[MediaResult]:
        """Every finished leg's :class:`~nf_modules.ue_media.MediaResult`, oldest first."""
        return list(self.media.results) if self.media is not None else []

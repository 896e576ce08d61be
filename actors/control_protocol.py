"""The control protocol between NFs (MRFC <-> MRFP, anyone -> HSS), sans-IO.

One JSON object per UDP datagram, UTF-8, at most :data:`MAX_DATAGRAM` bytes::

    request:  {"v": 1, "id": 17, "op": "auth_vector", "args": {"impu": "sip:ue0001@ims.example"}}
    reply:    {"v": 1, "id": 17, "ok": true, "result": {...}}
    error:    {"v": 1, "id": 17, "ok": false, "error": {"code": "not_found", "message": "..."}}

``id`` is an integer in ``0 .. 2**53 - 1`` chosen by the client, unique among its outstanding
requests; ``op`` is a lower-case identifier (``[a-z][a-z0-9_]*``, at most 64 characters); ``args``
an object (default ``{}``). Error codes in use: ``not_found``, ``unknown_op``, ``bad_args``,
``bad_request``, ``bad_version``, ``too_large``, ``internal`` (handlers may add their own).

Reliability is the client's: it retransmits the identical datagram after ``retransmit`` seconds,
doubling the interval each time (capped at ``retransmit_cap``), until a reply arrives or
``timeout`` seconds have passed since the request, when it gives up (:class:`Failed`). The server
makes execution at-most-once: a request whose ``(source, id)`` it has seen within ``window``
seconds is not executed again; if its reply is known the cached reply is sent again, if the first
copy is still being executed the duplicate is dropped (the reply will come).

Like the sans-IO SIP layer, nothing here does I/O or reads a clock: the caller passes ``now``,
sends what :meth:`ControlClient.datagrams_to_send` returns, arms one timer at ``get_timer()`` and
calls ``handle_timer(now)`` when it fires. ``actors.control`` puts this on a ``UdpEndpoint``.
"""

from __future__ import annotations

import json
import json.encoder
import math
import random
import re
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Union

__all__ = [
    "MAX_DATAGRAM",
    "MAX_ID",
    "VERSION",
    "ControlClient",
    "ControlDecodeError",
    "ControlEncodeError",
    "ControlServer",
    "ErrorReply",
    "Failed",
    "Reply",
    "Request",
    "Response",
    "decode",
    "encode_error",
    "encode_request",
    "encode_result",
]

VERSION = 1
#: Largest datagram sent or accepted (bytes). Loopback UDP carries up to 65,507.
MAX_DATAGRAM = 60_000
#: Ids stay exact in any JSON implementation (IEEE doubles).
MAX_ID = 2**53 - 1

Address = tuple[Any, ...]
_OP = re.compile(r"[a-z][a-z0-9_]{0,63}")


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    op: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Response:
    """A reply on the wire: ``ok`` with ``result``, or not ``ok`` with ``code`` and ``message``."""

    id: int
    ok: bool
    result: Any = None
    code: str = ""
    message: str = ""


class ControlDecodeError(ValueError):
    """A datagram that is not a control message.

    ``code``: ``oversize``, ``bad_json`` (not UTF-8 JSON, or not an object), ``bad_version``,
    ``bad_request`` (an object of the wrong shape). ``id`` is the request id when it could be
    read (then an error reply can be sent), else ``None``.
    """

    def __init__(self, code: str, reason: str, id: int | None = None) -> None:  # noqa: A002
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.id = id


class ControlEncodeError(ValueError):
    """A message that cannot be sent: not JSON-serialisable, or larger than ``MAX_DATAGRAM``."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One encoder and one decoder for the module: ``json.dumps`` / ``json.loads`` with non-default
# options build a new JSONEncoder / JSONDecoder (and its scanner) on every call.
# The C encoder is made once too, without the circular-reference markers (a cycle ends in
# RecursionError, which is refused like any unserialisable value).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_C_ENCODE = (
    json.encoder.c_make_encoder(None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",",
                                False, False, False)
    if json.encoder.c_make_encoder is not None else None
)


def _encode_json(obj: dict[str, Any]) -> str:
    if _C_ENCODE is not None:
        return "".join(_C_ENCODE(obj, 0))
    return _ENCODER.encode(obj)


def _dumps(obj: dict[str, Any]) -> bytes:
    try:
        data = _encode_json(obj).encode()
    except (TypeError, ValueError, RecursionError) as error:
        raise ControlEncodeError(f"not JSON-serialisable: {error}") from None
    if len(data) > MAX_DATAGRAM:
        raise ControlEncodeError(f"{len(data)} bytes is over the {MAX_DATAGRAM}-byte limit")
    return data


def _address(dest: Any) -> Address:
    """``(host, port)`` from a tuple/list whose first two items are a str host and an int port."""
    if (
        isinstance(dest, (tuple, list))
        and len(dest) >= 2
        and isinstance(dest[0], str)
        and type(dest[1]) is int
        and 0 < dest[1] < 65536
    ):
        return (dest[0], dest[1])
    raise ValueError(f"destination must be (host, port), got {dest!r}")


def _valid_id(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_ID


def encode_request(id: int, op: str, args: dict[str, Any] | None = None) -> bytes:  # noqa: A002
    if not _valid_id(id):
        raise ControlEncodeError(f"id must be an int in 0..{MAX_ID}, got {id!r}")
    if not isinstance(op, str) or not _OP.fullmatch(op):
        raise ControlEncodeError(f"op must match {_OP.pattern}, got {op!r}")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ControlEncodeError(f"args must be a dict, got {type(args).__name__}")
    return _dumps({"v": VERSION, "id": id, "op": op, "args": args})


def encode_result(id: int, result: Any) -> bytes:  # noqa: A002
    return _dumps({"v": VERSION, "id": id, "ok": True, "result": result})


def encode_error(id: int, code: str, message: str = "") -> bytes:  # noqa: A002
    return _dumps({"v": VERSION, "id": id, "ok": False, "error": {"code": code, "message": message}})


def decode(data: bytes) -> Request | Response:
    """Parse one datagram. Raises :class:`ControlDecodeError` on anything but a valid message."""
    if len(data) > MAX_DATAGRAM:
        raise ControlDecodeError("oversize", f"{len(data)} bytes")
    try:
        if data[:1] == b"{" and data[1:2] != b"\x00":
            # What json.loads would detect as UTF-8 (no BOM, no UTF-16/32 zero byte): decode
            # it the same way and parse with the shared decoder.
            obj = _DECODER.decode(data.decode("utf-8", "surrogatepass"))
        else:
            obj = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError too
        raise ControlDecodeError("bad_json", str(error)[:200]) from None
    if not isinstance(obj, dict):
        raise ControlDecodeError("bad_json", f"a JSON {type(obj).__name__}, not an object")
    id_ = obj.get("id")
    is_request = "op" in obj
    if type(id_) is not int or not 0 <= id_ <= MAX_ID:  # _valid_id, inline
        raise ControlDecodeError("bad_request", f"bad id {id_!r}"[:200])
    reply_id = id_ if is_request else None  # never answer a reply, even a bad one
    version = obj.get("v")
    if type(version) is not int or version != VERSION:
        raise ControlDecodeError("bad_version", f"version {version!r} is not {VERSION}"[:200], reply_id)
    if is_request:
        op = obj["op"]
        if not isinstance(op, str) or not _OP.fullmatch(op):
            raise ControlDecodeError("bad_request", f"bad op {op!r}"[:200], id_)
        args = obj["args"] if "args" in obj else {}
        if not isinstance(args, dict):
            raise ControlDecodeError("bad_request", "args is not an object", id_)
        return Request(id_, op, args)
    ok = obj.get("ok")
    if ok is True:
        return Response(id_, True, obj.get("result"))
    if ok is False:
        error = obj.get("error")
        if not isinstance(error, dict) or not isinstance(error.get("code"), str):
            raise ControlDecodeError("bad_request", "error reply without error.code")
        message = error.get("message", "")
        return Response(id_, False, code=error["code"], message=message if isinstance(message, str) else str(message))
    # A reply we cannot read: never answer it (no error reply to a reply), so no id.
    raise ControlDecodeError("bad_request", "neither a request (op) nor a reply (ok)")


# --------------------------------------------------------------------------- client


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful reply to request ``id``."""

    id: int
    result: Any


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error reply to request ``id``."""

    id: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Failed:
    """Request ``id`` got no reply within its timeout (``reason`` ``"timeout"``)."""

    id: int
    reason: str = "timeout"


ClientEvent = Union[Reply, ErrorReply, Failed]


@dataclass(slots=True)
class _Pending:
    data: bytes
    dest: Address
    deadline: float  # give up
    next_send: float  # next retransmission
    interval: float


class ControlClient:
    """The requesting side: ids, retransmission, timeout, reply matching.

    A reply matches a pending request by id *and* source address (the request's destination,
    compared on ``(host, port)``); anything else is counted as ``stray`` and ignored.
    ``first_id`` seeds the id sequence (``None``: a random 31-bit start, so a restarted client on
    the same port does not hit the server's duplicate cache with old ids).
    """

    def __init__(
        self,
        *,
        timeout: float = 2.0,
        retransmit: float = 0.25,
        retransmit_cap: float = 4.0,
        first_id: int | None = None,
    ) -> None:
        if not timeout > 0 or not retransmit > 0 or not retransmit_cap >= retransmit:
            raise ValueError("need timeout > 0 and 0 < retransmit <= retransmit_cap")
        self.timeout = float(timeout)
        self.retransmit = float(retransmit)
        self.retransmit_cap = float(retransmit_cap)
        self._next_id = random.getrandbits(31) if first_id is None else first_id
        if not _valid_id(self._next_id):
            raise ValueError(f"first_id must be in 0..{MAX_ID}")
        self._pending: dict[int, _Pending] = {}
        self._out: list[tuple[bytes, Address]] = []
        self._events: list[ClientEvent] = []
        self.stats: Counter[str] = Counter()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def request(
        self, op: str, args: dict[str, Any] | None, dest: Address, now: float, *, timeout: float | None = None
    ) -> int:
        """Queue a request to ``dest``; returns its id.

        Raises :class:`ControlEncodeError` for what cannot be sent, ``ValueError`` for a bad
        ``dest`` or ``timeout``; a refused request uses no id.
        """
        dest = _address(dest)
        timeout = self.timeout if timeout is None else float(timeout)
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        id_ = self._next_id
        while id_ in self._pending:
            id_ = (id_ + 1) % (MAX_ID + 1)
        data = encode_request(id_, op, args)
        self._next_id = (id_ + 1) % (MAX_ID + 1)
        self._pending[id_] = _Pending(data, dest, now + timeout, now + self.retransmit, self.retransmit)
        self._out.append((data, dest))
        self.stats["tx_request"] += 1
        return id_

    def cancel(self, id: int) -> bool:  # noqa: A002
        """Forget request ``id`` (its caller stopped waiting); a late reply is then stray."""
        return self._pending.pop(id, None) is not None

    def receive(self, data: bytes, source: Address, now: float) -> bool:
        """Feed a datagram; True if it was a reply to one of our pending requests."""
        try:
            message = decode(data)
        except ControlDecodeError as error:
            self.stats[f"dropped_{error.code}"] += 1
            return False
        if not isinstance(message, Response):
            self.stats["dropped_not_reply"] += 1
            return False
        return self.receive_response(message, source, now)

    def receive_response(self, response: Response, source: Address, now: float) -> bool:
        """Feed an already decoded reply (see :func:`decode`)."""
        pending = self._pending.get(response.id)
        if pending is None or (source[0], source[1]) != pending.dest:
            self.stats["stray"] += 1
            return False
        del self._pending[response.id]
        if response.ok:
            self.stats["rx_ok"] += 1
            self._events.append(Reply(response.id, response.result))
        else:
            self.stats["rx_error"] += 1
            self._events.append(ErrorReply(response.id, response.code, response.message))
        return True

    def get_timer(self) -> float | None:
        """The next instant something is due (a retransmission or a give-up), or None."""
        best: float | None = None
        for p in self._pending.values():
            due = min(p.next_send, p.deadline)
            if best is None or due < best:
                best = due
        return best

    def handle_timer(self, now: float) -> None:
        """Retransmit what is due and fail what has timed out (late calls are fine)."""
        for id_, p in list(self._pending.items()):
            if now >= p.deadline:
                del self._pending[id_]
                self.stats["timeout"] += 1
                self._events.append(Failed(id_))
                continue
            if now >= p.next_send:
                self._out.append((p.data, p.dest))
                self.stats["retransmit"] += 1
                p.interval = min(p.interval * 2, self.retransmit_cap)
                p.next_send = now + p.interval

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[ClientEvent]:
        out, self._events = self._events, []
        return out


# --------------------------------------------------------------------------- server


@dataclass(slots=True)
class _Entry:
    data: bytes | None  # None while the request is executing
    expires_at: float | None = None


class ControlServer:
    """The answering side: decoding, at-most-once execution, reply cache.

    ``receive`` returns the :class:`Request` to execute (or ``None`` when the datagram was a
    duplicate, a reply, or garbage); the caller executes it and calls :meth:`respond` /
    :meth:`respond_error` with the same request and source. Replies are cached per
    ``(source, id)`` for ``window`` seconds after they were sent (a request still executing is
    remembered for as long as it runs). At most ``max_entries`` are kept; beyond that the oldest
    are forgotten first. ``stats`` counts requests, duplicates, drops (``dropped_<code>``) and
    every error reply sent (``error_<code>``).
    """

    def __init__(self, *, window: float = 10.0, max_entries: int = 100_000) -> None:
        if not window > 0 or max_entries < 1:
            raise ValueError("need window > 0 and max_entries >= 1")
        self.window = float(window)
        self.max_entries = max_entries
        self._cache: dict[tuple[Address, int], _Entry] = {}
        self._expiry: deque[tuple[float, tuple[Address, int]]] = deque()
        self._out: list[tuple[bytes, Address]] = []
        self.stats: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._cache)

    def receive(self, data: bytes, source: Address, now: float) -> Request | None:
        """Feed a datagram; returns a new request to execute, or None."""
        try:
            message = decode(data)
        except ControlDecodeError as error:
            self.reject(error, source)
            return None
        if not isinstance(message, Request):
            self.stats["dropped_not_request"] += 1
            return None
        return self.receive_request(message, source, now)

    def reject(self, error: ControlDecodeError, source: Address) -> None:
        """Count a datagram that did not decode; answer it when it was a request with an id."""
        self.stats[f"dropped_{error.code}"] += 1
        if error.id is not None:
            self.stats[f"error_{error.code}"] += 1
            self._send((source[0], source[1]), encode_error(error.id, error.code, error.reason))

    def receive_request(self, request: Request, source: Address, now: float) -> Request | None:
        """Feed an already decoded request; None if it is a duplicate."""
        self.handle_timer(now)
        source = (source[0], source[1])
        key = (source, request.id)
        entry = self._cache.get(key)
        if entry is not None:
            if entry.data is None:
                self.stats["duplicate_in_progress"] += 1
            else:
                self.stats["duplicate_answered"] += 1
                self._send(source, entry.data)
            return None
        self.stats["rx_request"] += 1
        if len(self._cache) >= self.max_entries:
            self._evict_oldest()
        self._cache[key] = _Entry(None)
        return request

    def respond(self, request: Request, source: Address, result: Any, now: float) -> None:
        """Send (and cache) the result of ``request``; an unencodable result becomes an error."""
        try:
            data = encode_result(request.id, result)
        except ControlEncodeError as error:
            self.stats["encode_errors"] += 1
            code = "too_large" if "limit" in str(error) else "internal"
            self.stats[f"error_{code}"] += 1
            data = encode_error(request.id, code, str(error))
        self._finish(request, source, data, now)

    def respond_error(self, request: Request, source: Address, code: str, message: str, now: float) -> None:
        """Send (and cache) an error reply to ``request``."""
        self.stats[f"error_{code}"] += 1
        try:
            data = encode_error(request.id, code, message)
        except ControlEncodeError:
            data = encode_error(request.id, code, message[:1000])
        self._finish(request, source, data, now)

    def _finish(self, request: Request, source: Address, data: bytes, now: float) -> None:
        source = (source[0], source[1])
        key = (source, request.id)
        entry = self._cache.get(key)
        if entry is None:  # forgotten meanwhile (evicted): remember it again
            if len(self._cache) >= self.max_entries:
                self._evict_oldest()
            entry = self._cache[key] = _Entry(None)
        entry.data = data
        entry.expires_at = now + self.window
        self._expiry.append((entry.expires_at, key))
        self._send(source, data)
        self.stats["tx_response"] += 1

    def _send(self, dest: Address, data: bytes) -> None:
        self._out.append((data, dest))

    def _evict_oldest(self) -> None:
        # dicts keep insertion order: the first key is the oldest request seen
        oldest = next(iter(self._cache))
        del self._cache[oldest]
        self.stats["evicted"] += 1

    def get_timer(self) -> float | None:
        """When the oldest cached reply leaves the window, or None."""
        return self._expiry[0][0] if self._expiry else None

    def handle_timer(self, now: float) -> None:
        """Forget replies whose window has passed (``expiry <= now``)."""
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            deadline, key = expiry.popleft()
            entry = self._cache.get(key)
            if entry is not None and entry.expires_at == deadline:
                del self._cache[key]

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

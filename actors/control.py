"""The control protocol on a UDP port, for any actor: :class:`ControlPeer` and :class:`ControlActor`.

:class:`ControlPeer` is a small helper an actor owns: one :class:`~actors.transport.UdpEndpoint`,
the sans-IO :class:`~actors.control_protocol.ControlClient` and
:class:`~actors.control_protocol.ControlServer`, and one armed ``call_at`` for the client's next
retransmission or give-up. Any :class:`~actors.actor.AsyncioActor` (a ``SipActor`` too) makes one
in its ``async on_start`` and closes it in ``on_stop``::

    async def on_start(self):
        await super().on_start()
        self.control = await ControlPeer.open(self, ("127.0.0.1", 0), clock=self.clock)

    async def on_request(self, request, transaction, source):     # a SipActor hook
        vector = await self.control.request(hss, "auth_vector", impu="sip:ue0001@ims.example")

Serving: a request for ``op`` calls the owner's ``handle_<op>(**args)`` (sync or ``async def``)
and replies with its return value (JSON-serialisable). Raise :class:`ControlError` in a handler
to reply with an error code (``not_found`` ...). An unknown op gets ``unknown_op``, arguments the
handler's signature refuses get ``bad_args``, any other exception ``internal`` (logged, counted in
``handler_errors``; the actor lives). Every error reply sent is counted as ``error_<code>``. Datagrams that are not control messages (bad JSON, oversize, wrong
shape) are counted in ``stats`` and dropped (a request of the wrong shape whose id could be read
is answered with ``bad_request`` / ``bad_version``). Every peer answers ``ping`` unless its owner
defines ``handle_ping``.

Requesting: ``await peer.request(dest, op, **args)`` returns the reply's ``result`` or raises
:class:`ControlError` (an error reply, ``.code`` / ``.message``) or :class:`ControlTimeout` (no
reply within the client's timeout, retransmissions included).

Threading: everything runs on the owner's loop. Incoming datagrams are handled in the endpoint's
callback on that loop, *not* through the actor's inbox, like SIP in ``SipActor``: a handler
therefore runs between the owner's inbox messages (sync handlers atomically; ``async`` handlers
as tasks of the peer that interleave at their ``await`` points), and an inbox handler or SIP hook
of the owner may ``await`` a control reply without deadlocking (the reply does not need the
inbox). ``request`` must be awaited on that loop.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from typing import Any

from actors.actor import AsyncioActor
from actors.clock import Clock, LoopClock
from actors.control_protocol import (
    Address,
    ControlClient,
    ControlDecodeError,
    ControlServer,
    ErrorReply,
    Failed,
    Reply,
    Request,
    Response,
    decode,
)
from actors.logs import get_logger
from actors.transport import TransportSeam, UdpEndpoint

__all__ = [
    "ControlActor",
    "ControlError",
    "ControlFailure",
    "ControlPeer",
    "ControlTimeout",
]


class ControlFailure(Exception):
    """Base of what ``ControlPeer.request`` raises."""


class ControlTimeout(ControlFailure, TimeoutError):
    """No reply within the timeout (the request may or may not have been executed)."""

    def __init__(self, dest: Address, op: str, timeout: float) -> None:
        super().__init__(f"no reply from {dest[0]}:{dest[1]} to {op!r} within {timeout} s")
        self.dest = dest
        self.op = op


class ControlError(ControlFailure):
    """An error reply. Raise it in a ``handle_<op>`` to answer with ``code`` and ``message``."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


_MISSING = object()

#: Parameter kinds a request's keyword arguments can fill (see ``ControlPeer._handler``).
_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
#: Result types that are never awaitable (``ControlPeer._execute``'s fast path).
_PLAIN = frozenset({dict, list, str, int, float, bool, type(None)})
_Handler = tuple[Any, "inspect.Signature | None", "frozenset[str] | None", "frozenset[str]"]


class ControlPeer:
    """A control-protocol endpoint owned by an actor (or any object with ``handle_<op>`` methods).

    Build it with :meth:`open` on the owner's loop. ``owner=None`` makes a client-only peer
    (every request it receives gets ``unknown_op``, except ``ping``).
    """

    def __init__(
        self,
        owner: Any,
        endpoint: UdpEndpoint,
        clock: Clock,
        client: ControlClient,
        server: ControlServer,
        *,
        name: str = "",
    ) -> None:
        self.owner = owner
        self.endpoint = endpoint
        self.clock = clock
        self.client = client
        self.server = server
        self.name = name
        self.stats: Counter[str] = Counter()
        self.log = get_logger("control", instance=name or None)
        self._loop = asyncio.get_running_loop()
        self._waiters: dict[int, tuple[asyncio.Future[Any], Address, str, float]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._signatures: dict[str, _Handler] = {}
        self._timer: asyncio.TimerHandle | Any = None
        self._timer_deadline: float | None = None
        self._closed = False
        endpoint.on_datagram = self._datagram_received

    @classmethod
    async def open(
        cls,
        owner: Any = None,
        bind: tuple[str, int] = ("127.0.0.1", 0),
        *,
        name: str = "",
        clock: Clock | None = None,
        seam: TransportSeam | None = None,
        timeout: float = 2.0,
        retransmit: float = 0.25,
        window: float = 10.0,
        first_id: int | None = None,
        recv_buffer_size: int | None = None,
    ) -> ControlPeer:
        """Bind ``bind`` (port 0: ephemeral) and serve ``owner``'s ``handle_<op>`` methods.

        ``clock`` should be the owner's clock (e.g. a ``SipActor``'s ``self.clock``) so the
        protocol's timers run in the same emulated time; default: a fresh ``LoopClock``.
        ``timeout`` / ``retransmit`` are the client's defaults; ``window`` is how long the server
        remembers replies for duplicate requests (keep it above the peers' timeout).
        """
        clock = clock or LoopClock(asyncio.get_running_loop())
        endpoint = await UdpEndpoint.open(
            bind, None, seam=seam, name=name, clock=clock, recv_buffer_size=recv_buffer_size
        )
        client = ControlClient(timeout=timeout, retransmit=retransmit, first_id=first_id)
        server = ControlServer(window=window)
        return cls(owner, endpoint, clock, client, server, name=name)

    # -- public surface -----------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` this peer sends from and serves on."""
        return tuple(self.endpoint.local_address[:2])  # type: ignore[return-value]

    @property
    def now(self) -> float:
        return self.clock.now()

    async def request(self, dest: Address, op: str, /, **args: Any) -> Any:
        """Send ``op(**args)`` to ``dest`` and return the reply's result (see :meth:`call`)."""
        return await self.call(dest, op, args)

    async def call(self, dest: Address, op: str, args: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Send a request and await its reply on this loop.

        Raises :class:`ControlError` for an error reply, :class:`ControlTimeout` when no reply
        came within ``timeout`` (default: the client's), ``ControlEncodeError`` (a ``ValueError``)
        for arguments that cannot be sent, ``ValueError`` for a bad ``dest``. Cancelling the awaiting task forgets the request.
        """
        if self._closed:
            raise ControlError("closed", "control peer is closed")
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError("ControlPeer.call() must be awaited on its owner's loop")
        id_ = self.client.request(op, args, dest, self.now, timeout=timeout)
        dest = (dest[0], dest[1])
        future: asyncio.Future[Any] = self._loop.create_future()
        self._waiters[id_] = (future, dest, op, self.client.timeout if timeout is None else timeout)
        self._flush()
        try:
            return await future
        finally:
            if self._waiters.pop(id_, None) is not None:  # cancelled while waiting
                self.client.cancel(id_)
                self._arm_timer()

    def get_stats(self) -> dict[str, int]:
        """Counters of the peer, its client and server, and its UDP endpoint."""
        out: Counter[str] = Counter()
        out.update(self.server.stats)
        out.update({f"client_{k}": v for k, v in self.client.stats.items()})
        out.update(self.stats)
        out.update({f"udp_{k}": v for k, v in self.endpoint.stats.as_dict().items()})
        return dict(out)

    def close(self) -> None:
        """Close the socket, cancel running handlers, fail requests still waiting. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        waiters, self._waiters = self._waiters, {}
        for future, _, _, _ in waiters.values():
            if not future.done():
                future.set_exception(ControlError("closed", "control peer closed"))
        self.endpoint.close()

    # -- input: the endpoint's callback, on the owner's loop ------------------------------

    def _datagram_received(self, data: bytes, source: Address) -> None:
        self.stats["rx_datagrams"] += 1
        now = self.now
        try:
            message = decode(data)
        except ControlDecodeError as error:
            self.server.reject(error, source)
            self.log.debug("control_dropped", source=source, code=error.code, reason=error.reason)
            self._flush()
            return
        if type(message) is Response:
            self.client.receive_response(message, source, now)
            self._deliver_events()
        else:
            request = self.server.receive_request(message, source, now)
            if request is not None:
                self._execute(request, (source[0], source[1]))
        self._flush()

    def _execute(self, request: Request, source: Address) -> None:
        handler, signature, names, required = self._handler(request.op)
        if handler is None:
            self._reply_error(request, source, "unknown_op", f"no operation {request.op!r}")
            return
        args = request.args
        # The common case costs two set comparisons: every argument is a parameter the handler
        # takes by keyword and every required one is there. Anything else (or a signature the
        # sets cannot describe) goes through Signature.bind, which also words the bad_args error.
        if signature is not None and (names is None or not (args.keys() <= names and required <= args.keys())):
            try:
                signature.bind(**args)
            except TypeError as error:
                self._reply_error(request, source, "bad_args", str(error))
                return
        try:
            result = handler(**args)
        except Exception as error:  # noqa: BLE001
            self._handler_failed(request, source, error)
            return
        # Handlers mostly return plain JSON values; skip isawaitable's ABC check for those.
        if type(result) not in _PLAIN and inspect.isawaitable(result):
            task = self._loop.create_task(self._finish_async(request, source, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self.server.respond(request, source, result, self.now)

    async def _finish_async(self, request: Request, source: Address, awaitable: Any) -> None:
        try:
            result = await awaitable
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001
            self._handler_failed(request, source, error)
        else:
            self.server.respond(request, source, result, self.now)
        self._flush()

    def _handler_failed(self, request: Request, source: Address, error: Exception) -> None:
        if isinstance(error, ControlError):
            self._reply_error(request, source, error.code, error.message)
            return
        self.stats["handler_errors"] += 1
        self.log.error("control_handler_failed", op=request.op, error=repr(error), exc_info=error)
        self._reply_error(request, source, "internal", f"{type(error).__name__} in {request.op}")

    def _reply_error(self, request: Request, source: Address, code: str, message: str) -> None:
        self.server.respond_error(request, source, code, message, self.now)

    def _handler(self, op: str) -> _Handler:
        """``(handler, signature, names, required)`` for ``op``, cached per op. ``names`` /
        ``required``: the keyword parameters the handler takes / must get, or ``None`` when its
        signature has more than plain keyword-able parameters (``*args``, ``**kwargs``,
        positional-only): then every request is checked with ``signature.bind``."""
        cached = self._signatures.get(op)
        if cached is not None:
            return cached
        handler = getattr(self.owner, f"handle_{op}", None) if self.owner is not None else None
        if handler is None and op == "ping":
            handler = self._ping
        if handler is None or not callable(handler):
            found: _Handler = (None, None, None, frozenset())
        else:
            try:
                signature: inspect.Signature | None = inspect.signature(handler)
            except (TypeError, ValueError):
                signature = None
            names: frozenset[str] | None = None
            required: frozenset[str] = frozenset()
            if signature is not None and all(p.kind in _KEYWORD_KINDS for p in signature.parameters.values()):
                names = frozenset(signature.parameters)
                required = frozenset(n for n, p in signature.parameters.items() if p.default is p.empty)
            found = (handler, signature, names, required)
        self._signatures[op] = found
        return found

    def _ping(self) -> dict[str, Any]:
        return {"pong": True, "name": self.name}

    # -- client events, output and the timer ------------------------------------------------

    def _deliver_events(self) -> None:
        for event in self.client.events():
            waiter = self._waiters.pop(event.id, None)
            if waiter is None:
                continue
            future, dest, op, timeout = waiter
            if future.done():
                continue
            if type(event) is Reply:
                future.set_result(event.result)
            elif type(event) is ErrorReply:
                future.set_exception(ControlError(event.code, event.message))
            elif type(event) is Failed:
                future.set_exception(ControlTimeout(dest, op, timeout))

    def _flush(self) -> None:
        if self._closed:
            return
        send = self.endpoint.send
        for data, dest in self.client.datagrams_to_send():
            send(data, dest)
        for data, dest in self.server.datagrams_to_send():
            send(data, dest)
        self._arm_timer()

    def _arm_timer(self) -> None:
        # Only the client's deadlines are armed; the server's reply cache is purged as requests
        # arrive (bounded by its max_entries), which costs no timer per reply.
        # The armed timer is only moved *earlier*: a reply that leaves nothing (or only later
        # deadlines) pending keeps it, and it fires once, early, for handle_timer to find
        # nothing due and re-arm. A request answered within its retransmission interval thus
        # costs no timer handle of its own (no call_at + cancel per exchange).
        if self._closed:
            return
        deadline = self.client.get_timer()
        if deadline is None or (self._timer_deadline is not None and self._timer_deadline <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_deadline = deadline
        self._timer = self.clock.call_at(deadline, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._timer_deadline = None
        if self._closed:
            return
        self.client.handle_timer(self.now)
        self._deliver_events()
        self._flush()


class ControlActor(AsyncioActor):
    """An actor whose interface is the control protocol on one UDP port.

    Subclasses define ``handle_<op>`` methods (see :class:`ControlPeer`); they run on the actor's
    loop. ``self.control`` is the peer, ``self.control_request(dest, op, **args)`` asks another
    NF. ``get_address()`` and ``get_stats()`` can be asked through a proxy.
    """

    def __init__(
        self,
        name: str,
        bind: tuple[str, int] = ("127.0.0.1", 0),
        *,
        seam: TransportSeam | None = None,
        time_scale: float = 1.0,
        timeout: float = 2.0,
        retransmit: float = 0.25,
        window: float = 10.0,
    ) -> None:
        super().__init__()
        self.name = name
        self.bind = bind
        self.clock: Clock | None = None
        self.control: ControlPeer | None = None
        self.log = get_logger(type(self).__name__, instance=name)
        self._seam = seam
        self._time_scale = time_scale
        self._peer_options = {"timeout": timeout, "retransmit": retransmit, "window": window}

    async def on_start(self) -> None:
        """Runs on the actor's loop: open the control port."""
        self.clock = LoopClock(self.loop, time_scale=self._time_scale)
        self.control = await ControlPeer.open(
            self, self.bind, name=self.name, clock=self.clock, seam=self._seam, **self._peer_options
        )
        self.address = self.control.address
        self.log.debug("control_listening", address=self.address)

    def on_stop(self) -> None:
        self._close_control()

    def on_failure(self, *exc_info: Any) -> None:
        self._close_control()

    def _close_control(self) -> None:
        if self.control is not None:
            self.control.close()

    @property
    def now(self) -> float:
        """The actor's emulated time (its clock's ``now()``)."""
        return self.clock.now()  # type: ignore[union-attr]

    def get_address(self) -> tuple[str, int]:
        return self.address

    def get_stats(self) -> dict[str, int]:
        return self.control.get_stats() if self.control is not None else {}

    async def control_request(self, dest: Address, op: str, /, **args: Any) -> Any:
        """``await`` another NF's ``op(**args)``; see :meth:`ControlPeer.call`."""
        return await self.control.request(dest, op, **args)  # type: ignore[union-attr]

"""UDP endpoints with a fault seam.

:class:`UdpEndpoint` is an asyncio datagram endpoint that every SIP/RTP/control socket of the
emulator uses. It does three things besides sending and receiving: it counts (:class:`EndpointStats`),
it survives its input (a handler that raises is counted and logged, never fatal), and it offers
the *seam* through which faults enter from outside.

Threading: everything here runs on the endpoint's event loop thread. ``on_datagram`` is called on
that thread, synchronously from the loop's read callback, one datagram at a time; it must not
block (hand work to a task or an actor inbox if it is slow). ``send()``, ``close()`` and setting
``seam`` must be called on the loop thread too (from elsewhere, go through
``loop.call_soon_threadsafe``).

The seam
--------
A :class:`TransportSeam` sits between the socket and the endpoint's user in both directions::

    send(data, addr) -> seam.outbound(data, addr, now) -> [(delay, data', addr'), ...] -> socket
    socket -> seam.inbound(data, addr, now) -> [(delay, data', addr'), ...] -> on_datagram

Each call returns zero or more datagrams to emit, each after ``delay`` emulated seconds (``<= 0``:
at once, in list order). Returning nothing drops the datagram; returning several duplicates it;
changing the bytes corrupts it. ``now`` and delays are in the endpoint's clock
(:mod:`actors.clock`), so delays compress with ``time_scale`` like everything else.

A seam that holds datagrams back (to reorder them) may also implement ``next_deadline() -> float |
None`` and ``poll(now) -> iterable of (direction, delay, data, addr)`` (direction
``"outbound"``/``"inbound"``): the endpoint then arms one clock timer for the seam's next deadline
and calls ``poll`` when it is reached, like the sans-IO SIP layer's ``get_timer`` / ``handle_timer``.

``seam = None`` (the default) is a pass-through with no overhead beyond one ``is None`` test per
datagram. Faults are applied by code outside the endpoint replacing ``endpoint.seam`` at run time;
the endpoint and the code above it never know whether they are under test. A seam can keep state
(held datagrams, random streams); give each endpoint its own instance. Replacing a seam discards
whatever the old one still holds. See :class:`actors.impairment.LinkImpairment` for the standard
seam (loss, delay, jitter, duplication, reordering, corruption, blackhole, partitions).

Several faults on one endpoint
------------------------------
``add_seam(seam)`` / ``remove_seam(seam)`` stack seams in a :class:`SeamStack` instead of replacing
``endpoint.seam``, so independent faults (a delay here, a partition there) and observers can share
one endpoint. ``add_seam(seam, tap=True)`` puts the seam at the socket side of every other layer:
a tap sees what actually reaches the wire outbound and what arrived from it inbound.

Finding endpoints
-----------------
Every open endpoint registers itself by its bound address: :func:`endpoint_at` finds the one bound
on ``(host, port)`` and :func:`open_endpoints` lists them all, so fault injectors can reach an NF's
socket from its address alone. The registry holds weak references and is safe to read from any
thread; act on an endpoint only on its own loop (:attr:`UdpEndpoint.loop`).
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from actors.clock import Cancellable, Clock, LoopClock
from actors.logs import get_logger

__all__ = [
    "INBOUND",
    "OUTBOUND",
    "Address",
    "SeamStack",
    "DatagramHandler",
    "EndpointStats",
    "SeamItem",
    "TimedSeam",
    "TransportSeam",
    "UdpEndpoint",
    "endpoint_at",
    "open_endpoints",
]

#: A transport address as asyncio gives it: ``(host, port)`` (IPv6 sockets add flowinfo, scope_id).
Address = tuple[Any, ...]
#: One datagram a seam wants emitted: ``(delay_seconds, data, addr)``.
SeamItem = tuple[float, bytes, Address]
#: ``on_datagram(data, addr)``: called on the loop thread for every datagram received.
DatagramHandler = Callable[[bytes, Address], object]

OUTBOUND = "outbound"
INBOUND = "inbound"

# Handler/seam errors are logged in full for the first few, then one line per this many.
_LOG_FIRST_ERRORS = 10
_LOG_EVERY_ERRORS = 1000


@runtime_checkable
class TransportSeam(Protocol):
    """The hook where faults enter the transport. See the module docstring."""

    def outbound(self, data: bytes, addr: Address, now: float) -> Iterable[SeamItem]:
        """Called for each ``send(data, addr)``; returns what actually goes to the socket."""
        ...

    def inbound(self, data: bytes, addr: Address, now: float) -> Iterable[SeamItem]:
        """Called for each datagram read from the socket; returns what ``on_datagram`` gets."""
        ...


@runtime_checkable
class TimedSeam(TransportSeam, Protocol):
    """A seam that holds datagrams and releases them on its own deadline."""

    def next_deadline(self) -> float | None: ...

    def poll(self, now: float) -> Iterable[tuple[str, float, bytes, Address]]: ...

# ---------------------------------------------------------------------- registry of open endpoints

_registry: weakref.WeakValueDictionary[tuple[Any, ...], UdpEndpoint] = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()


def _address_key(addr: Address) -> tuple[Any, ...]:
    return tuple(addr[:2])


def endpoint_at(address: Address) -> UdpEndpoint | None:
    """The open endpoint of this process bound on ``address`` (``(host, port)``), if any. Any thread."""
    with _registry_lock:
        endpoint = _registry.get(_address_key(address))
    return None if endpoint is None or endpoint.closing else endpoint


def open_endpoints() -> list[UdpEndpoint]:
    """Every open endpoint of this process, in no particular order. Any thread."""
    with _registry_lock:
        endpoints = list(_registry.values())
    return [e for e in endpoints if not e.closing]


def _register(endpoint: UdpEndpoint) -> None:
    if endpoint.local_address:
        with _registry_lock:
            _registry[_address_key(endpoint.local_address)] = endpoint


def _unregister(endpoint: UdpEndpoint) -> None:
    if endpoint.local_address:
        key = _address_key(endpoint.local_address)
        with _registry_lock:
            if _registry.get(key) is endpoint:
                del _registry[key]


# ---------------------------------------------------------------------- stacked seams


class SeamStack:
    """Seams in series on one endpoint: ``layers`` (app side first) and ``taps`` (socket side).

    Change it with :meth:`add` / :meth:`remove` (or the endpoint's ``add_seam``/``remove_seam``).

    Outbound a datagram goes through ``layers`` in order, then ``taps``; inbound through ``taps``
    then ``layers`` in reverse, so the first layer is always the one nearest the endpoint's user.
    Each layer's delays add to the delays of the layers before it; every layer sees the ``now``
    at which the datagram entered the stack. A timed layer's released datagrams continue through
    the layers after it. Runs on the endpoint's loop thread, like any seam.
    """

    def __init__(self, layers: Iterable[TransportSeam] = (), taps: Iterable[TransportSeam] = ()) -> None:
        self._layers: tuple[TransportSeam, ...] = tuple(layers)
        self._taps: tuple[TransportSeam, ...] = tuple(taps)
        self._refresh()

    @property
    def layers(self) -> tuple[TransportSeam, ...]:
        return self._layers

    @property
    def taps(self) -> tuple[TransportSeam, ...]:
        return self._taps

    def add(self, seam: TransportSeam, *, tap: bool = False) -> None:
        if tap:
            self._taps = (*self._taps, seam)
        else:
            self._layers = (*self._layers, seam)
        self._refresh()

    def remove(self, seam: TransportSeam) -> bool:
        """Take ``seam`` out (by identity); ``False`` if it is not in the stack."""
        layers = tuple(s for s in self._layers if s is not seam)
        taps = tuple(s for s in self._taps if s is not seam)
        if len(layers) + len(taps) == len(self):
            return False
        self._layers, self._taps = layers, taps
        self._refresh()
        return True

    def __len__(self) -> int:
        return len(self._layers) + len(self._taps)

    def _refresh(self) -> None:
        # Orders per direction, computed once per change rather than per datagram.
        self._orders = {
            OUTBOUND: (*self._layers, *self._taps),
            INBOUND: (*self._taps, *reversed(self._layers)),
        }

    def _order(self, direction: str) -> tuple[TransportSeam, ...]:
        return self._orders[direction]

    def _through(
        self, direction: str, seams: tuple[TransportSeam, ...], items: list[SeamItem], now: float
    ) -> list[SeamItem]:
        for seam in seams:
            step = seam.outbound if direction == OUTBOUND else seam.inbound
            out: list[SeamItem] = []
            for delay, data, addr in items:
                for extra, data2, addr2 in step(data, addr, now):
                    out.append((delay + extra, data2, addr2))
            items = out
            if not items:
                break
        return items

    def outbound(self, data: bytes, addr: Address, now: float) -> list[SeamItem]:
        return self._through(OUTBOUND, self._order(OUTBOUND), [(0.0, data, addr)], now)

    def inbound(self, data: bytes, addr: Address, now: float) -> list[SeamItem]:
        return self._through(INBOUND, self._order(INBOUND), [(0.0, data, addr)], now)

    def next_deadline(self) -> float | None:
        deadlines = [
            d
            for seam in self._orders[OUTBOUND]
            if callable(getattr(seam, "next_deadline", None)) and (d := seam.next_deadline()) is not None  # type: ignore[attr-defined]
        ]
        return min(deadlines) if deadlines else None

    def poll(self, now: float) -> list[tuple[str, float, bytes, Address]]:
        out: list[tuple[str, float, bytes, Address]] = []
        for seam in self._orders[OUTBOUND]:
            if not callable(getattr(seam, "poll", None)):
                continue
            for direction, delay, data, addr in seam.poll(now):  # type: ignore[attr-defined]
                order = self._order(direction)
                rest = order[order.index(seam) + 1 :]
                out.extend((direction, d, x, a) for d, x, a in self._through(direction, rest, [(delay, data, addr)], now))
        return out

    def __repr__(self) -> str:
        return f"SeamStack(layers={self.layers!r}, taps={self.taps!r})"


@dataclass(slots=True)
class EndpointStats:
    """Counters of one endpoint. Plain ints, updated on the loop thread.

    ``datagrams_in``/``bytes_in`` count what the socket received (before the seam);
    ``delivered`` what reached ``on_datagram`` (after it). ``datagrams_out``/``bytes_out`` count
    what was handed to the socket (after the seam). ``seam_dropped_in``/``seam_dropped_out`` count
    datagrams for which the seam returned nothing at once (dropped, or held back to be reordered:
    a held datagram that is released later shows up in ``delivered``/``datagrams_out`` as usual).
    ``send_errors`` counts socket errors on send (and sends after close); ``handler_errors``
    exceptions raised by ``on_datagram``; ``seam_errors`` exceptions raised by the seam (the
    datagram is then dropped).
    """

    datagrams_in: int = 0
    bytes_in: int = 0
    delivered: int = 0
    datagrams_out: int = 0
    bytes_out: int = 0
    send_errors: int = 0
    handler_errors: int = 0
    seam_dropped_in: int = 0
    seam_dropped_out: int = 0
    seam_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class UdpEndpoint(asyncio.DatagramProtocol):
    """An asyncio UDP endpoint with counters and a fault seam.

    Create with :meth:`open`; it is also an async context manager (closes on exit). The
    ``asyncio.DatagramProtocol`` methods (``datagram_received`` etc.) are the loop's callbacks,
    not API.
    """

    def __init__(
        self,
        on_datagram: DatagramHandler | None,
        *,
        loop: asyncio.AbstractEventLoop,
        clock: Clock,
        seam: TransportSeam | None = None,
        name: str = "",
    ) -> None:
        self._loop = loop
        self._clock = clock
        self.name = name
        self.stats = EndpointStats()
        self._on_datagram: DatagramHandler | None = None
        self.on_datagram = on_datagram
        self._transport: asyncio.DatagramTransport | None = None
        self._local_address: Address = ()
        self._closing = False
        self._closed: asyncio.Future[None] = loop.create_future()
        self._log = get_logger("transport", instance=name or None)
        # Seam state.
        self._seam: TransportSeam | None = None
        self._seam_timed = False
        self._seam_timer: Cancellable | None = None
        self._seam_timer_deadline: float | None = None
        self._delayed: dict[int, Cancellable] = {}
        self._next_key = 0
        self.seam = seam

    # ------------------------------------------------------------------ construction

    @classmethod
    async def open(
        cls,
        local_addr: tuple[str, int] = ("127.0.0.1", 0),
        on_datagram: DatagramHandler | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        seam: TransportSeam | None = None,
        name: str = "",
        clock: Clock | None = None,
        recv_buffer_size: int | None = None,
        send_buffer_size: int | None = None,
    ) -> UdpEndpoint:
        """Bind a UDP socket on ``local_addr`` (port 0: ephemeral) and start receiving.

        ``on_datagram(data, addr)`` is called on the loop thread for each datagram (``None``:
        datagrams are counted and discarded; it can be set later through ``.on_datagram``). It
        must be a plain callable: a coroutine function is refused, since its coroutines would
        never be awaited. ``clock`` (default: a :class:`~actors.clock.LoopClock` on ``loop``)
        gives the seam its ``now`` and runs its delays. ``recv_buffer_size`` /
        ``send_buffer_size`` set SO_RCVBUF / SO_SNDBUF in bytes (SO_RCVBUFFORCE / SO_SNDBUFFORCE
        are tried first, so with CAP_NET_ADMIN the ``net.core.*mem_max`` caps do not apply; the
        kernel doubles the value). Use a large receive buffer (e.g. 4 MiB) for load experiments,
        so bursts wait in the kernel instead of being dropped. ``local_addr``'s host should be a
        numeric address.
        """
        running = asyncio.get_running_loop()
        if loop is None:
            loop = running
        elif loop is not running:
            raise RuntimeError("UdpEndpoint.open() must be awaited on the endpoint's own loop")
        if clock is None:
            clock = LoopClock(loop)
        host, port = local_addr[0], local_addr[1]
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        if not infos:  # pragma: no cover - getaddrinfo raises instead
            raise OSError(f"cannot resolve {local_addr!r}")
        family, type_, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            if recv_buffer_size is not None:
                _set_buffer(sock, "SO_RCVBUFFORCE", socket.SO_RCVBUF, recv_buffer_size)
            if send_buffer_size is not None:
                _set_buffer(sock, "SO_SNDBUFFORCE", socket.SO_SNDBUF, send_buffer_size)
            sock.bind(sockaddr)
            endpoint = cls(on_datagram, loop=loop, clock=clock, seam=seam, name=name)
            await loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
        except BaseException:
            sock.close()
            raise
        endpoint._log.debug("udp_open", local=endpoint.local_address, rcvbuf=endpoint.receive_buffer_size)
        return endpoint

    # ------------------------------------------------------------------ public API

    @property
    def local_address(self) -> Address:
        """The bound ``(host, port)`` (the real port when opened with port 0)."""
        return self._local_address

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def on_datagram(self) -> DatagramHandler | None:
        return self._on_datagram

    @on_datagram.setter
    def on_datagram(self, handler: DatagramHandler | None) -> None:
        if handler is not None:
            if not callable(handler):
                raise TypeError("on_datagram must be callable")
            if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
                getattr(handler, "__call__", None)
            ):
                raise TypeError("on_datagram must be a plain callable, not a coroutine function")
        self._on_datagram = handler

    @property
    def receive_buffer_size(self) -> int | None:
        """The socket's effective SO_RCVBUF, as the kernel reports it."""
        return self._sockopt(socket.SO_RCVBUF)

    @property
    def send_buffer_size(self) -> int | None:
        return self._sockopt(socket.SO_SNDBUF)

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def seam(self) -> TransportSeam | None:
        """The installed fault seam, ``None`` for none. Replace it at any time (loop thread)."""
        return self._seam

    @seam.setter
    def seam(self, seam: TransportSeam | None) -> None:
        if seam is not None and not (callable(getattr(seam, "outbound", None)) and callable(getattr(seam, "inbound", None))):
            raise TypeError(f"a seam needs outbound() and inbound(), got {type(seam).__name__}")
        self._cancel_seam_timer()
        self._seam = seam
        self._seam_timed = (
            seam is not None
            and callable(getattr(seam, "next_deadline", None))
            and callable(getattr(seam, "poll", None))
        )
        if self._seam_timed and not self._closing:
            self._rearm_seam_timer()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop this endpoint lives on: call its methods there only."""
        return self._loop

    def add_seam(self, seam: TransportSeam, *, tap: bool = False) -> None:
        """Stack ``seam`` on this endpoint (loop thread). See "Several faults on one endpoint".

        ``tap=True`` puts it at the socket side of every other layer. A seam installed by plain
        assignment stays, as the first layer of the stack.
        """
        if not (callable(getattr(seam, "outbound", None)) and callable(getattr(seam, "inbound", None))):
            raise TypeError(f"a seam needs outbound() and inbound(), got {type(seam).__name__}")
        current = self._seam
        stack = current if isinstance(current, SeamStack) else SeamStack([] if current is None else [current])
        stack.add(seam, tap=tap)
        self.seam = stack

    def remove_seam(self, seam: TransportSeam) -> bool:
        """Take ``seam`` off this endpoint (loop thread); ``False`` if it was not there."""
        current = self._seam
        if current is seam:
            self.seam = None
            return True
        if not isinstance(current, SeamStack) or not current.remove(seam):
            return False
        self.seam = current if len(current) else None
        return True

    def send(self, data: bytes, addr: Address) -> None:
        """Send one datagram to ``addr`` (through the seam, if any). Never blocks.

        UDP is fire-and-forget: socket errors and sends after ``close()`` are counted in
        ``stats.send_errors``, not raised. Programming errors (``data`` not bytes-like) raise.
        """
        seam = self._seam
        if seam is None:  # the normal case: no fault installed
            self._write(data, addr)
            return
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                raise TypeError(f"data must be bytes-like, got {type(data).__name__}")
            data = bytes(data)  # the seam may hold on to it
        try:
            items = seam.outbound(data, addr, self._clock.now())
        except Exception:
            self._seam_failed(OUTBOUND)
            return
        self._emit(OUTBOUND, items)

    def close(self) -> None:
        """Close the socket; datagrams still delayed in the seam are discarded. Idempotent."""
        if self._closing:
            return
        self._closing = True
        self._cancel_seam_timer()
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        _unregister(self)
        if self._transport is not None:
            self._transport.close()
        elif not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until the socket is closed (after :meth:`close`)."""
        await asyncio.shield(self._closed)

    async def __aenter__(self) -> UdpEndpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        return f"<UdpEndpoint {self.name or '?'} {self._local_address} {state}>"

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sockname = transport.get_extra_info("sockname")
        self._local_address = tuple(sockname[:2]) if sockname else ()
        _register(self)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        stats = self.stats
        stats.datagrams_in += 1
        stats.bytes_in += len(data)
        seam = self._seam
        if seam is None:
            handler = self._on_datagram
            if handler is None:
                return
            try:
                handler(data, addr)
            except Exception:
                self._handler_failed(addr)
            else:
                stats.delivered += 1
            return
        try:
            items = seam.inbound(data, addr, self._clock.now())
        except Exception:
            self._seam_failed(INBOUND)
            return
        self._emit(INBOUND, items)

    def error_received(self, exc: Exception) -> None:
        # On Linux an unconnected UDP socket reports send failures (EMSGSIZE, ENOBUFS...) here.
        self.stats.send_errors += 1
        n = self.stats.send_errors
        if n <= _LOG_FIRST_ERRORS or n % _LOG_EVERY_ERRORS == 0:
            self._log.warning("udp_send_error", error=repr(exc), count=n)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        _unregister(self)
        self._cancel_seam_timer()
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        if not self._closed.done():
            self._closed.set_result(None)
        if exc is not None:
            self._log.warning("udp_connection_lost", error=repr(exc))

    # ------------------------------------------------------------------ internals

    def _write(self, data: bytes, addr: Address) -> None:
        transport = self._transport
        if transport is None or self._closing:
            self.stats.send_errors += 1
            return
        try:
            transport.sendto(data, addr)
        except (OSError, ValueError) as exc:  # ValueError: uvloop refuses host names (no DNS here)
            self.error_received(exc if isinstance(exc, OSError) else OSError(str(exc)))
            return
        stats = self.stats
        stats.datagrams_out += 1
        stats.bytes_out += len(data)

    def _deliver(self, data: bytes, addr: Address) -> None:
        handler = self._on_datagram
        if handler is None or self._closing:
            return
        try:
            handler(data, addr)
        except Exception:
            self._handler_failed(addr)
        else:
            self.stats.delivered += 1

    def _emit(self, direction: str, items: Iterable[SeamItem]) -> None:
        """Act on what the seam returned for one datagram in ``direction``."""
        emitted = False
        try:
            emitted = self._dispatch((direction, delay, data, addr) for delay, data, addr in items) > 0
        except Exception:
            self._seam_failed(direction)
            emitted = True  # counted as a seam error, not as a drop
        if not emitted:
            if direction == OUTBOUND:
                self.stats.seam_dropped_out += 1
            else:
                self.stats.seam_dropped_in += 1
        if self._seam_timed:
            self._rearm_seam_timer()

    def _dispatch(self, items: Iterable[tuple[str, float, bytes, Address]]) -> int:
        """Emit ``(direction, delay, data, addr)`` items: due ones now, the others on the clock.

        Items with the same direction and delay go into one timer callback, in list order, so a
        seam's ordering survives loops whose timer heap does not keep ties in order.
        """
        count = 0
        batches: dict[tuple[str, float], list[tuple[bytes, Address]]] | None = None
        try:
            for direction, delay, data, addr in items:
                count += 1
                if direction not in (OUTBOUND, INBOUND):
                    raise ValueError(f"bad seam direction {direction!r}")
                if delay > 0:
                    if batches is None:
                        batches = {}
                    batches.setdefault((direction, delay), []).append((data, addr))
                elif direction == OUTBOUND:
                    self._write(data, addr)
                else:
                    self._deliver(data, addr)
        finally:
            if batches:
                for (direction, delay), batch in batches.items():
                    key = self._next_key
                    self._next_key = key + 1
                    self._delayed[key] = self._clock.call_later(delay, self._fire_delayed, key, direction, batch)
        return count

    def _fire_delayed(self, key: int, direction: str, batch: list[tuple[bytes, Address]]) -> None:
        self._delayed.pop(key, None)
        for data, addr in batch:
            if direction == OUTBOUND:
                try:
                    self._write(data, addr)
                except Exception:  # e.g. a seam that produced something that is not bytes
                    self._seam_failed(direction)
            else:
                self._deliver(data, addr)

    def _handler_failed(self, addr: Address) -> None:
        self.stats.handler_errors += 1
        n = self.stats.handler_errors
        if n <= _LOG_FIRST_ERRORS:
            self._log.exception("on_datagram_failed", peer=addr, count=n)
        elif n % _LOG_EVERY_ERRORS == 0:
            self._log.error("on_datagram_failing", peer=addr, count=n)

    def _seam_failed(self, direction: str) -> None:
        self.stats.seam_errors += 1
        n = self.stats.seam_errors
        if n <= _LOG_FIRST_ERRORS:
            self._log.exception("seam_failed", direction=direction, count=n)
        elif n % _LOG_EVERY_ERRORS == 0:
            self._log.error("seam_failing", direction=direction, count=n)

    def _cancel_seam_timer(self) -> None:
        if self._seam_timer is not None:
            self._seam_timer.cancel()
        self._seam_timer = None
        self._seam_timer_deadline = None

    def _rearm_seam_timer(self) -> None:
        seam = self._seam
        try:
            deadline = seam.next_deadline()  # type: ignore[union-attr]
        except Exception:
            self._seam_failed("timer")
            deadline = None
        if deadline == self._seam_timer_deadline:
            return
        self._cancel_seam_timer()
        if deadline is not None and not self._closing:
            self._seam_timer_deadline = deadline
            self._seam_timer = self._clock.call_at(deadline, self._on_seam_timer, seam)

    def _on_seam_timer(self, seam: TransportSeam) -> None:
        self._seam_timer = None
        self._seam_timer_deadline = None
        if seam is not self._seam or self._closing:
            return
        try:
            self._dispatch(seam.poll(self._clock.now()))  # type: ignore[attr-defined]
        except Exception:
            self._seam_failed("timer")
        self._rearm_seam_timer()

    def _sockopt(self, option: int) -> int | None:
        if self._transport is None:
            return None
        sock = self._transport.get_extra_info("socket")
        if sock is None:
            return None
        try:
            return int(sock.getsockopt(socket.SOL_SOCKET, option))
        except OSError:
            return None


def _set_buffer(sock: socket.socket, force_name: str, option: int, size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"buffer size must be a positive int, got {size!r}")
    force = getattr(socket, force_name, None)
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            return
        except OSError:  # no CAP_NET_ADMIN: fall back to the capped option
            pass
    sock.setsockopt(socket.SOL_SOCKET, option, size)

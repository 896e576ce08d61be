"""The MRFP's signalling side: media bridges and their RTP ports, served over the control protocol.

The MRFC's Resource Controller asks the MRFP (``actors.control``, JSON over UDP) to

* ``allocate(bridge_id)``: reserve two RTP ports, side ``A`` (where UE-A, the caller, sends its
  media) and side ``B`` (where UE-B sends); reply ``{"bridge_id", "host", "ports": {"A", "B"},
  "remotes": {"A", "B"}}``;
* ``update(bridge_id, side, remote_host, remote_port)``: where the UE of ``side`` receives, i.e.
  where the MRFP sends what arrives on the *other* side; same reply;
* ``release(bridge_id)``: free the ports; reply ``{"bridge_id", "released": [ports]}``;
* ``list()``: ``{"bridges": {bridge_id: reply}, "free_ports": n}``.

Errors (``ControlError`` codes): ``not_found`` (unknown bridge), ``exists`` (``allocate`` of a
bridge that is already allocated), ``exhausted`` (no two free ports left in the range),
``bad_args`` (a side other than ``A``/``B``, a bad host or port, an empty bridge id).

Ports are even numbers from the configured range (RFC 3550 section 11: RTP on an even port, RTCP
on the odd one above it, which is not reserved here). A reserved port is *bound*: the MRFP holds
a UDP socket on it until the bridge is released, so a port another process uses is skipped, and
no one can take a reserved port meanwhile. The media issue puts the C Media Processor behind
these sockets (it can take them by ``fileno()``); until then datagrams that arrive on them wait
in the kernel's buffer and are dropped with the socket.

``PortPool`` and ``MediaBridges`` are plain classes (the sockets are their only I/O);
``MrfpSignalling`` is the actor: its ``handle_<op>`` methods run on its loop.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from actors.control import ControlActor, ControlError

__all__ = ["Bridge", "MediaBridges", "MrfpSignalling", "PortPool", "SIDES"]

SIDES = ("A", "B")
DEFAULT_PORT_RANGE = (30000, 39999)
_HOST_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:")


class PortPool:
    """Even UDP ports in ``[first, last]`` on ``host``, reserved by binding a socket on each.

    ``reserve()`` scans round-robin from where the last reservation stopped (a released port is
    not reused at once, so late packets of an old call do not reach a new one) and skips ports
    it cannot bind. ``free(port)`` closes the socket.
    """

    def __init__(self, host: str, first: int, last: int) -> None:
        if not (isinstance(first, int) and isinstance(last, int)) or not 0 < first <= last <= 65535:
            raise ValueError(f"bad port range {first!r}..{last!r}")
        self.host = host
        self._ports = [p for p in range(first + (first & 1), last + 1, 2)]
        if not self._ports:
            raise ValueError(f"port range {first}..{last} holds no even port")
        self._cursor = 0
        self._bound: dict[int, socket.socket] = {}
        self.skipped = 0  # ports found taken by someone else

    @property
    def capacity(self) -> int:
        return len(self._ports)

    @property
    def in_use(self) -> int:
        return len(self._bound)

    def reserve(self) -> tuple[int, socket.socket]:
        """One free port and its bound socket; ``LookupError`` when none can be bound (or no
        socket can be opened: each reserved port costs a file descriptor)."""
        for _ in range(len(self._ports)):
            port = self._ports[self._cursor]
            self._cursor = (self._cursor + 1) % len(self._ports)
            if port in self._bound:
                continue
            try:
                sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_DGRAM)
            except OSError as error:  # EMFILE / ENFILE: out of file descriptors
                raise LookupError(f"cannot open a socket: {error.strerror}") from None
            try:
                sock.bind((self.host, port))
            except OSError:
                sock.close()
                self.skipped += 1
                continue
            sock.setblocking(False)
            self._bound[port] = sock
            return port, sock
        raise LookupError("no free port")

    def free(self, port: int) -> None:
        sock = self._bound.pop(port, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        for port in list(self._bound):
            self.free(port)


@dataclass
class Bridge:
    """One media bridge: a port per side and, once known, each side's UE address."""

    bridge_id: str
    host: str
    ports: dict[str, int]
    remotes: dict[str, tuple[str, int] | None] = field(default_factory=lambda: {"A": None, "B": None})

    def as_dict(self) -> dict[str, Any]:
        return {
            "bridge_id": self.bridge_id,
            "host": self.host,
            "ports": dict(self.ports),
            "remotes": {side: list(r) if r else None for side, r in self.remotes.items()},
        }


class MediaBridges:
    """The MRFP's bridge table over a :class:`PortPool`. Raises ``ControlError`` on bad requests."""

    def __init__(self, pool: PortPool) -> None:
        self.pool = pool
        self.bridges: dict[str, Bridge] = {}
        self.stats: Counter[str] = Counter()

    def allocate(self, bridge_id: str) -> dict[str, Any]:
        _check_bridge_id(bridge_id)
        if bridge_id in self.bridges:
            raise ControlError("exists", f"bridge {bridge_id!r} is already allocated")
        taken: list[int] = []
        try:
            for _ in SIDES:
                port, _sock = self.pool.reserve()
                taken.append(port)
        except LookupError as error:
            for port in taken:
                self.pool.free(port)
            self.stats["exhausted"] += 1
            raise ControlError("exhausted", f"{error} ({self.pool.in_use} RTP ports in use)") from None
        bridge = self.bridges[bridge_id] = Bridge(bridge_id, self.pool.host, dict(zip(SIDES, taken)))
        self.stats["allocated"] += 1
        return bridge.as_dict()

    def update(self, bridge_id: str, side: str, remote_host: str, remote_port: int) -> dict[str, Any]:
        bridge = self._get(bridge_id)
        if side not in SIDES:
            raise ControlError("bad_args", f"side must be A or B, got {side!r}")
        if not isinstance(remote_host, str) or not remote_host or not _HOST_CHARS.issuperset(remote_host):
            raise ControlError("bad_args", f"bad remote_host {remote_host!r}")
        if isinstance(remote_port, bool) or not isinstance(remote_port, int) or not 0 < remote_port <= 65535:
            raise ControlError("bad_args", f"bad remote_port {remote_port!r}")
        bridge.remotes[side] = (remote_host, remote_port)
        self.stats["updated"] += 1
        return bridge.as_dict()

    def release(self, bridge_id: str) -> dict[str, Any]:
        bridge = self._get(bridge_id)
        del self.bridges[bridge_id]
        for port in bridge.ports.values():
            self.pool.free(port)
        self.stats["released"] += 1
        return {"bridge_id": bridge_id, "released": sorted(bridge.ports.values())}

    def list(self) -> dict[str, Any]:
        return {
            "bridges": {bid: b.as_dict() for bid, b in self.bridges.items()},
            "free_ports": self.pool.capacity - self.pool.in_use,
        }

    def close(self) -> None:
        self.bridges.clear()
        self.pool.close()

    def _get(self, bridge_id: str) -> Bridge:
        _check_bridge_id(bridge_id)
        bridge = self.bridges.get(bridge_id)
        if bridge is None:
            raise ControlError("not_found", f"no bridge {bridge_id!r}")
        return bridge


def _check_bridge_id(bridge_id: object) -> None:
    if not isinstance(bridge_id, str) or not bridge_id or len(bridge_id) > 256:
        raise ControlError("bad_args", f"bridge_id must be a string of 1 to 256 characters, got {bridge_id!r:.60}")


class MrfpSignalling(ControlActor):
    """The MRFP's control-protocol face (``kind = "mrfp"``); its handlers run on its loop.

    ``media_host``: the address UEs send RTP to (default: the control port's host);
    ``port_range``: ``(first, last)`` inclusive.
    """

    kind: ClassVar[str] = "mrfp"

    def __init__(
        self,
        name: str,
        bind: tuple[str, int] = ("127.0.0.1", 0),
        *,
        media_host: str | None = None,
        port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, bind, **kwargs)
        self.media = MediaBridges(PortPool(media_host or bind[0], *port_range))

    def on_stop(self) -> None:
        self.media.close()
        super().on_stop()

    def on_failure(self, *exc_info: Any) -> None:
        self.media.close()
        super().on_failure(*exc_info)

    # -- control protocol operations (on the actor's loop) ----------------------------

    def handle_allocate(self, bridge_id: str) -> dict[str, Any]:
        return self.media.allocate(bridge_id)

    def handle_update(self, bridge_id: str, side: str, remote_host: str, remote_port: int) -> dict[str, Any]:
        return self.media.update(bridge_id, side, remote_host, remote_port)

    def handle_release(self, bridge_id: str) -> dict[str, Any]:
        return self.media.release(bridge_id)

    def handle_list(self) -> dict[str, Any]:
        return self.media.list()

    # -- asks --------------------------------------------------------------------------

    def get_bridges(self) -> dict[str, Any]:
        """The bridge table, as ``list()`` answers it."""
        return self.media.list()

    def get_stats(self) -> dict[str, int]:
        out = super().get_stats()
        out.update({f"bridges_{k}": v for k, v in self.media.stats.items()})
        out["bridges"] = len(self.media.bridges)
        out["ports_in_use"] = self.media.pool.in_use
        out["ports_skipped"] = self.media.pool.skipped
        return out

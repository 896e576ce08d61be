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
no one can take a reserved port meanwhile.

The Media Processor (``media_processor.py``, around the C media engine) works behind these
sockets: ``allocate`` adds the bridge's two flows (what arrives on side A is sent from side B's
port to side B's UE, and the other way round), ``update`` re-points them, ``release`` removes
them (and, when the bridge's metadata went to Media Update, tells it to ``forget`` the bridge).
``allocate`` may carry ``controller=[host, port]``, the MRFC's Media Control address that
Media Update asks for the bridge's instructions. Two more operations:

* ``instructions(items)``: the callback of Media Update (``[{"bridge_id", "side",
  "instruction": {...} | None}]``); reply ``{"applied", "released", "unknown", "bad"}``;
* ``flows()``: per flow engine stats, newest metadata and current instruction.

The MRFP starts its own Media Update actor (``media_update.py``) unless given the address of one.

Charging (paper ``004`` VIII-C, Fig. 12): ``allocate`` may carry ``subscribers={"A": user,
"B": user}`` (the MRFC has them from the AS's INVITE). With a ``pcrf`` address the MRFP reports
to it, about every ``report_interval`` seconds and when a bridge is released,
``usage_report(source="mrf", subscriber, bytes)``: the cumulative downlink bytes it sent towards
that subscriber's UE (what its flows forwarded, over all the subscriber's bridges so far).
A bridge released early by the MRFC is forgotten; one never released (a hanging MRF dialog) is
reported as long as it forwards.

``PortPool`` and ``MediaBridges`` are plain classes (the sockets are their only I/O);
``MrfpSignalling`` is the actor (the MRFP: signalling face and Media Processor): its
``handle_<op>`` methods run on its loop.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, ClassVar

import pykka

from actors.clock import Cancellable
from actors.control import ControlActor, ControlError, ControlFailure
from nf_modules.media_control import check_mode
from nf_modules.media_processor import MediaProcessor, make_engine, other_side
from nf_modules.media_update import MediaUpdate

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

    def socket_of(self, port: int) -> socket.socket:
        """The bound socket of a reserved port (``KeyError`` if it is not reserved)."""
        return self._bound[port]

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
    """The MRFP (``kind = "mrfp"``): bridges over the control protocol and the Media Processor
    behind their ports; handlers and the metadata reader run on its loop.

    ``media_host``: the address UEs send RTP to (default: the control port's host);
    ``port_range``: ``(first, last)`` inclusive. Media: ``media`` (``False``: ports only, no
    engine); ``mode``: ``"baseline"`` or ``"refactored"``; ``native``: the C engine (``None``:
    C if built, else the pure-Python twin); ``metadata_interval``, ``hold_limit``, ``batch``:
    the engine's; ``engine``: an engine object to use instead (tests); ``media_update``: the
    address of a Media Update actor (``None``: start one, with ``update_options``, e.g.
    ``{"alpha": 0.5, "batch": 5, "refresh": 2.0}``). Charging: ``pcrf`` (the PCRF's control
    address, ``None``: no usage reports) and ``report_interval`` (seconds).
    """

    kind: ClassVar[str] = "mrfp"

    def __init__(
        self,
        name: str,
        bind: tuple[str, int] = ("127.0.0.1", 0),
        *,
        media_host: str | None = None,
        port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
        media: bool = True,
        mode: str = "refactored",
        native: bool | None = None,
        metadata_interval: float = 0.1,
        hold_limit: int = 256,
        batch: int = 32,
        engine: Any = None,
        media_update: tuple[str, int] | None = None,
        update_options: Mapping[str, Any] | None = None,
        pcrf: tuple[str, int] | None = None,
        report_interval: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, bind, **kwargs)
        if not report_interval > 0:
            raise ValueError(f"report_interval must be positive, got {report_interval!r}")
        self.pcrf = tuple(pcrf) if pcrf is not None else None
        self.report_interval = float(report_interval)
        self.subscribers: dict[str, dict[str, str]] = {}  # bridge id -> side -> subscriber
        self._bridges_of: dict[str, set[str]] = {}  # subscriber -> bridge ids in subscribers
        self.usage_released: Counter[str] = Counter()  # subscriber -> bytes of released bridges
        self._reported: dict[str, int] = {}  # subscriber -> bytes in the last report
        self._report_timer: Cancellable | None = None
        self.media = MediaBridges(PortPool(media_host or bind[0], *port_range))
        self.mode = check_mode(mode)
        self.processor: MediaProcessor | None = None
        self.media_update = tuple(media_update) if media_update else None
        self._media_enabled = media
        self._engine_args = {"native": native, "metadata_interval": metadata_interval,
                             "hold_limit": hold_limit, "batch": batch}
        self._engine = engine
        self._update_options = dict(update_options or {})
        self._update_ref: pykka.ActorRef[Any] | None = None
        self._tasks: set[Any] = set()
        self._states: Counter[str] = Counter()  # bridges that reached Ended

    async def on_start(self) -> None:
        await super().on_start()
        if not self._media_enabled:
            return
        engine = self._engine if self._engine is not None else make_engine(**self._engine_args)
        self.processor = MediaProcessor(engine, mode=self.mode, send_metadata=self._send_metadata,
                                        instruction_type=getattr(engine, "instruction_type", None))
        self.processor.start(self.loop)
        if self.pcrf is not None:
            self._report_timer = self.clock.call_later(self.report_interval, self._report_tick)  # type: ignore[union-attr]
        if self.media_update is None:
            self._update_ref = MediaUpdate.start(f"{self.name}.media_update", (self.address[0], 0),
                                                 mode=self.mode, **self._update_options)
            self.media_update = tuple(await self._update_ref.proxy().get_address())

    def on_stop(self) -> None:
        self._close_media()
        super().on_stop()

    def on_failure(self, *exc_info: Any) -> None:
        self._close_media()
        super().on_failure(*exc_info)

    def _close_media(self) -> None:
        if self._report_timer is not None:
            self._report_timer.cancel()
            self._report_timer = None
        for task in list(self._tasks):
            task.cancel()
        if self.processor is not None:
            self.processor.close()  # the engine lets go of the sockets before they close
        self.media.close()
        if self._update_ref is not None:
            try:
                self._update_ref.stop(block=False)
            except pykka.ActorDeadError:
                pass
            self._update_ref = None

    # -- control protocol operations (on the actor's loop) ----------------------------

    def handle_allocate(self, bridge_id: str, controller: list[Any] | None = None,
                        subscribers: Mapping[str, str] | None = None) -> dict[str, Any]:
        if controller is not None and not _is_address(controller):
            raise ControlError("bad_args", f"controller must be [host, port], got {controller!r:.60}")
        if subscribers is not None and not (
                isinstance(subscribers, Mapping) and set(subscribers) <= set(SIDES)
                and all(isinstance(v, str) and 0 < len(v) <= 256 for v in subscribers.values())):
            raise ControlError("bad_args", f"subscribers must map A/B to user names, got {subscribers!r:.60}")
        reply = self.media.allocate(bridge_id)
        if subscribers:
            self._add_subscribers(bridge_id, subscribers)
        if self.processor is not None:
            bridge = self.media.bridges[bridge_id]
            sockets = {side: self.media.pool.socket_of(port) for side, port in bridge.ports.items()}
            try:
                self.processor.add_bridge(bridge_id, sockets, bridge.remotes,
                                          (controller[0], controller[1]) if controller else None)
            except (ValueError, OSError, RuntimeError) as error:  # the engine refused the flows
                self.processor.remove_bridge(bridge_id)
                self.media.release(bridge_id)
                self._drop_subscribers(bridge_id)
                raise ControlError("media_failed", f"media engine: {error}") from None
        return reply

    def handle_update(self, bridge_id: str, side: str, remote_host: str, remote_port: int) -> dict[str, Any]:
        reply = self.media.update(bridge_id, side, remote_host, remote_port)
        if self.processor is not None:
            self.processor.update_bridge(bridge_id, self.media.bridges[bridge_id].remotes)
        return reply

    def handle_release(self, bridge_id: str) -> dict[str, Any]:
        self.media._get(bridge_id)  # noqa: SLF001  (not_found / bad_args before touching the engine)
        subscribers = self._drop_subscribers(bridge_id)
        if self.processor is not None:
            # Media Update only keeps state for flows whose metadata reached it: a bridge that
            # never produced a metadata record (no RTP came) has nothing there to forget.
            told = self.processor.had_metadata(bridge_id)
            final = self.processor.remove_bridge(bridge_id)
            for side, user in subscribers.items():  # side A's downlink is what flow B forwarded
                self.usage_released[user] += int(final.get(other_side(side), {}).get("forwarded_bytes", 0))
            if self.media_update is not None and told:
                self._run_task(self._forget(bridge_id))
            if subscribers:
                self._report(set(subscribers.values()))
        self._states["Ended"] += 1
        return self.media.release(bridge_id)

    def handle_list(self) -> dict[str, Any]:
        return self.media.list()

    def handle_instructions(self, items: list[Any]) -> dict[str, int]:
        """Media Update's callback (the second interface)."""
        if self.processor is None:
            raise ControlError("no_media", "this MRFP runs no Media Processor")
        if not isinstance(items, list):
            raise ControlError("bad_args", "items must be a list")
        return self.processor.apply(items)

    def handle_flows(self) -> dict[str, Any]:
        return self.processor.flow_report() if self.processor is not None else {}

    # -- usage reports towards the PCRF (on the loop) -----------------------------------------

    def usage(self, users: set[str] | None = None) -> dict[str, int]:
        """Per subscriber (those in ``users``, or all): downlink bytes sent towards the UE so
        far, released bridges included."""
        totals: Counter[str] = Counter(
            self.usage_released if users is None else {u: self.usage_released[u] for u in users})
        if self.processor is not None:
            # Only the bridges of the users asked about (the per-subscriber index), not every one.
            bridge_ids = (self.subscribers if users is None
                          else {b: None for u in users for b in self._bridges_of.get(u, ())})
            for bridge_id in bridge_ids:
                sides = self.subscribers[bridge_id]
                toward = self.processor.forwarded_toward(bridge_id)
                for side, user in sides.items():
                    if users is None or user in users:
                        totals[user] += toward.get(side, 0)
        return dict(totals)

    def _add_subscribers(self, bridge_id: str, subscribers: Mapping[str, str]) -> None:
        self.subscribers[bridge_id] = dict(subscribers)
        for user in subscribers.values():
            self._bridges_of.setdefault(user, set()).add(bridge_id)

    def _drop_subscribers(self, bridge_id: str) -> dict[str, str]:
        sides = self.subscribers.pop(bridge_id, {})
        for user in sides.values():
            bridges = self._bridges_of.get(user)
            if bridges is not None:
                bridges.discard(bridge_id)
                if not bridges:
                    del self._bridges_of[user]
        return sides

    def _report_tick(self) -> None:
        self._report_timer = self.clock.call_later(self.report_interval, self._report_tick)  # type: ignore[union-attr]
        self._report(None)

    def _report(self, subscribers: set[str] | None) -> None:
        """Report the subscribers whose count changed (``None``: all), or those named."""
        if self.pcrf is None or self.control is None:
            return
        for user, total in self.usage(subscribers).items():
            if subscribers is None and self._reported.get(user) == total:
                continue
            self._reported[user] = total
            self._run_task(self._send_report(user, total))

    async def _send_report(self, subscriber: str, total: int) -> None:
        try:
            await self.control.call(self.pcrf, "usage_report",  # type: ignore[union-attr,arg-type]
                                    {"source": "mrf", "subscriber": subscriber, "bytes": total})
            self._states["usage_reports"] += 1
        except (ControlFailure, ValueError) as error:
            self._states["usage_reports_failed"] += 1
            self.log.info("usage_report_failed", subscriber=subscriber, error=str(error))

    # -- metadata towards Media Update ---------------------------------------------------

    def _send_metadata(self, records: list[dict[str, Any]]) -> None:
        """The processor's drain callback (on the loop): one request per chunk of records."""
        for first in range(0, len(records), 150):
            self._run_task(self._send_chunk(records[first:first + 150]))

    async def _send_chunk(self, records: list[dict[str, Any]]) -> None:
        assert self.processor is not None
        if self.media_update is None:
            self.processor.release_flows(records)
            return
        try:
            await self.control.call(self.media_update, "metadata",  # type: ignore[union-attr]
                                    {"processor": list(self.address), "records": records})
            self.processor.stats["metadata_sent"] += len(records)
        except (ControlFailure, ValueError) as error:
            self.processor.stats["metadata_send_failed"] += len(records)
            self.log.info("metadata_not_delivered", error=str(error))
            self.processor.release_flows(records)

    async def _forget(self, bridge_id: str) -> None:
        try:
            await self.control.call(self.media_update, "forget", {"bridge_id": bridge_id})  # type: ignore[union-attr,arg-type]
        except (ControlFailure, ValueError):
            pass

    def _run_task(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- asks --------------------------------------------------------------------------

    def get_bridges(self) -> dict[str, Any]:
        """The bridge table, as ``list()`` answers it."""
        return self.media.list()

    def get_flows(self) -> dict[str, Any]:
        """Per flow: engine stats (latency percentiles, drops, held packets and time), newest
        metadata, current instruction."""
        return self.handle_flows()

    def get_media_update_address(self) -> tuple[str, int] | None:
        return self.media_update  # type: ignore[return-value]

    async def get_media_update_stats(self) -> dict[str, int]:
        """The counters of the MRFP's own Media Update actor (``{}`` when it uses another's)."""
        if self._update_ref is None:
            return {}
        return await self._update_ref.proxy().get_stats()

    def get_usage(self) -> dict[str, int]:
        """Per subscriber: the downlink bytes the MRF sent towards the UE (what it reports)."""
        return self.usage()

    def get_dialog_states(self) -> dict[str, int]:
        """The MRF dialogs as the MRFP sees them: Created (ports reserved), Connected (both UEs'
        addresses known), Ended (released)."""
        states: Counter[str] = Counter({"Created": 0, "Connected": 0, "Ended": self._states["Ended"]})
        for bridge in self.media.bridges.values():
            states["Connected" if all(bridge.remotes.values()) else "Created"] += 1
        return dict(states)

    def get_stats(self) -> dict[str, int]:
        out = super().get_stats()
        out.update({f"bridges_{k}": v for k, v in self.media.stats.items()})
        out["bridges"] = len(self.media.bridges)
        out["ports_in_use"] = self.media.pool.in_use
        out["ports_skipped"] = self.media.pool.skipped
        out["usage_reports"] = self._states["usage_reports"]
        out["usage_reports_failed"] = self._states["usage_reports_failed"]
        if self.processor is not None:
            out.update(self.processor.get_stats())
        return out


def _is_address(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool) and 0 < value[1] < 65536)

"""``Pgw``: the LTE PDN gateway as a charging tap in the downlink media path (paper ``004`` V-B,
VIII-C, Fig. 12: "MRF ... forwards the received data packets to PGW. However, these packets are
dropped at PGW because PGW cannot reach the originating device").

A control-protocol actor (``kind = "pgw"``). At call set-up the PCRF has the PGW open a bearer
for each UE media stream (Gx-like, on the P-CSCF's request): a UDP port of its own, where the
MRFP sends the subscriber's downlink, relayed to the UE's media address. The relay is the C media
engine (:class:`~nf_modules.mediacore.engine.MediaEngine`, one flow per bearer whose instruction
forwards to the UE): no Python per packet. When the session ends (the PCRF says so, after the
P-CSCF reported the call released) the flow's instruction becomes ``drop``: the bearer stays
bound, and what still arrives is dropped by the engine and counted as ``dropped_bytes``: bytes
the MRF sent and nobody charged. Usage per subscriber (cumulative over its bearers) goes to the
PCRF every ``report_interval`` seconds and on release. A released bearer on which nothing has
arrived for ``idle_close`` seconds is closed (its socket and flow go, its counts stay in the
subscriber's totals); one the MRF keeps feeding stays, counting the drops.

Counting: the engine counts each flow's packets and bytes as they arrive and its drops by
reason; charged = what arrived while the flow forwarded, dropped = what arrived after. The few
packets the engine handled in the instant of the switch are apportioned by the flow's mean
packet size (exact for the constant-size G.711 packets of the emulated UEs).

Operations: ``open_bearer(subscriber, ue_host, ue_port, call_id="")`` -> ``{host, port,
bearer_id}`` (the address the MRFP should send the downlink to; the same bearer again for the same
subscriber, call and UE address), ``release_bearer(subscriber, call_id=None)`` -> ``{released}``
(the subscriber's bearers of that call, or all of them), ``charging()`` -> per subscriber
``{charged_bytes, charged_packets, dropped_bytes, dropped_packets, active, bearers}``.
Everything runs on the actor's loop; the engine's packet thread does the relaying.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

from actors.clock import Cancellable
from actors.control import ControlActor, ControlError, ControlFailure
from nf_modules.media_processor import make_engine

__all__ = ["Bearer", "Pgw"]

Address = tuple[str, int]


@dataclass(eq=False)
class Bearer:
    """One bearer: an engine flow on its own socket, forwarding to the UE until released."""

    bearer_id: int
    subscriber: str
    call_id: str
    ue: Address
    sock: socket.socket
    active: bool = True
    # the flow's counters at the switch to 'drop' (None while active)
    charged_at_release: tuple[int, int] | None = None  # (packets, bytes)
    seen_packets: int = 0  # released: the flow's packet count at the last housekeeping tick
    idle_since: float | None = None  # released: since when nothing arrived

    def usage(self, packets: int, size: int) -> dict[str, int]:
        """Charged and dropped packets and bytes, given the flow's counters now."""
        if self.charged_at_release is None:
            return {"charged_packets": packets, "charged_bytes": size, "dropped_packets": 0, "dropped_bytes": 0}
        charged_packets, charged_bytes = self.charged_at_release
        return {"charged_packets": charged_packets, "charged_bytes": charged_bytes,
                "dropped_packets": packets - charged_packets, "dropped_bytes": size - charged_bytes}


class Pgw(ControlActor):
    """``Pgw(name, bind, *, pcrf=None, report_interval=1.0, idle_close=10.0, native=None,
    engine=None)``: ``native`` picks the engine (``None``: C if built, else the pure-Python
    twin); ``engine``: one to use instead (tests)."""

    kind: ClassVar[str] = "pgw"

    def __init__(self, name: str = "pgw", bind: Address = ("127.0.0.1", 0), *,
                 pcrf: Address | None = None, report_interval: float = 1.0, idle_close: float = 10.0,
                 native: bool | None = None, engine: Any = None, **kwargs: Any) -> None:
        super().__init__(name, bind, **kwargs)
        if not report_interval > 0:
            raise ValueError(f"report_interval must be positive, got {report_interval!r}")
        if not idle_close > 0:
            raise ValueError(f"idle_close must be positive, got {idle_close!r}")
        self.idle_close = float(idle_close)
        self.closed: dict[str, Counter[str]] = {}  # subscriber -> usage of its closed bearers
        self._streams: dict[tuple[str, str, Address], int] = {}  # active (subscriber, call, UE) -> bearer
        self.pcrf = tuple(pcrf) if pcrf is not None else None
        self.report_interval = float(report_interval)
        self.bearers: dict[int, Bearer] = {}
        self.counters: Counter[str] = Counter()
        self._engine = engine
        self._native = native
        self._next_id = 1
        self._report_timer: Cancellable | None = None
        self._reported: dict[str, dict[str, Any]] = {}  # subscriber -> the last usage sent
        self._tasks: set[Any] = set()

    async def on_start(self) -> None:
        await super().on_start()
        if self._engine is None:
            self._engine = make_engine(native=self._native, metadata_interval=3600.0)
        self._engine.start()
        self._report_timer = self.clock.call_later(self.report_interval, self._report_tick)  # type: ignore[union-attr]

    def _close_control(self) -> None:
        if self._report_timer is not None:
            self._report_timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._engine is not None:
            self._engine.close()  # the packet thread lets go of the sockets before they close
        for bearer in self.bearers.values():
            bearer.sock.close()
        super()._close_control()

    # -- operations ----------------------------------------------------------------------

    def handle_open_bearer(self, subscriber: str, ue_host: str, ue_port: int, call_id: str = "") -> dict[str, Any]:
        if not isinstance(subscriber, str) or not subscriber or len(subscriber) > 256:
            raise ControlError("bad_args", "subscriber must be a non-empty string")
        if not isinstance(call_id, str):
            raise ControlError("bad_args", "call_id must be a string")
        if isinstance(ue_port, bool) or not isinstance(ue_port, int) or not 0 < ue_port < 65536:
            raise ControlError("bad_args", f"ue_port must be a port number, got {ue_port!r}")
        try:
            host = str(ipaddress.ip_address(ue_host))
        except ValueError:
            raise ControlError("bad_args", f"ue_host must be a numeric IP address, got {ue_host!r:.60}") from None
        ue = (host, ue_port)
        existing = self._streams.get((subscriber, call_id, ue))
        if existing is not None:
            return self._address_of(self.bearers[existing])
        sock = socket.socket(socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.address[0], 0))
            sock.setblocking(False)
            bearer = Bearer(self._next_id, subscriber, call_id, ue, sock)
            self._engine.add_flow(bearer.bearer_id, sock, self._instruction("forward", ue))
        except (OSError, ValueError, RuntimeError) as error:
            sock.close()
            self.counters["open_failed"] += 1
            raise ControlError("bearer_failed", f"cannot open a bearer: {error}") from None
        self._next_id += 1
        self.bearers[bearer.bearer_id] = bearer
        self._streams[(subscriber, call_id, ue)] = bearer.bearer_id
        self.counters["bearers_opened"] += 1
        return self._address_of(bearer)

    def handle_release_bearer(self, subscriber: str, call_id: str | None = None) -> dict[str, Any]:
        released = [b for b in self.bearers.values()
                    if b.active and b.subscriber == subscriber and (call_id is None or b.call_id == call_id)]
        for bearer in released:
            self._engine.set_instructions({bearer.bearer_id: self._instruction("drop", None)})
            stats = self._engine.flow_stats(bearer.bearer_id)
            dropped = stats.drops.get("instruction_drop", 0)
            charged_packets = stats.packets - dropped
            mean = stats.bytes / stats.packets if stats.packets else 0.0
            bearer.charged_at_release = (charged_packets, stats.bytes - round(dropped * mean))
            bearer.active = False
            bearer.seen_packets, bearer.idle_since = stats.packets, self.now
            self._streams.pop((bearer.subscriber, bearer.call_id, bearer.ue), None)
            self.counters["bearers_released"] += 1
            self.log.info("bearer_released", subscriber=subscriber, call_id=bearer.call_id)
        if released:
            self._report(subscriber)
        return {"released": bool(released)}

    def handle_charging(self) -> dict[str, dict[str, Any]]:
        return self.get_charging()

    def get_charging(self) -> dict[str, dict[str, Any]]:
        """Per subscriber: bytes charged (relayed to the UE) and dropped (never charged), over all
        its bearers, closed ones included; ``active``: a bearer still relays; ``bearers``: how
        many are open."""
        return self._usage(self.bearers.values(), self.closed)

    def _usage(self, bearers: Any, closed: dict[str, Counter[str]]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}

        def entry(subscriber: str) -> dict[str, Any]:
            return out.setdefault(subscriber, {"charged_bytes": 0, "charged_packets": 0, "dropped_bytes": 0,
                                               "dropped_packets": 0, "active": False, "bearers": 0})

        for subscriber, usage in closed.items():
            entry(subscriber).update(usage)
        for bearer in bearers:
            stats = self._engine.flow_stats(bearer.bearer_id)
            totals = entry(bearer.subscriber)
            for key, value in bearer.usage(stats.packets, stats.bytes).items():
                totals[key] += value
            totals["active"] = totals["active"] or bearer.active
            totals["bearers"] += 1
        return out

    def _close_idle(self) -> None:
        """Close the released bearers nothing has reached for ``idle_close`` seconds."""
        now = self.now
        for bearer in [b for b in self.bearers.values() if not b.active]:
            packets = self._engine.flow_stats(bearer.bearer_id).packets
            if packets != bearer.seen_packets:
                bearer.seen_packets, bearer.idle_since = packets, now
                continue
            if bearer.idle_since is None or now - bearer.idle_since < self.idle_close:
                continue
            stats = self._engine.remove_flow(bearer.bearer_id)
            bearer.sock.close()
            del self.bearers[bearer.bearer_id]
            self.closed.setdefault(bearer.subscriber, Counter()).update(bearer.usage(stats.packets, stats.bytes))
            self.counters["bearers_closed"] += 1

    def get_stats(self) -> dict[str, int]:
        out = super().get_stats()
        out.update(self.counters)
        out["bearers"] = len(self.bearers)
        out.update({f"engine_{k}": v for k, v in self._engine.stats().items()} if self._engine is not None else {})
        return out

    # -- helpers -------------------------------------------------------------------------------

    def _address_of(self, bearer: Bearer) -> dict[str, Any]:
        host, port = bearer.sock.getsockname()[:2]
        return {"host": host, "port": port, "bearer_id": bearer.bearer_id}

    def _instruction(self, action: str, dest: Address | None) -> Any:
        from nf_modules.mediacore.engine import Instruction

        return Instruction(action=action, dest=dest)

    # -- usage reports -------------------------------------------------------------------------

    def _report_tick(self) -> None:
        """Every ``report_interval`` (a clock callback on the loop): housekeeping, then reports."""
        self._report_timer = self.clock.call_later(self.report_interval, self._report_tick)  # type: ignore[union-attr]
        self._close_idle()
        if self.pcrf is None or self.control is None:
            return
        for subscriber, usage in self.get_charging().items():
            if self._reported.get(subscriber) != usage:
                self._send(subscriber, usage)

    def _report(self, subscriber: str) -> None:
        if self.pcrf is None or self.control is None:
            return
        closed = {subscriber: self.closed[subscriber]} if subscriber in self.closed else {}
        usage = self._usage((b for b in self.bearers.values() if b.subscriber == subscriber), closed).get(subscriber)
        if usage is not None:
            self._send(subscriber, usage)

    def _send(self, subscriber: str, usage: dict[str, Any]) -> None:
        self._reported[subscriber] = usage
        task = self.loop.create_task(self._send_report(subscriber, usage))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_report(self, subscriber: str, usage: dict[str, Any]) -> None:
        try:
            await self.control_request(self.pcrf, "usage_report", source="pgw", subscriber=subscriber,  # type: ignore[arg-type]
                                       bytes=usage["charged_bytes"], packets=usage["charged_packets"],
                                       dropped_bytes=usage["dropped_bytes"])
        except ControlFailure as error:
            self.log.info("usage_report_failed", subscriber=subscriber, error=str(error))

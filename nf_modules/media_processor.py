"""The MRFP's Media Processor (paper ``004`` Fig. 1, 7, VII-B): bridges -> media engine flows.

A bridge has a port per side (``mrfp.py``). Each side is one engine *flow*: the packets arriving on
side A's socket are sent from side B's socket to side B's UE, and the other way round. The C
engine (:mod:`nf_modules.mediacore.engine`) does the per-packet work on its own thread; this
class only configures it with coarse calls, all on the MRFP actor's loop:

* :meth:`MediaProcessor.add_bridge` / :meth:`update_bridge` / :meth:`remove_bridge`: add the two
  flows, point them at the UEs as the MRFC learns their addresses, remove them;
* the engine's metadata fd is watched with ``loop.add_reader``; :meth:`drain` turns the records
  into dicts naming the bridge, the side and the bridge's Media Control, and hands them to
  ``send_metadata`` (the first interface, towards Media Update);
* :meth:`apply` is the callback of the second interface: instructions from Media Update replace
  the flows' instructions atomically (``set_instructions``); ``None`` releases a held flow with
  its current instruction.

Modes: ``baseline`` flows are added with ``hold_on_metadata=True`` (each time metadata is due
the flow's packets wait for the instruction to come back); ``refactored`` flows never wait.
A bridge whose MRFC gave no Media Control address cannot get instructions: its metadata is
counted and dropped, and a held flow is released at once.
"""

from __future__ import annotations

import dataclasses
import math
import socket
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nf_modules.media_control import check_mode
from nf_modules.media_scripts import ControlInstruction, MediaScriptError

__all__ = ["FlowRef", "MediaProcessor", "make_engine", "other_side"]

Address = tuple[str, int]


def other_side(side: str) -> str:
    return "B" if side == "A" else "A"


@dataclass(eq=False)
class FlowRef:
    """One engine flow: the packets arriving on ``side`` of ``bridge_id``."""

    flow_id: int
    bridge_id: str
    side: str
    control: ControlInstruction = field(default_factory=ControlInstruction)
    metadata: dict[str, Any] | None = None  # the newest record
    records: int = 0
    forwarded_bytes: int = 0  # bytes forwarded in finished forwarding spells
    forwarding_since: int | None = None  # the flow's byte count when its current forward began


@dataclass(eq=False)
class _BridgeMedia:
    sockets: dict[str, socket.socket]
    remotes: dict[str, Address | None]
    controller: Address | None
    flows: dict[str, FlowRef]


class MediaProcessor:
    """See the module docstring. ``engine``: a started-or-not ``MediaEngine`` (or anything with its
    API); ``send_metadata(records)`` runs on the loop with each drained batch."""

    def __init__(self, engine: Any, *, mode: str = "refactored",
                 send_metadata: Callable[[list[dict[str, Any]]], None] | None = None,
                 instruction_type: Callable[..., Any] | None = None) -> None:
        if instruction_type is None:
            from nf_modules.mediacore.engine import Instruction

            instruction_type = Instruction
        self.instruction_type = instruction_type
        self.engine = engine
        self.mode = check_mode(mode)
        self.send_metadata = send_metadata
        self.bridges: dict[str, _BridgeMedia] = {}
        self.flows: dict[int, FlowRef] = {}
        self.stats: Counter[str] = Counter()
        self.released_flows: Counter[str] = Counter()  # totals of removed flows' counters
        self._next_flow = 1
        self._version = 0
        self._loop: Any = None

    # -- life ------------------------------------------------------------------------------------

    def start(self, loop: Any) -> None:
        """Start the engine's thread and watch its metadata fd on ``loop`` (the actor's)."""
        self.engine.start()
        self._loop = loop
        loop.add_reader(self.engine.fileno(), self.drain)

    def close(self) -> None:
        """Stop watching, stop the engine (idempotent). The sockets stay the port pool's."""
        if self._loop is not None:
            try:
                self._loop.remove_reader(self.engine.fileno())
            except (ValueError, OSError):
                pass
            self._loop = None
        self.engine.close()

    # -- bridges ---------------------------------------------------------------------------------

    def add_bridge(self, bridge_id: str, sockets: Mapping[str, socket.socket],
                   remotes: Mapping[str, Address | None], controller: Address | None) -> None:
        media = _BridgeMedia(dict(sockets), dict(remotes), controller, {})
        self.bridges[bridge_id] = media
        hold = self.mode == "baseline"
        for side in ("A", "B"):
            flow = FlowRef(self._next_flow, bridge_id, side)
            self._next_flow += 1
            instruction = self._instruction(media, flow)
            self.engine.add_flow(flow.flow_id, media.sockets[side], instruction, hold_on_metadata=hold)
            if instruction.action == "forward":
                flow.forwarding_since = 0
            media.flows[side] = flow
            self.flows[flow.flow_id] = flow
            self.stats["flows_added"] += 1

    def update_bridge(self, bridge_id: str, remotes: Mapping[str, Address | None]) -> None:
        """The UEs' addresses changed: re-point both flows with their current instructions."""
        media = self.bridges.get(bridge_id)
        if media is None:
            return
        media.remotes = dict(remotes)
        self._set_instructions({f.flow_id: (f, self._instruction(media, f)) for f in media.flows.values()})

    def had_metadata(self, bridge_id: str) -> bool:
        """Whether a flow of the bridge produced a metadata record (one that may have gone to
        Media Update)."""
        media = self.bridges.get(bridge_id)
        return media is not None and any(flow.records for flow in media.flows.values())

    def remove_bridge(self, bridge_id: str) -> dict[str, Any]:
        """Remove both flows; their final stats by side."""
        media = self.bridges.pop(bridge_id, None)
        if media is None:
            return {}
        out = {}
        for side, flow in media.flows.items():
            self.flows.pop(flow.flow_id, None)
            stats = _as_dict(self.engine.remove_flow(flow.flow_id))
            stats["forwarded_bytes"] = _forwarded(flow, int(stats.get("bytes", 0)))
            for key, value in stats.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    self.released_flows[key] += value
            out[side] = stats
            self.stats["flows_removed"] += 1
        return out

    # -- the second interface: instructions from Media Update --------------------------------------

    def apply(self, items: list[Any]) -> dict[str, int]:
        """``items``: ``{"bridge_id", "side", "instruction": {...} | None}`` each; one atomic
        ``set_instructions`` for all of them, ``release`` for the ``None`` ones."""
        table: dict[int, tuple[FlowRef, Any]] = {}
        releases: list[int] = []
        result: Counter[str] = Counter()
        for item in items if isinstance(items, list) else []:
            try:
                media = self.bridges.get(item["bridge_id"])
                flow = media.flows.get(item["side"]) if media is not None else None
                if media is None or flow is None:
                    result["unknown"] += 1
                    continue
                raw = item["instruction"]
                if raw is None:
                    releases.append(flow.flow_id)
                    continue
                flow.control = ControlInstruction.from_dict(raw)
                table[flow.flow_id] = (flow, self._instruction(media, flow))
            except (KeyError, TypeError, MediaScriptError):
                result["bad"] += 1
        if table:
            self._set_instructions(table)
        for flow_id in releases:
            self.engine.release(flow_id)
        result["applied"] = len(table)
        result["released"] = len(releases)
        self.stats.update({f"instructions_{k}": v for k, v in result.items()})
        return dict(result)

    # -- the first interface: metadata to Media Update ----------------------------------------------

    def drain(self) -> list[dict[str, Any]]:
        """The engine's metadata records for live flows, as sent to Media Update (the reader
        callback; also callable directly)."""
        records = self.engine.drain_metadata()
        out: list[dict[str, Any]] = []
        release: list[int] = []
        for record in records:
            flow = self.flows.get(record.flow_id)
            if flow is None:
                self.stats["metadata_unknown_flow"] += 1
                continue
            media = self.bridges[flow.bridge_id]
            data = {
                "seq": record.seq, "payload_size": record.payload_size, "packet_rate": record.packet_rate,
                "jitter_ms": record.jitter_ms, "lost": record.lost, "latency_ms": record.latency_ms,
                "packets": record.packets, "held": record.held,
            }
            flow.metadata = data
            flow.records += 1
            self.stats["metadata"] += 1
            if media.controller is None:
                self.stats["metadata_no_controller"] += 1
                if record.held:
                    release.append(flow.flow_id)
                continue
            out.append({"bridge_id": flow.bridge_id, "side": flow.side,
                        "controller": list(media.controller), **data})
        for flow_id in release:
            self.engine.release(flow_id)
        if out and self.send_metadata is not None:
            self.send_metadata(out)
        return out

    def release_flows(self, records: list[dict[str, Any]]) -> None:
        """Metadata that could not reach Media Update: let those held flows go (baseline)."""
        for record in records:
            media = self.bridges.get(record.get("bridge_id"))  # type: ignore[arg-type]
            flow = media.flows.get(record.get("side")) if media is not None else None  # type: ignore[arg-type]
            if flow is not None and record.get("held"):
                self.engine.release(flow.flow_id)
                self.stats["released_unsent"] += 1

    # -- queries ---------------------------------------------------------------------------------

    def forwarded_toward(self, bridge_id: str) -> dict[str, int]:
        """Bytes sent so far towards each side's UE (side A's downlink is what flow B forwarded),
        counted as received by the engine while the flow's instruction forwarded them."""
        media = self.bridges.get(bridge_id)
        if media is None:
            return {}
        return {other_side(side): _forwarded(flow, self._flow_bytes(flow.flow_id))
                for side, flow in media.flows.items()}

    def flow_report(self) -> dict[str, dict[str, Any]]:
        """Per flow (``"bridge_id/side"``): engine stats, newest metadata, current instruction."""
        out = {}
        for flow in self.flows.values():
            out[f"{flow.bridge_id}/{flow.side}"] = {
                "flow_id": flow.flow_id,
                "stats": _as_dict(self.engine.flow_stats(flow.flow_id)),
                "metadata": flow.metadata,
                "records": flow.records,
                "instruction": flow.control.as_dict(),
            }
        return out

    def get_stats(self) -> dict[str, int]:
        out = {f"media_{k}": v for k, v in self.stats.items()}
        out.update({f"engine_{k}": v for k, v in self.engine.stats().items()})
        out["media_flows"] = len(self.flows)
        return out

    # -- helpers ---------------------------------------------------------------------------------

    def _set_instructions(self, table: Mapping[int, tuple[FlowRef, Any]]) -> None:
        """One atomic engine update; a flow that starts or stops forwarding closes or opens its
        forwarding spell at its byte count of that moment (what the usage reports count)."""
        self.engine.set_instructions({flow_id: instruction for flow_id, (_, instruction) in table.items()})
        for flow, instruction in table.values():
            forwarding = instruction.action == "forward"
            if forwarding == (flow.forwarding_since is not None):
                continue
            now_bytes = self._flow_bytes(flow.flow_id)
            if forwarding:
                flow.forwarding_since = now_bytes
            else:
                flow.forwarded_bytes = _forwarded(flow, now_bytes)
                flow.forwarding_since = None

    def _flow_bytes(self, flow_id: int) -> int:
        """The flow's byte count; ``MediaEngine.flow_bytes`` skips building the whole FlowStats."""
        flow_bytes = getattr(self.engine, "flow_bytes", None)
        return flow_bytes(flow_id) if flow_bytes is not None else self.engine.flow_stats(flow_id).bytes

    def _instruction(self, media: _BridgeMedia, flow: FlowRef) -> Any:
        out_side = other_side(flow.side)
        dest = media.remotes.get(out_side)
        control = flow.control
        action = control.action if dest is not None or control.action != "forward" else "sink"
        self._version += 1
        return self.instruction_type(
            action=action,
            dest=tuple(dest) if dest is not None else None,
            out_sock=media.sockets[out_side],
            transcode=control.transcode,
            ptime_ms=control.ptime_ms,
            payload_type=control.payload_type,
            version=self._version,
        )


def _forwarded(flow: FlowRef, now_bytes: int) -> int:
    since = flow.forwarding_since
    return flow.forwarded_bytes + (max(now_bytes - since, 0) if since is not None else 0)


def make_engine(*, native: bool | None, **options: Any) -> Any:
    """A media engine: C when built (or ``native=True``), else the pure-Python twin."""
    from nf_modules.mediacore.engine import MediaEngine

    if native is None:
        try:
            return MediaEngine(native=True, **options)
        except (ImportError, RuntimeError, NotImplementedError):
            return MediaEngine(native=False, **options)
    return MediaEngine(native=native, **options)


def _as_dict(value: Any) -> dict[str, Any]:
    """A stats object as a JSON-safe dict (NaN, e.g. no latency measured, becomes ``None``)."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        raw = dict(value)
    elif hasattr(value, "as_dict"):  # FlowStats: a flat copy, not dataclasses.asdict's deep one
        raw = value.as_dict()
    elif dataclasses.is_dataclass(value):
        raw = dataclasses.asdict(value)
    else:
        raw = dict(vars(value))
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in raw.items()}

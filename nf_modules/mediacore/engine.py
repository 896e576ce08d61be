"""The media engine's Python face (paper 004 V-A: the Media Processor's packet work).

:class:`MediaEngine` owns a packet thread that receives RTP on the flows' sockets, keeps each
flow's metadata, applies the flow's current :class:`Instruction` and sends the result, and that
also runs the RTP generators of the emulated UEs.  ``native=True`` runs the C engine
(``_mediaengine``: recvmmsg/sendmmsg on a pthread without the GIL); ``native=False`` runs the
pure-Python twin (:mod:`.pure_engine`) with the same behaviour.  Python never runs per packet:
it configures flows, replaces instructions atomically, and drains :class:`Metadata` records when
:meth:`MediaEngine.fileno` becomes readable (``loop.add_reader``).

Send-time stamp: RFC 8285 one-byte extension (profile 0xBEDE), element id 1, 8 bytes of the
sender's CLOCK_MONOTONIC nanoseconds (``time.monotonic_ns()``), big-endian.
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import pure_engine

_ACTIONS = {"forward": 0, "drop": 1, "sink": 2}
_TRANSCODES = {None: 0, "ulaw2alaw": 1, "alaw2ulaw": 2}

#: Audio a recording=True flow keeps at most, in seconds of 8 kHz G.711.
RECORDING_SECONDS = 60


@dataclass(frozen=True)
class Instruction:
    """A flow's control instruction (what MRFC decides for the flow's metadata)."""

    action: str = "forward"  # 'forward' | 'drop' | 'sink' (metadata only, no output)
    dest: tuple[str, int] | None = None  # where to send (forward); a numeric IP address
    out_sock: socket.socket | None = None  # socket to send from (None: the flow's own)
    transcode: str | None = None  # None | 'ulaw2alaw' | 'alaw2ulaw'
    ptime_ms: int | None = None  # repacketize to this packet interval (None: keep)
    payload_type: int | None = None  # rewrite PT (None: keep; transcode sets 8/0)
    version: int = 0  # who made it; echoed in stats

    def __post_init__(self) -> None:
        if self.action not in _ACTIONS:
            raise ValueError(f"action must be one of {sorted(_ACTIONS)}, got {self.action!r}")
        if self.transcode not in _TRANSCODES:
            raise ValueError(f"transcode must be None, 'ulaw2alaw' or 'alaw2ulaw', got {self.transcode!r}")
        if self.action == "forward" and self.dest is None:
            raise ValueError("dest: a forward instruction needs a destination")
        if self.ptime_ms is not None and not 10 <= self.ptime_ms <= 200:
            raise ValueError(f"ptime_ms must be in 10..200, got {self.ptime_ms}")
        if self.payload_type is not None and not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload_type must be in 0..127, got {self.payload_type}")

    def rule(self) -> pure_engine.FullRule:
        """The tuple both backends take."""
        host, port = self.dest if self.dest is not None else (None, 0)
        return (
            _ACTIONS[self.action],
            host,
            port,
            self.out_sock.fileno() if self.out_sock is not None else -1,
            _TRANSCODES[self.transcode],
            self.ptime_ms or 0,
            -1 if self.payload_type is None else self.payload_type,
            self.version,
        )


@dataclass(frozen=True)
class Metadata:
    """One record per flow per metadata interval with traffic."""

    flow_id: int
    seq: int
    at: float  # time.monotonic() of the record
    ssrc: int
    packets: int  # cumulative
    bytes: int  # cumulative
    payload_size: float  # mean payload bytes over the interval
    packet_rate: float  # packets/s over the interval
    jitter_ms: float  # RFC 3550 6.4.1 interarrival jitter (8 kHz clock)
    lost: int  # cumulative, RFC 3550 A.3
    latency_ms: float | None  # mean one-way latency over the interval (stamped packets)
    held: bool  # the flow is now held (hold_on_metadata)


@dataclass(frozen=True)
class FlowStats:
    """A flow's cumulative counters and one-way latency percentiles in ms (p50 ... max, from an
    HDR-style log-linear histogram, relative error < 1/64; NaN when no stamped packet came).
    ``latency_buckets``: that histogram's non-empty buckets as ``(low_ms, high_ms, count)``,
    ascending; a bucket holds the latencies (whole us) from ``low_ms`` to ``high_ms`` inclusive:
    one us wide below 0.128 ms, then under 1/64 of ``low_ms``. Buckets of many flows add up to
    the histogram of all their packets."""

    flow_id: int
    packets: int
    bytes: int
    payload_bytes: int
    ssrc: int
    lost: int  # RFC 3550 A.3, cumulative
    highest_seq: int  # extended highest sequence number received (RFC 3550 A.1)
    jitter_ms: float
    latency_count: int  # stamped packets measured
    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    held: bool
    held_packets: int  # packets that waited in the hold queue, cumulative
    hold_queue: int  # packets waiting now
    hold_time_ms: float  # total time the flow spent held
    recorded_bytes: int
    version: int  # of the current instruction
    drops: dict[str, int] = field(default_factory=dict)
    latency_buckets: tuple[tuple[float, float, int], ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlowStats:
        values = {key: d[raw_key] for key, raw_key in _SOURCES}  # in field order
        for key in _PERCENTILES:
            if values[key] is None:
                values[key] = math.nan
        values["latency_buckets"] = tuple((low / 1000.0, high / 1000.0, n) for low, high, n in d.get("latency_buckets", ()))
        # Every field is set above, and the class has no __post_init__: fill the instance's
        # __dict__ directly instead of the frozen __init__'s object.__setattr__ per field.
        stats = object.__new__(cls)
        stats.__dict__.update(values)
        return stats

    def as_dict(self) -> dict[str, Any]:
        """The fields as a new dict (what ``dataclasses.asdict`` gives, without its deep copy:
        the only mutable field is ``drops``, copied)."""
        out = dict(self.__dict__)
        out["drops"] = dict(self.drops)
        return out


_PERCENTILES = ("p50", "p90", "p99", "p999", "max")
#: ``(FlowStats field, key in the backends' dict)``, in field order; ``latency_buckets`` (last,
#: optional in the dict) is converted apart.
_SOURCES = tuple((k, f"latency_{k}_ms" if k in _PERCENTILES else k)
                 for k in FlowStats.__dataclass_fields__ if k != "latency_buckets")


class _Backend(Protocol):
    def start(self) -> None: ...
    def close(self) -> None: ...
    def add_flow(self, flow_id: int, fd: int, rule: Any, hold_on_metadata: bool, record: bool) -> None: ...
    def remove_flow(self, flow_id: int) -> dict[str, Any]: ...
    def set_instructions(self, items: list[tuple[int, Any]]) -> None: ...
    def release(self, flow_id: int) -> None: ...
    def flow_stats(self, flow_id: int) -> dict[str, Any]: ...
    def stats(self) -> dict[str, int]: ...
    def fileno(self) -> int: ...
    def drain_metadata(self) -> list[tuple[Any, ...]]: ...
    def take_recording(self, flow_id: int) -> bytes: ...
    def add_generator(self, *args: Any) -> None: ...
    def remove_generator(self, gen_id: int) -> dict[str, int]: ...
    def generator_stats(self, gen_id: int) -> dict[str, int]: ...


class MediaEngine:
    """The packet engine; every method may be called from any thread (one lock inside).

    The caller keeps each flow's socket (and every ``out_sock``) open until ``remove_flow``
    returns / the instruction is replaced; the engine never closes them.
    """

    def __init__(
        self,
        native: bool = True,
        batch: int = 32,
        metadata_interval: float = 0.1,
        hold_limit: int = 256,
        recording_seconds: float = RECORDING_SECONDS,
    ) -> None:
        limit = int(recording_seconds * 8000)
        self.native = native
        if native:
            from ._mediaengine import Engine

            self._b: _Backend = Engine(batch=batch, metadata_interval=metadata_interval, hold_limit=hold_limit,
                                       recording_limit=limit)  # fmt: skip
        else:
            self._b = pure_engine.PureEngine(batch, metadata_interval, hold_limit, limit)

    def start(self) -> None:
        """Start the packet thread (idempotent)."""
        self._b.start()

    def close(self) -> None:
        """Stop and join the packet thread; idempotent.  Sockets stay the caller's."""
        self._b.close()

    def __enter__(self) -> MediaEngine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_flow(
        self,
        flow_id: int,
        sock: socket.socket,
        instruction: Instruction,
        *,
        hold_on_metadata: bool = False,
        record: bool = False,
    ) -> None:
        """Own the packets arriving on ``sock`` as flow ``flow_id``."""
        self._b.add_flow(flow_id, sock.fileno(), instruction.rule(), hold_on_metadata, record)

    def remove_flow(self, flow_id: int) -> FlowStats:
        """Stop the flow; packets already queued on its socket are counted as 'removed_flow'."""
        return FlowStats.from_dict(self._b.remove_flow(flow_id))

    def set_instructions(self, instructions: dict[int, Instruction]) -> None:
        """Replace the instructions of these flows atomically; also releases held flows."""
        self._b.set_instructions([(flow_id, ins.rule()) for flow_id, ins in instructions.items()])

    def release(self, flow_id: int) -> None:
        """Baseline mode: let the held packets go with the current instruction."""
        self._b.release(flow_id)

    def flow_stats(self, flow_id: int) -> FlowStats:
        return FlowStats.from_dict(self._b.flow_stats(flow_id))

    def flow_bytes(self, flow_id: int) -> int:
        """``flow_stats(flow_id).bytes`` without building the :class:`FlowStats`."""
        return self._b.flow_stats(flow_id)["bytes"]

    def stats(self) -> dict[str, int]:
        """Global counters: rx, tx, generated, metadata_records and drops by reason."""
        return self._b.stats()

    def fileno(self) -> int:
        """Readable when metadata records are waiting (an eventfd)."""
        return self._b.fileno()

    def drain_metadata(self) -> list[Metadata]:
        return [Metadata(*record) for record in self._b.drain_metadata()]

    def take_recording(self, flow_id: int) -> bytes:
        """Payload bytes received so far on a record=True flow (bounded; consumed by the call)."""
        return self._b.take_recording(flow_id)

    def add_generator(
        self,
        gen_id: int,
        sock: socket.socket,
        dest: tuple[str, int],
        *,
        payload: bytes,
        payload_type: int = 0,
        ssrc: int,
        ptime_ms: int = 20,
        stamp: bool = True,
        count: int | None = None,
    ) -> None:
        """Send ``payload`` (looped, ptime*8 bytes a packet) from ``sock`` to ``dest`` every ptime."""
        host, port = dest
        self._b.add_generator(gen_id, sock.fileno(), host, port, payload, payload_type, ssrc, ptime_ms, stamp,
                              -1 if count is None else count)  # fmt: skip

    def remove_generator(self, gen_id: int) -> dict[str, int]:
        return self._b.remove_generator(gen_id)

    def generator_stats(self, gen_id: int) -> dict[str, int]:
        """{'sent', 'errors', 'sequence_number', 'ssrc'} of a running generator."""
        return self._b.generator_stats(gen_id)

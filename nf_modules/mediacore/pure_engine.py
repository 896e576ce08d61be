"""Pure-Python twin of the native media engine's packet loop (``_mediaengine.c``).

:class:`PureEngine` has exactly the methods, arguments, tuples and dicts of
``_mediaengine.Engine``, so :class:`~nf_modules.mediacore.engine.MediaEngine` runs on either
(``native=False``).  Per packet it calls the functions of :mod:`.pure_packet` (the twin of
``engine_core.c``).  It is for tests and debugging, not for load.
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .pure import parse_rtp
from .pure_packet import (
    ACTION_FORWARD,
    DROP_REASONS,
    MAX_PACKET,
    FlowCore,
    Rule,
    apply,
    check_rule,
    core_stats,
    receive,
    snapshot,
    stamp_extension,
)

__all__ = ["FullRule", "PureEngine"]

_M32 = 0xFFFFFFFF
_MD_QUEUE_CAP = 65536
_GEN_BURST_MAX = 8

#: (action, dest_host | None, dest_port, out_fd (-1: the flow's socket), transcode, ptime_ms,
#: payload_type, version): a whole instruction as the backends take it.
FullRule = tuple[int, str | None, int, int, int, int, int, int]


@dataclass
class _Flow:
    flow_id: int
    sock: socket.socket
    rule: Rule
    out: socket.socket
    dest: tuple[str, int] | None
    version: int
    hold_on_metadata: bool
    core: FlowCore
    held: bool = False
    release_pending: bool = False
    held_since_ns: int = 0
    hold_time_ns: int = 0
    held_packets: int = 0
    queue: list[bytes] = field(default_factory=list)


@dataclass
class _Generator:
    gen_id: int
    sock: socket.socket
    dest: tuple[str, int]
    payload: bytes
    pt: int
    ssrc: int
    ptime_ms: int
    stamp: bool
    count: int
    seq: int
    ts: int
    next_due_ns: int
    pos: int = 0
    sent: int = 0
    errors: int = 0


def _dup(fd: int) -> socket.socket:
    sock = socket.socket(fileno=os.dup(fd))
    sock.setblocking(False)
    return sock


def _check_dest(host: str | None, port: int) -> tuple[str, int] | None:
    if host is None:
        return None
    if not 0 <= port <= 65535:
        raise ValueError(f"dest: port must be in 0..65535, got {port}")
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return (host, port)
        except OSError:
            pass
    raise ValueError(f"dest: not a numeric IP address: {host!r}")


class PureEngine:
    """``_mediaengine.Engine`` in Python: same methods, arguments, tuples and dicts.

    The packet loop runs on its own ``threading.Thread``; every call and every loop iteration
    holds one lock, as in C.  Sockets are ``dup``-ed so the caller keeps ownership of its own.
    """

    def __init__(
        self, batch: int = 32, metadata_interval: float = 0.1, hold_limit: int = 256, recording_limit: int = 480000
    ) -> None:
        if not 1 <= batch <= 1024:
            raise ValueError(f"batch must be in 1..1024, got {batch}")
        if not 0.0 <= metadata_interval <= 3600.0:
            raise ValueError("metadata_interval must be in [0, 3600] seconds")
        if hold_limit < 0 or recording_limit < 0:
            raise ValueError("hold_limit and recording_limit must be >= 0")
        self._batch = batch
        self._interval_ns = int(metadata_interval * 1e9)
        self._hold_limit = hold_limit
        self._rec_limit = recording_limit
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._mdfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._flows: dict[int, _Flow] = {}
        self._gens: dict[int, _Generator] = {}
        self._mdq: list[tuple[Any, ...]] = []
        self._drops = dict.fromkeys(DROP_REASONS, 0)
        self._counters = {"rx": 0, "tx": 0, "metadata_records": 0, "metadata_overflow": 0, "generated": 0}
        self._next_md_ns = time.monotonic_ns() + self._interval_ns
        self._release_flag = False
        self._thread: threading.Thread | None = None
        self._running = False
        self._closed = False

    # -- packet thread ---------------------------------------------------------------------

    def _send(self, fl: _Flow, outs: list[bytes]) -> None:
        for out in outs:
            try:
                fl.out.sendto(out, fl.dest)  # type: ignore[arg-type]
                self._counters["tx"] += 1
            except OSError:
                self._drops["send_error"] += 1

    def _input(self, fl: _Flow, data: bytes, now: int) -> None:
        _, h = receive(fl.core, data, now)
        if h is None:
            return
        if fl.held:
            if len(fl.queue) >= self._hold_limit:
                fl.core.drops["hold_overflow"] += 1
                return
            fl.queue.append(data)
            fl.held_packets += 1
            return
        self._send(fl, apply(fl.core, fl.rule, data, h))

    def _receive(self, fl: _Flow) -> None:
        now = time.monotonic_ns()
        for _ in range(self._batch):
            try:
                data = fl.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self._counters["rx"] += 1
            if len(data) > MAX_PACKET:
                fl.core.drops["truncated"] += 1
                continue
            self._input(fl, data, now)

    def _release(self, fl: _Flow, now: int) -> None:
        fl.release_pending = False
        if fl.held:
            fl.hold_time_ns += now - fl.held_since_ns
            fl.held = False
        queue, fl.queue = fl.queue, []
        for data in queue:
            h = parse_rtp(data)
            self._send(fl, apply(fl.core, fl.rule, data, h))

    def _generated(self, g: _Generator, now: int) -> bytes:
        per = g.ptime_ms * 8
        first = 0x80 | (0x10 if g.stamp else 0)
        head = struct.pack("!BBHII", first, (0x80 if g.sent == 0 else 0) | g.pt, g.seq, g.ts, g.ssrc)
        body = bytes(g.payload[(g.pos + i) % len(g.payload)] for i in range(per))
        g.pos = (g.pos + per) % len(g.payload)
        return head + (stamp_extension(now) if g.stamp else b"") + body

    def _run_generators(self, now: int) -> None:
        for g in self._gens.values():
            period = g.ptime_ms * 1_000_000
            burst = 0
            while burst < _GEN_BURST_MAX and g.next_due_ns <= now:
                if 0 <= g.count <= g.sent:
                    break
                try:
                    g.sock.sendto(self._generated(g, time.monotonic_ns()), g.dest)
                    self._counters["generated"] += 1
                except OSError:
                    g.errors += 1
                    self._drops["send_error"] += 1
                g.sent += 1
                g.seq = (g.seq + 1) & 0xFFFF
                g.ts = (g.ts + g.ptime_ms * 8) & _M32
                g.next_due_ns += period
                burst += 1
            if now - g.next_due_ns > 1_000_000_000:
                g.next_due_ns = now + period

    def _metadata_tick(self, now: int) -> None:
        if self._interval_ns <= 0 or now < self._next_md_ns:
            return
        any_record = False
        for fl in self._flows.values():
            if fl.core.iv_packets == 0:
                continue
            s = snapshot(fl.core, now)
            if fl.hold_on_metadata and not fl.held:
                fl.held = True
                fl.held_since_ns = now
            if len(self._mdq) >= _MD_QUEUE_CAP:
                self._counters["metadata_overflow"] += 1
            else:
                self._mdq.append(
                    (fl.flow_id, s.seq, now / 1e9, s.ssrc, s.packets, s.bytes, s.payload_size, s.packet_rate,
                     s.jitter_ms, s.lost, s.latency_ms, fl.held)
                )  # fmt: skip
                self._counters["metadata_records"] += 1
            any_record = True
        if any_record:
            os.eventfd_write(self._mdfd, 1)
        self._next_md_ns += self._interval_ns
        if self._next_md_ns <= now:
            self._next_md_ns = now + self._interval_ns

    def _timeout(self) -> float | None:
        due = self._next_md_ns if self._interval_ns > 0 else None
        for g in self._gens.values():
            if (g.count < 0 or g.sent < g.count) and (due is None or g.next_due_ns < due):
                due = g.next_due_ns
        return None if due is None else max(due - time.monotonic_ns(), 0) / 1e9

    def _main(self) -> None:
        timeout: float | None = None
        while True:
            events = self._selector.select(timeout)
            with self._lock:
                if not self._running:
                    return
                for key, _ in events:
                    if key.data is None:
                        try:
                            self._wake_r.recv(4096)
                        except OSError:
                            pass
                        continue
                    fl = self._flows.get(key.data)
                    if fl is not None:
                        self._receive(fl)
                now = time.monotonic_ns()
                if self._release_flag:
                    self._release_flag = False
                    for fl in self._flows.values():
                        if fl.release_pending:
                            self._release(fl, now)
                self._run_generators(now)
                self._metadata_tick(now)
                timeout = self._timeout()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # -- control (any thread) ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the media engine is closed")

    def start(self) -> None:
        self._check_open()
        if self._thread is not None:
            return
        self._running = True
        self._thread = threading.Thread(target=self._main, name="pure-media-engine", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._closed:
            return
        if self._thread is not None:
            with self._lock:
                self._running = False
                self._wake()
            self._thread.join()
        self._closed = True
        for fl in self._flows.values():
            self._forget(fl)
        for g in self._gens.values():
            g.sock.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        os.close(self._mdfd)

    def _forget(self, fl: _Flow) -> None:
        if fl.out is not fl.sock:
            fl.out.close()
        fl.sock.close()

    def _parse(self, full: FullRule) -> tuple[Rule, tuple[str, int] | None, int]:
        action, host, port, out_fd, how, ptime_ms, pt, version = full
        rule = (action, how, ptime_ms, pt)
        check_rule(rule)
        dest = _check_dest(host, port)
        if action == ACTION_FORWARD and dest is None:
            raise ValueError("dest: a forward instruction needs a destination")
        return rule, dest, version

    def _install(self, fl: _Flow, full: FullRule, rule: Rule, dest: tuple[str, int] | None, version: int) -> None:
        out_fd = full[3]
        if fl.out is not fl.sock:
            fl.out.close()
        fl.out = _dup(out_fd) if out_fd >= 0 else fl.sock
        fl.rule, fl.dest, fl.version = rule, dest, version

    def add_flow(self, flow_id: int, fd: int, full: FullRule, hold_on_metadata: bool, record: bool) -> None:
        self._check_open()
        rule, dest, version = self._parse(full)
        with self._lock:
            if flow_id in self._flows:
                raise ValueError(f"flow_id {flow_id} already exists")
            sock = _dup(fd)
            core = FlowCore(record=bool(record), rec_limit=self._rec_limit, iv_start_ns=time.monotonic_ns())
            fl = _Flow(flow_id, sock, rule, sock, dest, version, bool(hold_on_metadata), core)
            self._install(fl, full, rule, dest, version)
            self._selector.register(sock, selectors.EVENT_READ, flow_id)
            self._flows[flow_id] = fl
            self._wake()

    def _flow(self, flow_id: int) -> _Flow:
        fl = self._flows.get(flow_id)
        if fl is None:
            raise KeyError(f"no flow {flow_id}")
        return fl

    def _flow_stats(self, fl: _Flow, now: int) -> dict[str, Any]:
        d = core_stats(fl.core)
        d.update(
            flow_id=fl.flow_id,
            held=fl.held,
            held_packets=fl.held_packets,
            hold_queue=len(fl.queue),
            hold_time_ms=(fl.hold_time_ns + (now - fl.held_since_ns if fl.held else 0)) / 1e6,
            version=fl.version,
        )
        return d

    def remove_flow(self, flow_id: int) -> dict[str, Any]:
        self._check_open()
        with self._lock:
            fl = self._flow(flow_id)
            self._selector.unregister(fl.sock)
            del self._flows[flow_id]
            while True:
                try:
                    fl.sock.recv(65536)
                except OSError:
                    break
                self._counters["rx"] += 1
                fl.core.drops["removed_flow"] += 1
            fl.core.drops["removed_flow"] += len(fl.queue)
            fl.queue.clear()
            d = self._flow_stats(fl, time.monotonic_ns())
            for k, v in fl.core.drops.items():
                self._drops[k] += v
            self._forget(fl)
            return d

    def set_instructions(self, items: list[tuple[int, FullRule]]) -> None:
        self._check_open()
        parsed = [(flow_id, full, *self._parse(full)) for flow_id, full in items]
        with self._lock:
            for flow_id, *_ in parsed:
                self._flow(flow_id)
            for flow_id, full, rule, dest, version in parsed:
                fl = self._flows[flow_id]
                self._install(fl, full, rule, dest, version)
                if fl.held:
                    fl.release_pending = True
                    self._release_flag = True
            if self._release_flag:
                self._wake()

    def release(self, flow_id: int) -> None:
        self._check_open()
        with self._lock:
            fl = self._flow(flow_id)
            if fl.held:
                fl.release_pending = True
                self._release_flag = True
                self._wake()

    def flow_stats(self, flow_id: int) -> dict[str, Any]:
        self._check_open()
        with self._lock:
            return self._flow_stats(self._flow(flow_id), time.monotonic_ns())

    def stats(self) -> dict[str, int]:
        self._check_open()
        with self._lock:
            d = dict(self._drops)
            for fl in self._flows.values():
                for k, v in fl.core.drops.items():
                    d[k] += v
            d.update(self._counters)
            d["flows"] = len(self._flows)
            d["generators"] = len(self._gens)
            return d

    def fileno(self) -> int:
        self._check_open()
        return self._mdfd

    def drain_metadata(self) -> list[tuple[Any, ...]]:
        self._check_open()
        with self._lock:
            try:
                os.eventfd_read(self._mdfd)
            except BlockingIOError:
                pass
            records, self._mdq = self._mdq, []
            return records

    def take_recording(self, flow_id: int) -> bytes:
        self._check_open()
        with self._lock:
            fl = self._flow(flow_id)
            data = bytes(fl.core.rec)
            fl.core.rec.clear()
            return data

    def add_generator(
        self,
        gen_id: int,
        fd: int,
        host: str,
        port: int,
        payload: bytes,
        payload_type: int,
        ssrc: int,
        ptime_ms: int,
        stamp: bool,
        count: int,
    ) -> None:
        self._check_open()
        if not payload:
            raise ValueError("payload must not be empty")
        if not 0 <= payload_type <= 127:
            raise ValueError(f"payload_type must be in 0..127, got {payload_type}")
        if not 10 <= ptime_ms <= 200:
            raise ValueError(f"ptime_ms must be in 10..200, got {ptime_ms}")
        if not 0 <= ssrc <= _M32:
            raise ValueError(f"ssrc must be in 0..4294967295, got {ssrc}")
        dest = _check_dest(host, port)
        if dest is None:
            raise ValueError("dest: a generator needs a destination")
        with self._lock:
            if gen_id in self._gens:
                raise ValueError(f"gen_id {gen_id} already exists")
            self._gens[gen_id] = _Generator(
                gen_id, _dup(fd), dest, bytes(payload), payload_type, ssrc, ptime_ms, bool(stamp), count,
                seq=((ssrc * 2654435761) >> 7) & 0xFFFF, ts=(ssrc * 40503) & _M32, next_due_ns=time.monotonic_ns(),
            )  # fmt: skip
            self._wake()

    @staticmethod
    def _gen_stats(g: _Generator) -> dict[str, int]:
        return {"sent": g.sent, "errors": g.errors, "sequence_number": g.seq, "ssrc": g.ssrc}

    def remove_generator(self, gen_id: int) -> dict[str, int]:
        self._check_open()
        with self._lock:
            g = self._gens.pop(gen_id, None)
            if g is None:
                raise KeyError(f"no generator {gen_id}")
            g.sock.close()
            return self._gen_stats(g)

    def generator_stats(self, gen_id: int) -> dict[str, int]:
        self._check_open()
        with self._lock:
            g = self._gens.get(gen_id)
            if g is None:
                raise KeyError(f"no generator {gen_id}")
            return self._gen_stats(g)

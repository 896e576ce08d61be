"""Fixtures that drive external SIP tools against our actors: SIPp as a peer, tshark as a judge.

``ports``           a block of consecutive UDP ports on 127.0.0.1, free when reserved and outside
                    the kernel's ephemeral range, from which the test takes every port it binds
                    (actors, SIPp's SIP, media and control sockets), so one capture filter
                    ``udp portrange A-B`` sees exactly this test's traffic.
``sipp``            runs SIPp as a bounded subprocess (``-m`` calls at ``-r`` calls/s, a global
                    ``-timeout`` with ``-timeout_error`` so it always stops by itself, ``-nostdin``,
                    bound to 127.0.0.1 on ports from the block) and returns a :class:`SippResult`:
                    exit code, successful/failed call counts from its ``-trace_stat`` CSV, and its
                    error/message/screen logs for the failure report.
``tshark_capture``  a running ``tshark -i lo -f "udp portrange A-B" -w capture.pcapng``. Setup
                    returns once tshark has printed "Capturing on" and a sentinel datagram has
                    reached the file. ``decode(nodes)`` flushes the capture the same way, stops
                    tshark with SIGINT and returns the SIP messages, malformed packets and
                    expert infos. Every port the test took is decoded as SIP
                    (``-d udp.port==P,sip``).
``runtime``         an owned :class:`actors.Runtime` (its own loop thread) for the actors under
                    test; a sync test drives it with ``runtime.run(coro, timeout=...)``.
                    ``start_node`` / ``start_chain`` start actors on it as :class:`Node` handles,
                    and ``assert_sent_cleanly`` / ``assert_every_call_has`` judge a capture.
``ims_factory``     ``start_ims``: every module of ``topologies/default.toml`` (HSS, MRFP, MRFC,
                    S-CSCF and AS modules, P-CSCF, a UE pool of 50 registered users) on the
                    runtime, each on a port of the block (the MRFP's RTP range too), stopped
                    after the test; queried through :class:`ImsUnderTest`.

A missing binary skips these tests on a developer machine and fails them in CI (``CI=true``),
where ``.ci/run`` must have installed it.

Everything here runs on the test's own thread: subprocesses are waited on with timeouts, files
are polled with deadlines, never open-ended.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from actors import Runtime
from experiments.bench_sip import ports_free

HOST = "127.0.0.1"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_tool(name: str) -> str:
    """The path of ``name``; skip without it, except in CI where its absence is a failure."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (.ci/run installs it: apt-get install sip-tester tshark)"
        if in_ci():
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def _tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


# ---------------------------------------------------------------------------------------------
# Ports
# ---------------------------------------------------------------------------------------------


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def udp_port_bound(port: int, host: str = HOST) -> bool:
    """True when some socket is bound to UDP ``host:port`` (read from /proc, no probe socket)."""
    wanted_port = f"{port:04X}"
    wanted_hosts = {"00000000", socket.inet_aton(host)[::-1].hex().upper()}
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:  # pragma: no cover - not Linux
        return True
    for line in lines:
        local = line.split()[1]
        address, _, hex_port = local.partition(":")
        if hex_port == wanted_port and address in wanted_hosts:
            return True
    return False


class PortBlock:
    """``size`` consecutive UDP ports on 127.0.0.1 for one test; the last one is the capture sentinel's.

    The block is chosen at random below (or above) the kernel's ephemeral range and checked free
    by binding all of it; nothing holds it afterwards, so a port is bound by whoever the test
    gives it to. ``take()`` hands out ports in order; ``sip_ports`` are those tshark decodes as SIP.
    """

    def __init__(self, size: int = 40, rng: random.Random | None = None) -> None:
        if size < 2:
            raise ValueError("a port block needs at least 2 ports")
        rng = rng or random.Random()
        low, high = _ephemeral_range()
        if low - 10000 > size:
            span = (10000, low - size)
        else:
            span = (high + 1, 65535 - size)
        for _ in range(200):
            first = rng.randrange(*span)
            if ports_free(first, size):
                break
        else:
            raise RuntimeError(f"no {size} consecutive free UDP ports in {span}")
        self.first = first
        self.last = first + size - 1
        self.sentinel = self.last
        self._next = first
        self.sip_ports: list[int] = []

    def take(self, count: int = 1, *, sip: bool = True) -> int:
        """The first of ``count`` consecutive unused ports of the block."""
        if self._next + count > self.sentinel:
            raise RuntimeError(f"port block {self.first}-{self.last} exhausted")
        port = self._next
        self._next += count
        if sip:
            self.sip_ports.extend(range(port, port + count))
        return port

    def address(self) -> tuple[str, int]:
        """A fresh SIP ``(host, port)`` from the block, for an actor's ``bind``."""
        return (HOST, self.take())

    @property
    def capture_filter(self) -> str:
        return f"udp portrange {self.first}-{self.last}"

    def __repr__(self) -> str:
        return f"<PortBlock {self.first}-{self.last} sip={self.sip_ports}>"


@pytest.fixture
def ports() -> PortBlock:
    return PortBlock()


# ---------------------------------------------------------------------------------------------
# SIPp
# ---------------------------------------------------------------------------------------------

SIPP_EXIT_CODES = {
    0: "all calls succeeded",
    1: "at least one call failed",
    97: "exit on internal command",
    99: "normal exit without calls processed",
    255: "fatal error",
    254: "fatal error binding a socket",
}


@dataclass
class SippResult:
    """What one SIPp run did. ``ok``: exit code 0, i.e. every call succeeded."""

    command: list[str]
    returncode: int
    successful: int
    failed: int
    stats: dict[str, str]
    elapsed: float
    errors: str = ""  # -trace_err
    messages: str = ""  # -trace_msg
    screen: str = ""  # -trace_screen (the final statistics screen)
    stdout: str = ""
    stderr: str = ""
    killed: bool = False  # did not stop by itself within its bound

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.killed

    def report(self) -> str:
        """A failure message: command, exit code, counts, and the tails of SIPp's logs."""
        meaning = SIPP_EXIT_CODES.get(self.returncode, "unknown")
        parts = [
            f"SIPp exit {self.returncode} ({meaning}){' KILLED after its bound' if self.killed else ''}: "
            f"{self.successful} successful, {self.failed} failed calls in {self.elapsed:.1f} s",
            "command: " + " ".join(self.command),
        ]
        for name, text in (
            ("error log", self.errors),
            ("stderr", self.stderr),
            ("screen", self.screen or self.stdout),
            ("message log (tail)", self.messages),
        ):
            if text.strip():
                parts.append(f"--- {name} ---\n{_tail(text.strip())}")
        return "\n".join(parts)


def parse_sipp_stats(csv_text: str) -> dict[str, str]:
    """The last row of a ``-trace_stat`` CSV as ``{column: value}`` (cumulative columns end in ``(C)``)."""
    lines = [line for line in csv_text.splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    header = lines[0].split(";")
    row = lines[-1].split(";")
    return {name: value for name, value in zip(header, row) if name}


def _screen_count(screen: str, label: str) -> int | None:
    """``Successful call | periodic | cumulative`` from SIPp's statistics screen."""
    for line in screen.splitlines():
        if line.strip().startswith(label) and "|" in line:
            cells = [c.strip() for c in line.split("|")]
            try:
                return int(cells[-1].split()[0]) if cells[-1] else int(cells[-2].split()[0])
            except (ValueError, IndexError):
                return None
    return None


class SippRun:
    """A SIPp subprocess started by :class:`Sipp`; ``wait()`` returns its :class:`SippResult`."""

    def __init__(self, command: list[str], workdir: Path, prefix: str, port: int, bound: float) -> None:
        self.command = command
        self.port = port
        self.address = (HOST, port)
        self.bound = bound
        self._files = {
            name: workdir / f"{prefix}.{name}"
            for name in ("stat.csv", "errors.log", "messages.log", "screen.log", "stdout", "stderr")
        }
        self._stdout = self._files["stdout"].open("wb")
        self._stderr = self._files["stderr"].open("wb")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=self._stderr, cwd=workdir
        )
        self.result: SippResult | None = None

    def wait_listening(self, timeout: float = 10.0) -> None:
        """Return once SIPp has bound its SIP port, or has already exited (``wait()`` tells how)."""
        deadline = time.monotonic() + timeout
        while not udp_port_bound(self.port):
            if self.process.poll() is not None:
                return
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"SIPp did not bind {self.address} within {timeout} s", pytrace=False)
            time.sleep(0.02)

    def wait(self) -> SippResult:
        """Wait for SIPp to stop by itself (its ``-timeout`` plus a margin), else kill it."""
        if self.result is not None:
            return self.result
        killed = False
        try:
            self.process.wait(timeout=max(0.0, self.started + self.bound - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed = True
            self.process.kill()
            self.process.wait(timeout=10)
        elapsed = time.monotonic() - self.started
        self._stdout.close()
        self._stderr.close()
        files = {name: _read(path) for name, path in self._files.items()}
        stats = parse_sipp_stats(files["stat.csv"])
        screen = files["screen.log"] or files["stdout"]

        def count(column: str, label: str) -> int:
            value = stats.get(column)
            if value is not None and value.strip().isdigit():
                return int(value)
            return _screen_count(screen, label) or 0

        self.result = SippResult(
            command=self.command,
            returncode=self.process.returncode,
            successful=count("SuccessfulCall(C)", "Successful call"),
            failed=count("FailedCall(C)", "Failed call"),
            stats=stats,
            elapsed=elapsed,
            errors=files["errors.log"],
            messages=files["messages.log"],
            screen=files["screen.log"],
            stdout=files["stdout"],
            stderr=files["stderr"],
            killed=killed,
        )
        return self.result

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


class Sipp:
    """Runs SIPp bounded in calls and time, on ports from the test's :class:`PortBlock`.

    ``scenario`` is a stock scenario name (``"uac"``, ``"uas"``: ``-sn``), the name of a file in
    ``tests/interop/scenarios/`` (``"uac_route_set"``: ``-sf``) or a path to one.
    """

    def __init__(self, binary: str, workdir: Path, ports: PortBlock) -> None:
        self.binary = binary
        self.workdir = workdir
        self.ports = ports
        self.runs: list[SippRun] = []

    def _scenario_args(self, scenario: str | Path) -> list[str]:
        if isinstance(scenario, str) and not scenario.endswith(".xml") and "/" not in scenario:
            local = SCENARIOS / f"{scenario}.xml"
            if local.exists():
                return ["-sf", str(local)]
            return ["-sn", scenario]
        return ["-sf", str(scenario)]

    def start(
        self,
        scenario: str | Path,
        remote: tuple[str, int] | None = None,
        *,
        calls: int = 20,
        rate: float = 10.0,
        timeout: float = 30.0,
        service: str = "service",
        trace_msg: bool = True,
        extra: Iterable[str] = (),
    ) -> SippRun:
        """Start SIPp and return once it listens on its SIP port (taken from the block)."""
        if calls < 1 or rate <= 0 or timeout <= 0:
            raise ValueError("calls, rate and timeout must be positive")
        port = self.ports.take()
        media = self.ports.take(4, sip=False)  # audio and video RTP/RTCP: mp .. mp+3
        control = self.ports.take(sip=False)
        prefix = f"sipp{len(self.runs) + 1}"
        files = {name: self.workdir / f"{prefix}.{name}" for name in ("stat.csv", "errors.log", "messages.log", "screen.log")}
        command = [self.binary, *self._scenario_args(scenario)]
        if remote is not None:
            command.append(f"{remote[0]}:{remote[1]}")
        command += [
            "-i", HOST, "-p", str(port), "-mp", str(media), "-cp", str(control),
            "-s", service,
            "-m", str(calls), "-r", str(rate),
            "-timeout", f"{int(timeout)}s", "-timeout_error",
            "-nostdin",
            "-trace_stat", "-stf", str(files["stat.csv"]), "-fd", "1",
            "-trace_err", "-error_file", str(files["errors.log"]),
            "-trace_screen", "-screen_file", str(files["screen.log"]),
        ]  # fmt: skip
        if trace_msg:
            command += ["-trace_msg", "-message_file", str(files["messages.log"])]
        command += list(extra)
        run = SippRun(command, self.workdir, prefix, port, bound=timeout + 15.0)
        self.runs.append(run)
        run.wait_listening()
        return run

    def run(self, scenario: str | Path, remote: tuple[str, int] | None = None, **kwargs: Any) -> SippResult:
        """``start(...)`` and wait for SIPp to finish by itself."""
        return self.start(scenario, remote, **kwargs).wait()

    def close(self) -> None:
        for run in self.runs:
            run.kill()


@pytest.fixture
def sipp(tmp_path: Path, ports: PortBlock) -> Iterator[Sipp]:
    helper = Sipp(require_tool("sipp"), tmp_path, ports)
    try:
        yield helper
    finally:
        helper.close()


# ---------------------------------------------------------------------------------------------
# tshark
# ---------------------------------------------------------------------------------------------

# Wireshark's expert severities (epan/proto.h PI_*), as tshark prints _ws.expert.severity.
SEVERITIES = {0x100000: "comment", 0x200000: "chat", 0x400000: "note", 0x600000: "warning", 0x800000: "error"}
WARNING = 0x600000

FIELDS = (
    "frame.number",
    "frame.time_relative",
    "udp.srcport",
    "udp.dstport",
    "sip.Request-Line",
    "sip.Status-Line",
    "sip.Method",
    "sip.Status-Code",
    "sip.CSeq.method",
    "sip.Call-ID",
    "sip.Via.branch",
    "_ws.malformed",
    "_ws.expert.severity",
    "_ws.expert.message",
)


@dataclass(frozen=True)
class Expert:
    severity: int
    message: str

    @property
    def level(self) -> str:
        return SEVERITIES.get(self.severity, hex(self.severity))

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


@dataclass(frozen=True)
class SipPacket:
    """One captured UDP datagram on a SIP port of the test, as tshark decoded it."""

    frame: int
    time: float
    src_port: int
    dst_port: int
    first_line: str | None
    method: str | None
    status: int | None
    cseq_method: str | None
    call_id: str | None
    malformed: bool
    experts: tuple[Expert, ...] = ()
    via_branches: tuple[str, ...] = ()  # one per Via entry, top first

    @property
    def is_sip(self) -> bool:
        return self.first_line is not None

    @property
    def label(self) -> str:
        """``INVITE`` for a request, ``180 INVITE`` for a response, ``?`` if not SIP."""
        if self.method and self.status is None:
            return self.method
        if self.status is not None:
            return f"{self.status} {self.cseq_method or '?'}"
        return "?"

    @property
    def problems(self) -> list[str]:
        found = ["malformed"] if self.malformed else []
        return found + [str(e) for e in self.experts if e.severity >= WARNING]

    def __str__(self) -> str:
        extra = f" PROBLEMS: {'; '.join(self.problems)}" if self.problems else ""
        return (
            f"#{self.frame} {self.src_port}->{self.dst_port} {self.first_line or '(not SIP)'}"
            f" call-id={self.call_id}{extra}"
        )


@dataclass
class Decoded:
    """tshark's view of a capture: the datagrams on the test's SIP ports."""

    packets: list[SipPacket]
    pcap: Path
    tshark: str
    decode_as: list[str] = field(default_factory=list)
    # port -> (least, most) datagrams the node on that port sent while the capture ran
    sent_bounds: dict[int, tuple[int, int]] = field(default_factory=dict)

    def sent_by(self, *ports: int) -> list[SipPacket]:
        return [p for p in self.packets if p.src_port in ports]

    def sip(self, *ports: int) -> list[SipPacket]:
        """The SIP messages tshark decoded (sent by ``ports`` if given)."""
        return [p for p in (self.sent_by(*ports) if ports else self.packets) if p.is_sip]

    def problems(self, *ports: int) -> list[SipPacket]:
        """Malformed packets and packets with expert infos of severity warning or error."""
        return [p for p in (self.sent_by(*ports) if ports else self.packets) if p.problems]

    def labels(self, *ports: int) -> Counter[str]:
        return Counter(p.label for p in self.sip(*ports))

    def by_call(self, *ports: int) -> dict[str, list[str]]:
        """Call-ID -> the labels of its messages in capture order."""
        calls: dict[str, list[str]] = {}
        for packet in self.sip(*ports):
            calls.setdefault(packet.call_id or "?", []).append(packet.label)
        return calls

    def details(self, packets: Iterable[SipPacket], limit: int = 3) -> str:
        """tshark's full dissection (``-V``) of a few packets, for a failure report."""
        chosen = list(packets)[:limit]
        if not chosen:
            return ""
        frames = " or ".join(f"frame.number=={p.frame}" for p in chosen)
        out = subprocess.run(
            [self.tshark, "-r", str(self.pcap), *self.decode_as, "-Y", frames, "-V", "-x"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return out.stdout

    def expert_summary(self) -> str:
        out = subprocess.run(
            [self.tshark, "-r", str(self.pcap), *self.decode_as, "-q", "-z", "expert,note"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return out.stdout

    def report(self, packets: Iterable[SipPacket]) -> str:
        chosen = list(packets)
        lines = [str(p) for p in chosen[:20]]
        if len(chosen) > 20:
            lines.append(f"... {len(chosen) - 20} more")
        return "\n".join(lines) + "\n--- tshark -V of the first ---\n" + self.details(chosen)


class Capture:
    """``tshark -i lo`` on the test's port block, writing ``capture.pcapng`` in ``workdir``."""

    def __init__(self, binary: str, workdir: Path, ports: PortBlock) -> None:
        self.binary = binary
        self.ports = ports
        self.pcap = workdir / "capture.pcapng"
        self._stderr_path = workdir / "tshark.stderr"
        self.process: subprocess.Popen[bytes] | None = None
        self.complete: bool | None = None  # did the sentinel reach the file before we stopped?

    def start(self, timeout: float = 20.0) -> None:
        # -B: a 16 MiB kernel ring; the default 2 MiB can overflow (silently) under the storm's bursts
        command = [self.binary, "-i", "lo", "-B", "16", "-f", self.ports.capture_filter, "-w", str(self.pcap)]
        self._stderr = self._stderr_path.open("wb")
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr)
        deadline = time.monotonic() + timeout
        while "Capturing on" not in _read(self._stderr_path):
            if self.process.poll() is not None:
                self._stderr.close()
                pytest.fail(
                    f"tshark could not capture on lo (exit {self.process.returncode}; capturing needs root "
                    f"or CAP_NET_RAW/CAP_NET_ADMIN on dumpcap):\n{_read(self._stderr_path)}\n"
                    f"command: {' '.join(command)}",
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                self._terminate()
                pytest.fail(f"tshark did not report 'Capturing on' within {timeout} s:\n{_read(self._stderr_path)}")
            time.sleep(0.02)
        if not self._await_in_file(max(1.0, deadline - time.monotonic())):
            self._terminate()
            pytest.fail(f"tshark's capture file never showed a test datagram:\n{_read(self._stderr_path)}")

    def _await_in_file(self, timeout: float) -> bool:
        """Send a unique datagram to the sentinel port until it shows up in the file.

        dumpcap writes its file about every 0.5 s, and "Capturing on" comes before the
        first packets are really captured, so the file is the only proof that everything sent
        before this call has been captured.
        """
        token = f"vims-capture-sentinel-{uuid.uuid4().hex}".encode()
        deadline = time.monotonic() + timeout
        offset = 0  # the file only grows: read what is new, with an overlap for a split token
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            next_send = 0.0
            while time.monotonic() < deadline:
                if time.monotonic() >= next_send:  # resent in case the first was not yet captured
                    sock.sendto(token, (HOST, self.ports.sentinel))
                    next_send = time.monotonic() + 0.25
                if self.pcap.exists():
                    with self.pcap.open("rb") as pcap:
                        pcap.seek(offset)
                        chunk = pcap.read()
                    if token in chunk:
                        return True
                    offset = max(0, offset + len(chunk) - len(token))
                time.sleep(0.01)
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """Flush (a sentinel datagram must show up in the file), then SIGINT and wait."""
        if self.process is None or self.process.poll() is not None:
            return
        self.complete = self._await_in_file(timeout)
        self._terminate()

    def _terminate(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._stderr.close()

    def decode(self, nodes: Iterable[Node] = ()) -> Decoded:
        """Stop the capture and decode it, every SIP port of the block as SIP.

        ``nodes``: actors whose endpoint counters are read just before and just after the
        capture stops, so :func:`assert_sent_cleanly` can compare what they sent with what was
        captured although they keep sending (retransmissions) while the capture stops.
        """
        nodes = list(nodes)
        before = {node.port: node.stats() for node in nodes}
        self.stop()
        after = {node.port: node.stats() for node in nodes}
        assert self.complete, f"the capture sentinel never reached {self.pcap}: the capture may be incomplete"
        decode_as: list[str] = []
        for port in sorted(set(self.ports.sip_ports)):
            decode_as += ["-d", f"udp.port=={port},sip"]
        command = [self.binary, "-r", str(self.pcap), *decode_as, "-T", "json"]
        for name in FIELDS:
            command += ["-e", name]
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise AssertionError(f"tshark -r failed ({out.returncode}): {out.stderr}")
        sip_ports = set(self.ports.sip_ports)
        packets = []
        for entry in json.loads(out.stdout or "[]"):
            packet = _packet(entry["_source"]["layers"])
            if packet is not None and (packet.src_port in sip_ports or packet.dst_port in sip_ports):
                packets.append(packet)
        decoded = Decoded(packets, self.pcap, self.binary, decode_as)
        for port, stats in after.items():
            low = before[port].get("udp_datagrams_out", 0) - stats.get("udp_send_errors", 0)
            decoded.sent_bounds[port] = (low, stats.get("udp_datagrams_out", 0))
        return decoded


def _packet(layers: dict[str, list[str]]) -> SipPacket | None:
    def first(name: str) -> str | None:
        values = layers.get(name)
        return values[0] if values else None

    if first("udp.srcport") is None:
        return None
    status = first("sip.Status-Code")
    severities = layers.get("_ws.expert.severity", [])
    messages = layers.get("_ws.expert.message", [])
    experts = tuple(
        Expert(int(sev), messages[i] if i < len(messages) else "") for i, sev in enumerate(severities) if sev.isdigit()
    )
    return SipPacket(
        frame=int(first("frame.number") or 0),
        time=float(first("frame.time_relative") or 0.0),
        src_port=int(first("udp.srcport") or 0),
        dst_port=int(first("udp.dstport") or 0),
        first_line=first("sip.Request-Line") or first("sip.Status-Line"),
        method=first("sip.Method"),
        status=int(status) if status and status.isdigit() else None,
        cseq_method=first("sip.CSeq.method"),
        call_id=first("sip.Call-ID"),
        malformed="_ws.malformed" in layers,
        experts=experts,
        via_branches=tuple(layers.get("sip.Via.branch", [])),
    )


@pytest.fixture
def tshark_capture(tmp_path: Path, ports: PortBlock) -> Iterator[Capture]:
    capture = Capture(require_tool("tshark"), tmp_path, ports)
    capture.start()
    try:
        yield capture
    finally:
        capture.stop(timeout=2.0)


# ---------------------------------------------------------------------------------------------
# Actors
# ---------------------------------------------------------------------------------------------


@dataclass
class Node:
    """An actor under test, seen from the test's thread."""

    name: str
    ref: Any  # pykka ActorRef
    proxy: Any  # pykka ActorProxy
    address: tuple[str, int]

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def alive(self) -> bool:
        return bool(self.ref.is_alive())

    def stats(self, timeout: float = 10.0) -> dict[str, int]:
        return dict(self.proxy.get_stats().get(timeout=timeout))


def start_node(runtime: Runtime, cls: type, name: str, *args: Any, **kwargs: Any) -> Node:
    """Start ``cls(name, *args, **kwargs)`` on ``runtime``'s loop and wait for its address."""

    async def start() -> Node:
        ref = cls.start(name, *args, **kwargs)
        proxy = ref.proxy()
        return Node(name, ref, proxy, tuple(await proxy.get_address()))

    return runtime.run(start(), timeout=10)


def start_chain(
    runtime: Runtime, ports: PortBlock, target: tuple[str, int], hops: int = 2, **kwargs: Any
) -> list[Node]:
    """``hops`` ChainProxy actors in a row in front of ``target``; the first one is the entry."""
    from experiments.sip_demo import ChainProxy

    nodes: list[Node] = []
    downstream = target
    for i in reversed(range(hops)):
        node = start_node(runtime, ChainProxy, f"proxy{i + 1}", downstream, bind=ports.address(), **kwargs)
        downstream = node.address
        nodes.insert(0, node)
    return nodes


def assert_sent_cleanly(
    decoded: Decoded, nodes: Iterable[Node], where: Callable[[SipPacket], bool] | None = None
) -> None:
    """Every datagram each node sent was captured, decoded as SIP, not malformed, without expert warnings.

    The count of decoded messages from a node's port must equal its endpoint's ``datagrams_out``
    (within ``decoded.sent_bounds``: the node's count just before the capture stopped, less any
    ``send_errors`` (uvloop reports a refused send after counting it out), up to its count just
    after; pass the nodes to ``Capture.decode`` for these bounds). ``where`` limits the malformed/expert check to the packets it accepts (e.g. leave out what
    the nodes relayed verbatim from a deliberately bad peer).
    """
    nodes = list(nodes)
    node_ports = [n.port for n in nodes]
    problems = [p for p in decoded.problems(*node_ports) if where is None or where(p)]
    assert not problems, "tshark complains about messages we sent:\n" + decoded.report(problems)
    for node in nodes:
        sent = decoded.sent_by(node.port)
        not_sip = [p for p in sent if not p.is_sip]
        assert not not_sip, f"{node.name} sent datagrams tshark does not decode as SIP:\n" + decoded.report(not_sip)
        low, high = decoded.sent_bounds.get(node.port) or _sent_now(node)
        assert low <= len(sent) <= high, (
            f"{node.name} ({node.port}) sent {low}..{high} datagrams while the capture ran, the "
            f"capture decoded {len(sent)}: {decoded.labels(node.port)}"
        )


def _sent_now(node: Node) -> tuple[int, int]:
    stats = node.stats()
    out = stats.get("udp_datagrams_out", 0)
    return out - stats.get("udp_send_errors", 0), out


def assert_every_call_has(decoded: Decoded, port: int, calls: int, labels: Iterable[str]) -> None:
    """Exactly ``calls`` Call-IDs were sent from ``port``, each with at least ``labels``."""
    wanted = set(labels)
    by_call = decoded.by_call(port)
    assert len(by_call) == calls, f"{len(by_call)} calls seen from port {port}, expected {calls}: {list(by_call)[:5]}"
    missing = {call_id: sorted(wanted - set(seen)) for call_id, seen in by_call.items() if not wanted <= set(seen)}
    assert not missing, f"calls from port {port} lacking messages: {dict(list(missing.items())[:5])}"


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    """An owned runtime (loop on its own thread) for the actors a sync test starts."""
    rt = Runtime(name="interop")
    try:
        yield rt
    finally:
        rt.shutdown()


# ---------------------------------------------------------------------------------------------
# The emulated IMS (every module of topologies/default.toml) on ports of the test's block
# ---------------------------------------------------------------------------------------------

DEFAULT_TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "default.toml"
CONTROL_KINDS = frozenset({"hss", "mrfp"})  # they speak the JSON control protocol, not SIP


@dataclass
class ImsUnderTest:
    """A deployed IMS seen from the test's thread.

    ``nodes``: every SIP module (P-CSCF, S-CSCF and AS modules, MRFC, UE pool) as a :class:`Node`,
    by instance name; ``deployment.refs``: every module's actor ref (HSS and MRFP too);
    ``registrations``: the UE pool's ``register_all`` summary; ``rtp_ports``: the MRFP's RTP
    range (from the block). Queries (``ask``, ``stats``, ``bindings``...) block the test's thread.
    """

    runtime: Runtime
    deployment: Any  # nf_modules.deployment.ImsDeployment
    nodes: dict[str, Node]
    registrations: dict[str, Any]
    rtp_ports: tuple[int, int]

    @property
    def pcscf(self) -> Node:
        return self.nodes["pcscf"]

    @property
    def pool(self) -> Any:
        """The UE pool's actor proxy."""
        return self.nodes["ue_pool"].proxy

    @property
    def sip_nodes(self) -> list[Node]:
        return list(self.nodes.values())

    def address(self, name: str) -> tuple[str, int]:
        return tuple(self.deployment.addresses[name])  # type: ignore[return-value]

    def dead(self) -> list[str]:
        """The modules whose actor is no longer alive (an actor must never die of input)."""
        return [name for name, ref in self.deployment.refs.items() if not ref.is_alive()]

    def ask(self, name: str, method: str, *args: Any, timeout: float = 10.0, **kwargs: Any) -> Any:
        """``getattr(module proxy, method)(*args, **kwargs)``, waited for on the test's thread."""
        return getattr(self.deployment.refs[name].proxy(), method)(*args, **kwargs).get(timeout=timeout)

    def stats(self, name: str) -> dict[str, Any]:
        return dict(self.ask(name, "get_stats"))

    def bindings(self, user: str) -> list[dict[str, Any]]:
        """The HSS's live bindings of ``user``, oldest registration first."""
        return list(self.ask("hss", "handle_lookup", user)["bindings"])

    def pcscf_dialogs(self) -> dict[str, int]:
        return dict(self.ask("pcscf", "get_dialog_states"))

    def mrf_dialogs(self) -> dict[str, int]:
        return dict(self.ask("mrfc", "get_dialog_states"))

    def wait_for(self, what: str, probe: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Poll ``probe()`` (every 20 ms) until it returns something truthy; fail after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.02)


def start_ims(
    runtime: Runtime,
    ports: PortBlock,
    *,
    users: int = 50,
    rtp_ports: int = 60,
    seams: Callable[[str], Any] | None = None,
    register: bool = True,
) -> ImsUnderTest:
    """Deploy every module of the default topology on ``runtime``, each on a port of the block.

    The UE pool serves ``ue0001 .. ue{users}`` (the HSS keeps its 1000 subscribers), and the MRFP
    reserves its RTP ports from ``rtp_ports`` ports of the block, so nothing this IMS binds or
    sends leaves the block. ``seams(name)``, when given, is each SIP module's transport seam.
    With ``register``, the pool registers every user (digest, through the P-CSCF) before this
    returns. The caller stops it with :func:`stop_ims`.
    """
    from actors import load_topology
    from nf_modules.deployment import deploy

    topology = load_topology(DEFAULT_TOPOLOGY)
    addresses = {nf.name: (HOST, ports.take(sip=nf.kind not in CONTROL_KINDS)) for nf in topology}
    topology = topology.with_addresses(addresses)
    first_rtp = ports.take(rtp_ports, sip=False)
    rtp_range = (first_rtp, first_rtp + rtp_ports - 1)
    overrides: dict[str, dict[str, Any]] = {"mrfp": {"port_range": rtp_range}}
    for nf in topology.by_kind("ue_pool"):
        overrides[nf.name] = {"users": users}
    if seams is not None:
        for nf in topology:
            if nf.kind not in CONTROL_KINDS:
                overrides.setdefault(nf.name, {})["seam"] = seams(nf.name)

    async def start() -> tuple[Any, dict[str, Node], dict[str, Any]]:
        deployment = await deploy(topology, overrides=overrides)
        nodes = {}
        for nf in topology:
            if nf.kind not in CONTROL_KINDS:
                ref = deployment.refs[nf.name]
                nodes[nf.name] = Node(nf.name, ref, ref.proxy(), tuple(deployment.addresses[nf.name]))
        registrations = {}
        if register:
            for nf in topology.by_kind("ue_pool"):
                registrations[nf.name] = await deployment.proxy(nf.name).register_all()
        return deployment, nodes, registrations

    deployment, nodes, registrations = runtime.run(start(), timeout=60)
    ims = ImsUnderTest(runtime, deployment, nodes, registrations, rtp_range)
    for pool, summary in registrations.items():
        assert summary["failed"] == 0, f"{pool} could not register every user: {summary}"
    return ims


def stop_ims(ims: ImsUnderTest) -> None:
    ims.runtime.run(ims.deployment.stop(), timeout=30)


@pytest.fixture
def ims_factory(runtime: Runtime, ports: PortBlock) -> Iterator[Callable[..., ImsUnderTest]]:
    """``ims_factory(**kwargs)``: :func:`start_ims` on the test's runtime and block, stopped after
    the test. Request ``tshark_capture`` before calling it when the capture must see the modules'
    first datagrams (``assert_sent_cleanly`` compares counts since each module started)."""
    started: list[ImsUnderTest] = []

    def factory(**kwargs: Any) -> ImsUnderTest:
        ims = start_ims(runtime, ports, **kwargs)
        started.append(ims)
        return ims

    yield factory
    for ims in started:
        stop_ims(ims)

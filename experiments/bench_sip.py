"""``python run.py bench sip``: SIPp call load against the IMS, stepped rates, side by side with Kamailio.

For each target, started fresh and stopped after:

- ``one_process``: ``run.py serve --topology topologies/default.toml`` (every module of the call
  path, emulated UEs registered and answering: ring 50 ms, answer, hang up when the caller does);
- ``two_process``: the same with ``topologies/two_process.toml`` (the control plane over two
  processes);
- ``kamailio``: Kamailio as one transaction-stateful proxy (``benchmarks/kamailio/kamailio.cfg``,
  ``t_relay`` of every request) in front of the same emulated UEs (a ``UePool`` in its own process,
  ``python -m experiments.bench_sip uas``, no registration needed);

SIPp's stock ``uac`` scenario (``sipp -sd uac``, only its callee ``[service]`` replaced by
``[field0]`` of an injection file, so calls rotate over every emulated UE) places calls at stepped
rates, ``-r RATE -m RATE*STEP_SECONDS -d HOLD_MS``, one SIPp run per step. Its ``-trace_rtt``
gives every call's setup time (the scenario's ``rtd`` on the 200: INVITE sent -> 200 received,
millisecond resolution), from which each step's p50 / p99 are taken; ``-trace_stat`` gives the
attempted / successful / failed counts. A step passes with every planned call attempted, zero
failed calls and p99 setup under 250 ms; ``max_cps`` of a target is its highest passing rate.
By default the rates step up from 50 calls/s and a target stops at its first failing step.

Everything binds 127.0.0.1 (except SIPp's control socket, which SIPp binds on every address); the
topologies' ports are moved into a free block (``base_port``) so the bench does not collide with
another ``serve``. Every step is bounded (``-m``, ``-recv_timeout``, ``-timeout``, then a kill),
every target by its share of ``max_seconds``, and the whole run by ``max_seconds``.

All of it runs on the caller's thread: subprocesses waited on with timeouts, files polled with
deadlines. ``python -m experiments.bench_sip uas`` is the Kamailio target's UAS process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.kamailio import KamailioError, KamailioProxy, find_kamailio

__all__ = [
    "DEFAULT_RATES",
    "PASS_P99_MS",
    "TARGETS",
    "BenchConfig",
    "format_table",
    "max_cps",
    "percentile",
    "relocate_topology",
    "run_bench",
    "step_passed",
]

ROOT = Path(__file__).resolve().parent.parent
RUN_PY = ROOT / "run.py"
TOPOLOGIES = {
    "one_process": ROOT / "topologies" / "default.toml",
    "two_process": ROOT / "topologies" / "two_process.toml",
}
TARGETS = ("one_process", "two_process", "kamailio")
DEFAULT_RATES = (50, 100, 150, 200, 250, 300, 400, 500, 600, 800, 1000)
PASS_P99_MS = 250.0
HOST = "127.0.0.1"
READY_LINE = "READY"

# Port block layout, relative to base_port: the topology's ports keep their offsets from its
# lowest port (up to TOPOLOGY_SPAN of them), then Kamailio, its UAS, and SIPp's sockets.
TOPOLOGY_SPAN = 20
KAMAILIO_OFFSET = 20
UAS_OFFSET = 21
SIPP_OFFSET = 22  # SIP port; media +1..+4, control +5
BLOCK_SIZE = 28
START_TIMEOUT = 120.0  # s for a target to say READY (the UE pool registers every user first)
SETTLE_SECONDS = 2.0  # between steps: the last BYEs' transactions wind down


def log(message: str) -> None:
    """Progress goes to stderr: stdout carries the table or, last, the JSON line."""
    print(f"[bench sip {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ============================================================================ configuration


@dataclass
class BenchConfig:
    """What ``run_bench`` does. ``rates`` None: ``DEFAULT_RATES``, stopping at the first failing step."""

    rates: tuple[float, ...] | None = None
    step_seconds: float = 60.0
    hold_ms: int = 5000
    targets: tuple[str, ...] = TARGETS
    max_seconds: float = 3600.0
    stop_on_failure: bool = True
    base_port: int | None = None  # None: a free block in 10000..19999
    workdir: Path | None = None  # None: a new temporary directory (kept: logs, SIPp traces)
    callees: int | None = None  # rotate over the first N emulated UEs (None: all of them)
    recv_timeout_s: float = 10.0  # SIPp gives up on a call that waits this long for a message
    kamailio_children: int = 2
    settle_seconds: float = SETTLE_SECONDS
    topologies: dict[str, Path] = field(default_factory=lambda: dict(TOPOLOGIES))

    def __post_init__(self) -> None:
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise ValueError(f"targets must be among {', '.join(TARGETS)}, got {', '.join(self.targets) or 'none'}")
        if self.rates is not None and (not self.rates or any(not (r > 0 and math.isfinite(r)) for r in self.rates)):
            raise ValueError(f"rates must be positive numbers, got {self.rates}")
        if not self.step_seconds > 0 or not self.max_seconds > 0 or self.hold_ms < 0:
            raise ValueError("step_seconds and max_seconds must be > 0 and hold_ms >= 0")
        if self.callees is not None and self.callees < 1:
            raise ValueError(f"callees must be >= 1, got {self.callees}")

    @property
    def step_rates(self) -> tuple[float, ...]:
        return self.rates if self.rates is not None else DEFAULT_RATES

    def step_bound(self) -> float:
        """Seconds one step can take at most: sending, the last calls' hold and timeouts, SIPp's exit."""
        return self.step_seconds + self.hold_ms / 1000 + self.recv_timeout_s + 10.0

    def sipp_timeout(self) -> int:
        """SIPp's own ``-timeout`` (it exits by itself; we kill it 10 s later)."""
        return int(math.ceil(self.step_bound()))


# ============================================================================ pure helpers


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def step_passed(step: dict[str, Any]) -> bool:
    """Every planned call attempted, none failed, p99 setup under ``PASS_P99_MS``."""
    p99 = step.get("p99_ms")
    return (
        step.get("attempted", 0) >= step.get("planned", 1) > 0
        and step.get("failed", 1) == 0
        and p99 is not None
        and p99 < PASS_P99_MS
    )


def max_cps(steps: Iterable[dict[str, Any]]) -> float:
    """The highest offered rate among passing steps (0 if none passed)."""
    return max((step["cps"] for step in steps if step_passed(step)), default=0)


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


# ---------------------------------------------------------------------------- ports


def ports_free(first: int, count: int) -> bool:
    """Bind every port of the range on 0.0.0.0 (which collides with any bound address), then let go."""
    sockets: list[socket.socket] = []
    try:
        for port in range(first, first + count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sockets.append(sock)
            sock.bind(("0.0.0.0", port))
        return True
    except OSError:
        return False
    finally:
        for sock in sockets:
            sock.close()


def free_port_block(size: int = BLOCK_SIZE, low: int = 10000, high: int = 19999, seed: int | None = None) -> int:
    """The first port of ``size`` consecutive UDP ports in ``low..high`` that are all free now.

    Below the kernel's ephemeral range and the topologies' RTP ranges (20000 and up)."""
    import random

    rng = random.Random(seed)
    for _ in range(200):
        first = rng.randrange(low, high - size)
        if ports_free(first, size):
            return first
    raise RuntimeError(f"no {size} consecutive free UDP ports in {low}..{high}")


_PORT_LINE = re.compile(r"^(\s*port\s*=\s*)(\d+)", re.MULTILINE)


def relocate_topology(source: Path, base_port: int, destination: Path) -> tuple[Path, dict[str, int]]:
    """Write ``source`` with every instance's port moved to ``base_port + (port - lowest port)``.

    Returns the new file and its ports by instance name (checked by loading it back)."""
    from actors.topology import load_topology

    original = load_topology(source)
    ports = [nf.port for nf in original]
    if any(p == 0 for p in ports):
        raise ValueError(f"{source}: relocation needs fixed ports (an instance has port 0)")
    lowest = min(ports)
    if max(ports) - lowest >= TOPOLOGY_SPAN:
        raise ValueError(f"{source}: its ports span more than {TOPOLOGY_SPAN}")
    text = _PORT_LINE.sub(lambda m: f"{m.group(1)}{base_port + int(m.group(2)) - lowest}", Path(source).read_text())
    destination.write_text(text)
    moved = load_topology(destination)
    expected = {nf.name: base_port + nf.port - lowest for nf in original}
    got = {nf.name: nf.port for nf in moved}
    if got != expected:  # pragma: no cover - a `port =` line outside an [nf.*] table
        raise ValueError(f"{source}: relocating ports gave {got}, expected {expected}")
    return destination, got


def callee_names(topology_path: Path, limit: int | None = None) -> list[str]:
    """The emulated UEs of the topology's first UE pool (its ``users``/``user_format``/``first``)."""
    from actors.topology import load_topology
    from nf_modules.ue_pool import expand_users

    topology = load_topology(topology_path)
    pools = topology.by_kind("ue_pool")
    if not pools:
        raise ValueError(f"{topology_path}: no ue_pool instance to call")
    options = dict(pools[0].options)
    names = expand_users(options.get("users", 1000), options.get("user_format", "ue{:04d}"), options.get("first", 1))
    return names[:limit] if limit else names


# ---------------------------------------------------------------------------- processes


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and its live descendants (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(cpu.get(pid, 0.0) for pid in tree)


def host_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine, all cores (from /proc/stat's ``cpu`` line)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):  # pragma: no cover - not Linux
        return 0.0
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _stop_process(process: subprocess.Popen[Any], timeout: float = 60.0) -> int | None:
    """SIGINT (as Ctrl-C), wait; then SIGKILL its whole session (it was started in its own)."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return process.wait(10)


def _wait_for_line(path: Path, process: subprocess.Popen[Any], wanted: str, timeout: float) -> str:
    """Poll ``path`` (the process's output) until a line equals ``wanted``; the text so far."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        if any(line.strip() == wanted for line in text.splitlines()):
            return text
        if process.poll() is not None:
            raise RuntimeError(f"exited with status {process.returncode} before {wanted!r}:\n{text[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {wanted!r} within {timeout:.0f} s:\n{text[-3000:]}")
        time.sleep(0.1)


class Target:
    """A system under test: ``start()``, ``entry`` (where SIPp sends), ``cpu_seconds()``, ``stop()``."""

    name = ""
    entry: tuple[str, int] = (HOST, 0)
    info: dict[str, Any]

    def start(self, timeout: float) -> None:
        raise NotImplementedError

    def cpu_seconds(self) -> float:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError


class ServeTarget(Target):
    """``python run.py serve --topology T --duration D --json`` in its own session, output to a file."""

    def __init__(self, name: str, topology: Path, workdir: Path, duration: float) -> None:
        self.name = name
        self.topology = topology
        self.workdir = workdir
        self.log_path = workdir / "serve.log"
        self.command = [
            sys.executable, str(RUN_PY), "serve", "--topology", str(topology),
            "--duration", f"{duration:.0f}", "--json",
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self.info = {"command": " ".join(self.command)}

    def start(self, timeout: float) -> None:
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
            )  # fmt: skip
        text = _wait_for_line(self.log_path, self.process, READY_LINE, timeout)
        match = re.search(r"P-CSCF at ([\d.]+):(\d+)", text)
        if match is None:
            raise RuntimeError(f"serve did not say where the P-CSCF is:\n{text[-2000:]}")
        self.entry = (match.group(1), int(match.group(2)))
        registration = re.search(r"ue_pool: (\{.*\})", text)
        if registration:
            self.info["registration"] = registration.group(1)
        log(f"{self.name}: serve pid {self.process.pid}")

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process.pid) if self.process is not None else 0.0

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        status = _stop_process(self.process)
        self.info["exit_status"] = status
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        if lines and lines[-1].startswith("{"):
            (self.workdir / "serve-stats.json").write_text(lines[-1] + "\n")


class KamailioTarget(Target):
    """Kamailio (``benchmarks/kamailio/kamailio.cfg``) relaying to a ``UePool`` in its own process."""

    name = "kamailio"

    def __init__(
        self, binary: str, listen: tuple[str, int], uas: tuple[str, int], users: Sequence[str], workdir: Path,
        duration: float, children: int = 2,
    ) -> None:  # fmt: skip
        self.workdir = workdir
        self.uas_address = uas
        users_file = workdir / "uas-users.txt"
        users_file.write_text("\n".join(users) + "\n")
        self.uas_log = workdir / "uas.log"
        self.uas_command = [
            sys.executable, "-m", "experiments.bench_sip", "uas", "--listen", f"{uas[0]}:{uas[1]}",
            "--users-file", str(users_file), "--duration", f"{duration:.0f}",
        ]  # fmt: skip
        self.uas: subprocess.Popen[bytes] | None = None
        self.proxy = KamailioProxy(binary, listen, uas, workdir / "kamailio", children=children)
        self.entry = listen
        self.info = {"uas_command": " ".join(self.uas_command), "kamailio_command": " ".join(self.proxy.command)}

    def start(self, timeout: float) -> None:
        with self.uas_log.open("wb") as out:
            self.uas = subprocess.Popen(
                self.uas_command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
            )  # fmt: skip
        _wait_for_line(self.uas_log, self.uas, READY_LINE, timeout)
        self.proxy.start(timeout=min(timeout, 20.0))
        log(f"kamailio: kamailio pid {self.proxy.process.pid if self.proxy.process else None}, UAS pid {self.uas.pid}")

    def cpu_seconds(self) -> float:
        total = 0.0
        if self.proxy.process is not None:
            total += tree_cpu_seconds(self.proxy.process.pid)
        if self.uas is not None:
            total += tree_cpu_seconds(self.uas.pid)
        return total

    def alive(self) -> bool:
        proxy_up = self.proxy.process is not None and self.proxy.process.poll() is None
        return proxy_up and self.uas is not None and self.uas.poll() is None

    def stop(self) -> None:
        self.proxy.stop()
        if self.uas is not None:
            self.info["uas_exit_status"] = _stop_process(self.uas, timeout=30)


# ============================================================================ SIPp


@dataclass
class Sipp:
    """SIPp with the benchmark's scenario and callee list, on fixed ports of the bench's block."""

    binary: str
    scenario: Path
    callees: Path
    port: int  # SIP; media port+1..port+4, control port+5

    @classmethod
    def prepare(cls, binary: str, workdir: Path, callees: Sequence[str], port: int) -> Sipp:
        """Dump SIPp's stock ``uac`` and point its callee at the injection file's first field."""
        stock = subprocess.run([binary, "-sd", "uac"], capture_output=True, text=True, timeout=30)
        if "<scenario" not in stock.stdout or "[service]" not in stock.stdout:  # it exits 99 after -sd
            raise RuntimeError(f"`{binary} -sd uac` did not print the stock uac scenario: {stock.stderr[-500:]}")
        scenario = workdir / "uac_rotating.xml"
        scenario.write_text(stock.stdout.replace("[service]", "[field0]"))
        inject = workdir / "callees.csv"
        inject.write_text("SEQUENTIAL\n" + "".join(f"{name};\n" for name in callees))
        return cls(binary, scenario, inject, port)

    def command(self, remote: tuple[str, int], rate: float, calls: int, config: BenchConfig, stat: Path) -> list[str]:
        return [
            self.binary, "-sf", str(self.scenario), "-inf", str(self.callees), f"{remote[0]}:{remote[1]}",
            "-i", HOST, "-p", str(self.port), "-mi", HOST, "-mp", str(self.port + 1), "-cp", str(self.port + 5),
            "-r", f"{_number(rate)}", "-m", str(calls), "-d", str(config.hold_ms),
            "-recv_timeout", str(int(config.recv_timeout_s * 1000)),
            "-timeout", f"{config.sipp_timeout()}s", "-timeout_error", "-nostdin",
            "-trace_stat", "-stf", str(stat), "-fd", "5",
            "-trace_rtt", "-rtt_freq", "1",
            "-trace_err", "-error_file", str(stat.parent / "errors.log"),
            "-trace_screen", "-screen_file", str(stat.parent / "screen.log"),
        ]  # fmt: skip


def parse_stat_csv(text: str) -> dict[str, str]:
    """The last row of a ``-trace_stat`` CSV as ``{column: value}``."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    return {name: value for name, value in zip(lines[0].split(";"), lines[-1].split(";")) if name}


def parse_rtt_csv(text: str, rtd: str = "1") -> list[float]:
    """The response times (ms) of ``-trace_rtt``'s ``Date_ms;response_time_ms;rtd_no`` rows for ``rtd``."""
    samples = []
    for line in text.splitlines()[1:]:
        cells = line.strip().split(";")
        if len(cells) >= 3 and cells[2] == rtd:
            try:
                samples.append(float(cells[1]))
            except ValueError:
                continue
    return samples


def _count(stats: dict[str, str], column: str) -> int:
    value = stats.get(column, "").strip()
    return int(value) if value.isdigit() else 0


def run_step(sipp: Sipp, target: Target, rate: float, config: BenchConfig, workdir: Path) -> dict[str, Any]:
    """One SIPp run at ``rate`` for ``config.step_seconds`` against ``target``; the step's record."""
    workdir.mkdir(parents=True, exist_ok=True)
    planned = max(1, round(rate * config.step_seconds))
    stat = workdir / "stat.csv"
    command = sipp.command(target.entry, rate, planned, config, stat)
    (workdir / "command.txt").write_text(" ".join(command) + "\n")
    cpu_before = target.cpu_seconds()
    host_before = host_cpu_seconds()
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    killed = False
    with (workdir / "sipp.out").open("wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
        try:
            process.wait(config.sipp_timeout() + 10)
        except subprocess.TimeoutExpired:
            killed = True
            process.kill()
            process.wait(10)
    elapsed = time.monotonic() - started
    usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    target_cpu = target.cpu_seconds() - cpu_before
    host_cpu = host_cpu_seconds() - host_before
    sipp_cpu = (usage_after.ru_utime + usage_after.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime)
    stats = parse_stat_csv(stat.read_text(errors="replace")) if stat.exists() else {}
    samples: list[float] = []
    for rtt in workdir.glob(f"{sipp.scenario.stem}_*_rtt.csv"):
        samples += parse_rtt_csv(rtt.read_text(errors="replace"))
    attempted = _count(stats, "OutgoingCall(C)")
    succeeded = _count(stats, "SuccessfulCall(C)")
    reasons = {
        column[len("Failed") : -len("(C)")]: _count(stats, column)
        for column in stats
        if column.startswith("Failed") and column.endswith("(C)") and column != "FailedCall(C)" and _count(stats, column)
    }
    step: dict[str, Any] = {
        "cps": _number(rate),
        "planned": planned,
        "attempted": attempted,
        "succeeded": succeeded,
        "failed": planned - succeeded,  # failed, unfinished, or never placed (SIPp cut off)
        "p50_ms": _round(percentile(samples, 50)),
        "p99_ms": _round(percentile(samples, 99)),
        "max_ms": _round(max(samples) if samples else None),
        "setup_samples": len(samples),
        "retransmissions": _count(stats, "Retransmissions(C)"),
        "failure_reasons": reasons,
        "elapsed_s": round(elapsed, 1),
        "target_cpu_pct": round(100 * target_cpu / elapsed, 1) if elapsed > 0 else None,
        "sipp_cpu_pct": round(100 * sipp_cpu / elapsed, 1) if elapsed > 0 else None,
        # every core of the machine (100 % = one core busy): the rest is other work on the host
        "host_cpu_pct": round(100 * host_cpu / elapsed, 1) if elapsed > 0 else None,
        "sipp_exit": process.returncode,
    }
    if killed:
        step["note"] = "SIPp did not stop within its bound and was killed"
    elif not stats:
        step["note"] = f"SIPp wrote no statistics (exit {process.returncode}); see {workdir / 'sipp.out'}"
    step["passed"] = step_passed(step)
    return step


# ============================================================================ the benchmark


def _skipped(reason: str) -> dict[str, Any]:
    return {"max_cps": None, "steps": [], "skipped": reason}


def run_bench(config: BenchConfig, *, sipp_binary: str | None = None, kamailio_binary: str | None = None) -> dict[str, Any]:
    """Run every target of ``config`` in turn; ``{target: {max_cps, steps, ...}}``.

    Each target gets an equal share of the time left when it starts; a step that cannot finish
    within its target's share is not started (the target is then marked ``truncated``)."""
    deadline = time.monotonic() + config.max_seconds
    workdir = Path(config.workdir) if config.workdir else Path(tempfile.mkdtemp(prefix="bench-sip-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"work directory {workdir}")
    sipp_binary = sipp_binary or _which("sipp")
    if sipp_binary is None:
        raise FileNotFoundError("sipp is not installed (apt-get install sip-tester)")
    base = config.base_port if config.base_port is not None else free_port_block()
    if config.base_port is not None and not ports_free(base, BLOCK_SIZE):
        raise RuntimeError(f"--base-port {base}: the ports {base}..{base + BLOCK_SIZE - 1} are not all free")
    log(f"ports {base}..{base + BLOCK_SIZE - 1}")
    callees = callee_names(config.topologies["one_process"], config.callees)
    sipp = Sipp.prepare(sipp_binary, workdir, callees, base + SIPP_OFFSET)
    results: dict[str, Any] = {}
    for index, name in enumerate(config.targets):
        share = (deadline - time.monotonic()) / (len(config.targets) - index)
        target_deadline = time.monotonic() + share
        target_dir = workdir / name
        target_dir.mkdir(exist_ok=True)
        if name == "kamailio":
            kamailio_binary = kamailio_binary or find_kamailio()
            if kamailio_binary is None:
                log("kamailio is not installed: target skipped")
                results[name] = _skipped("kamailio is not installed (apt-get install kamailio); target skipped")
                continue
            target: Target = KamailioTarget(
                kamailio_binary, (HOST, base + KAMAILIO_OFFSET), (HOST, base + UAS_OFFSET), callees, target_dir,
                duration=share + 60, children=config.kamailio_children,
            )  # fmt: skip
        else:
            topology, _ = relocate_topology(config.topologies[name], base, target_dir / f"{name}.toml")
            target = ServeTarget(name, topology, target_dir, duration=share + 60)
        results[name] = run_target(target, sipp, config, target_deadline, target_dir)
    return results


def run_target(target: Target, sipp: Sipp, config: BenchConfig, deadline: float, workdir: Path) -> dict[str, Any]:
    """Start ``target``, run the steps while time allows, stop it; the target's record."""
    name = target.name
    record: dict[str, Any] = {
        "max_cps": 0, "steps": [], "step_seconds": _number(config.step_seconds), "hold_ms": config.hold_ms,
    }  # fmt: skip
    if deadline - time.monotonic() < 10 + config.step_bound():
        record["truncated"] = True
        record["note"] = "not run: too little of --max-seconds left for one step"
        log(f"{name}: {record['note']}")
        return record
    log(f"{name}: starting")
    try:
        target.start(timeout=min(START_TIMEOUT, max(5.0, deadline - time.monotonic() - config.step_bound())))
    except (RuntimeError, KamailioError, OSError) as error:
        target.stop()
        record.update(max_cps=None, error=f"{name} did not start: {error}", **target.info)
        log(record["error"])
        return record
    log(f"{name}: ready, SIP entry {target.entry[0]}:{target.entry[1]}")
    try:
        for i, rate in enumerate(config.step_rates, 1):
            if time.monotonic() + config.step_bound() > deadline:
                record["truncated"] = True
                record["note"] = f"stopped before {_number(rate)} calls/s: its share of --max-seconds ran out"
                log(f"{name}: {record['note']}")
                break
            if not target.alive():
                record["error"] = f"{name} exited during the benchmark (see {workdir})"
                log(record["error"])
                break
            log(f"{name}: step {i}: {_number(rate)} calls/s for {config.step_seconds:g} s")
            step = run_step(sipp, target, rate, config, workdir / f"step{i:02d}-{_number(rate)}cps")
            record["steps"].append(step)
            log(
                f"{name}: {step['cps']} calls/s: {step['succeeded']}/{step['planned']} ok, {step['failed']} failed, "
                f"p50 {_ms(step['p50_ms'])} p99 {_ms(step['p99_ms'])} ms, target CPU {step['target_cpu_pct']}%, "
                f"SIPp CPU {step['sipp_cpu_pct']}%, host CPU {step['host_cpu_pct']}% of {os.cpu_count()} cores "
                f"-> {'pass' if step['passed'] else 'FAIL'}"
            )
            if not step["passed"] and config.stop_on_failure:
                break
            time.sleep(config.settle_seconds)
    finally:
        target.stop()
    record["max_cps"] = _number(max_cps(record["steps"]))
    record.update(target.info, workdir=str(workdir))
    return record


def _which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


def _round(value: float | None) -> float | None:
    """SIPp's times are milliseconds with a float's noise (256.001): keep 0.1 ms."""
    return None if value is None else round(value, 1)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


# ============================================================================ output


def format_table(results: dict[str, Any], config: BenchConfig | None = None) -> str:
    """Targets side by side, one row per offered rate: failed calls, p50 / p99 setup (ms)."""
    names = list(results)
    rates: list[float] = []
    for record in results.values():
        for step in record.get("steps", []):
            if step["cps"] not in rates:
                rates.append(step["cps"])
    rates.sort()
    width = 30
    lines = []
    if config is not None:
        lines.append(
            f"SIPp uac, {config.step_seconds:g} s per step, calls held {config.hold_ms} ms; a step passes with "
            f"0 failed calls and p99 setup (INVITE->200) < {PASS_P99_MS:g} ms"
        )
    lines.append(f"{'calls/s':>8} | " + " | ".join(f"{n:<{width}}" for n in names))
    lines.append(f"{'':>8} | " + " | ".join(f"{'failed  p50/p99 ms    CPU':<{width}}" for _ in names))
    lines.append("-" * (11 + (width + 3) * len(names)))
    for rate in rates:
        cells = []
        for name in names:
            step = next((s for s in results[name].get("steps", []) if s["cps"] == rate), None)
            if step is None:
                cells.append(f"{'':<{width}}")
                continue
            verdict = "ok" if step["passed"] else "FAIL"
            text = f"{step['failed']:>6}  {_ms(step['p50_ms']):>5}/{_ms(step['p99_ms']):<6} {_pct(step['target_cpu_pct'])} {verdict}"
            cells.append(f"{text:<{width}}")
        lines.append(f"{_number(rate):>8} | " + " | ".join(cells))
    lines.append("-" * (11 + (width + 3) * len(names)))
    cells = []
    for name in names:
        record = results[name]
        if record.get("skipped"):
            text = "skipped"
        elif record.get("error"):
            text = "error"
        else:
            text = f"{record['max_cps']}" + (" (truncated)" if record.get("truncated") else "")
        cells.append(f"{text:<{width}}")
    lines.append(f"{'max_cps':>8} | " + " | ".join(cells))
    lines.append("CPU: the target's processes (Kamailio: proxy + UAS), % of one core, during the step")
    for name in names:
        record = results[name]
        for key in ("skipped", "error", "note"):
            if record.get(key):
                lines.append(f"{name}: {record[key]}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "  -" if value is None else f"{value:>3.0f}%"


# ============================================================================ the Kamailio target's UAS


def serve_uas(listen: tuple[str, int], users: Sequence[str], duration: float, print_fn: Callable[..., Any] = print) -> int:
    """Run a ``UePool`` (auto-answer, ring 50 ms, no registration) on ``listen`` until SIGINT or ``duration``."""
    from actors import Runtime
    from nf_modules.ue_pool import UePool

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Runtime(name="bench-uas") as runtime:

        async def start() -> Any:
            ref = UePool.start("uas", listen, users=list(users))
            return ref, tuple(await ref.proxy().get_address())

        ref, address = runtime.run(start(), timeout=60)
        print_fn(f"UAS up: UePool of {len(users)} users at {address[0]}:{address[1]}")
        print_fn(READY_LINE, flush=True)
        stop.wait(duration)
        stats = ref.proxy().get_stats().get(timeout=30)
        print_fn(json.dumps(stats, sort_keys=True, default=str), flush=True)
    return 0


def _uas_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench_sip", description="the bench's UAS for Kamailio")
    sub = parser.add_subparsers(dest="command", required=True)
    uas = sub.add_parser("uas", help="a UePool answering calls on --listen")
    uas.add_argument("--listen", required=True, help="HOST:PORT")
    uas.add_argument("--users-file", type=Path, required=True, help="one user name a line")
    uas.add_argument("--duration", type=float, default=3600.0)
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    users = [line.strip() for line in args.users_file.read_text().splitlines() if line.strip()]
    return serve_uas((host, int(port)), users, args.duration)


if __name__ == "__main__":
    sys.exit(_uas_main())

"""The media benchmark's processes: building the C programs and talking to a running role.

Every process of the benchmark (``sender``, ``relay``, ``sink`` in C; the Python relays and the
MRFP role) prints one JSON object a line on stdout: a *ready* line once its sockets are bound
(``{"port": P}`` or ``{"ports": [...]}``) and a *result* line when it stops (at its
``--duration``, at SIGTERM, or when its work is done). ``Role`` starts one, waits for the ready
line and, at the end, for the result line, with timeouts; a reader thread per process collects
the lines so a full pipe never blocks the child.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["C_PROGRAMS", "SOURCE_DIR", "BenchProcessError", "Role", "build_programs", "python_role"]

SOURCE_DIR = Path(__file__).resolve().parent
C_PROGRAMS = ("sender", "relay", "sink")
ROOT = SOURCE_DIR.parent.parent


class BenchProcessError(RuntimeError):
    """A benchmark process failed to build, start, report ready, or report its result."""


def build_programs(build_dir: Path, cc: str = "gcc") -> dict[str, Path]:
    """Compile sender.c, relay.c and sink.c with ``cc -O2`` into ``build_dir``; name -> binary."""
    build_dir.mkdir(parents=True, exist_ok=True)
    built = {}
    for name in C_PROGRAMS:
        out = build_dir / name
        cmd = [cc, "-O2", "-Wall", "-Wextra", "-std=gnu11", "-o", str(out), str(SOURCE_DIR / f"{name}.c"), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise BenchProcessError(f"building {name}.c failed ({' '.join(cmd)}):\n{proc.stderr}")
        built[name] = out
    return built


def python_role(module: str) -> list[str]:
    """The command line start of a Python role module, run with this interpreter from the repo root."""
    return [sys.executable, "-m", module]


class Role:
    """One benchmark process: started, its ready line awaited, then stopped and its result read."""

    def __init__(self, name: str, argv: Sequence[str], *, ready: bool = True, ready_timeout: float = 30.0) -> None:
        self.name = name
        self.argv = list(argv)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
        )
        threading.Thread(target=self._pump_out, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()
        self.ready: dict[str, Any] = self._next_json(ready_timeout) if ready else {}

    def _pump_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def _next_json(self, timeout: float) -> dict[str, Any]:
        """The next stdout line that is a JSON object (other lines are skipped)."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                self.kill()
                raise BenchProcessError(f"{self.name}: no output within {timeout:.0f} s{self._err_tail()}") from None
            if line is None:
                self.proc.wait(timeout=5)
                raise BenchProcessError(
                    f"{self.name} exited (code {self.proc.returncode}) before reporting{self._err_tail()}"
                )
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue

    def _err_tail(self) -> str:
        tail = "".join(self._stderr[-20:]).strip()
        return f"; stderr:\n{tail}" if tail else ""

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait (up to ``timeout``) for the process to report its result line by itself."""
        out = self._next_json(timeout)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        return out

    def stop(self, timeout: float = 20.0) -> dict[str, Any]:
        """SIGTERM the process and read its result line."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.result(timeout)

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the process (all its threads) has used so far; None if gone."""
        try:
            with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def __enter__(self) -> Role:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

"""Kamailio as the benchmark's reference proxy: one transaction-stateful proxy relaying to one UAS.

``benchmarks/kamailio/kamailio.cfg`` is our own minimal configuration (listen on 127.0.0.1,
``record_route`` / ``loose_route``, ``t_relay`` of everything else to a fixed UAS); this module
only finds the binary and runs it in the foreground, bounded, for ``experiments.bench_sip``.
Everything here runs on the caller's thread; the process is waited on with timeouts.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

__all__ = ["KAMAILIO_CFG", "KamailioError", "KamailioProxy", "find_kamailio", "kamailio_command", "udp_port_bound"]

ROOT = Path(__file__).resolve().parent.parent
KAMAILIO_CFG = ROOT / "benchmarks" / "kamailio" / "kamailio.cfg"

Address = tuple[str, int]


class KamailioError(RuntimeError):
    """Kamailio did not start (bad config, port taken...); the message carries its stderr."""


def find_kamailio() -> str | None:
    """The path of the ``kamailio`` binary (also looked for in /usr/sbin), or None."""
    return shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/usr/local/sbin")


def kamailio_command(
    binary: str,
    listen: Address,
    uas: Address,
    workdir: Path,
    *,
    children: int = 2,
    cfg: Path = KAMAILIO_CFG,
    shm_mb: int = 256,
) -> list[str]:
    """The command line that runs ``cfg`` in the foreground (``-DD``), logging to stderr (``-E``)."""
    host, port = listen
    uas_host, uas_port = uas
    return [
        binary, "-f", str(cfg), "-DD", "-E",
        "-Y", str(workdir), "-w", str(workdir), "-P", str(workdir / "kamailio.pid"),
        "-m", str(shm_mb), "-M", "16",
        "-A", f"LISTEN_IP={host}", "-A", f"LISTEN_PORT={port}",
        "-A", f'UAS_URI="sip:{uas_host}:{uas_port}"', "-A", f"CHILDREN={children}",
    ]  # fmt: skip


def udp_port_bound(port: int, host: str = "127.0.0.1") -> bool:
    """True when some socket is bound to UDP ``host:port`` (read from /proc/net/udp, no probe)."""
    wanted_port = f"{port:04X}"
    wanted_hosts = {"00000000", bytes(int(p) for p in host.split("."))[::-1].hex().upper()}
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:  # pragma: no cover - not Linux
        return True
    for line in lines:
        address, _, hex_port = line.split()[1].partition(":")
        if hex_port == wanted_port and address in wanted_hosts:
            return True
    return False


class KamailioProxy:
    """A running Kamailio on ``listen`` relaying to ``uas``; a context manager (start / stop)."""

    def __init__(
        self, binary: str, listen: Address, uas: Address, workdir: Path, *, children: int = 2, cfg: Path = KAMAILIO_CFG
    ) -> None:
        self.listen = listen
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.command = kamailio_command(binary, listen, uas, self.workdir, children=children, cfg=cfg)
        self.log_path = self.workdir / "kamailio.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        """Start Kamailio and return once it has bound its UDP port; ``KamailioError`` otherwise."""
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not udp_port_bound(self.listen[1], self.listen[0]):
            if self.process.poll() is not None:
                raise KamailioError(
                    f"kamailio exited with status {self.process.returncode} before binding "
                    f"{self.listen[0]}:{self.listen[1]}:\n{self.log_tail()}\ncommand: {' '.join(self.command)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise KamailioError(f"kamailio did not bind {self.listen} within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)
        time.sleep(0.3)  # the bind comes from the main process; let the UDP workers fork

    def log_tail(self, limit: int = 3000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-limit:]

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM Kamailio's process group (it forks its workers), wait, SIGKILL if need be."""
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(process.pid, sig)  # the group is Kamailio's own (start_new_session)
            except ProcessLookupError:
                break
            try:
                return process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return process.poll()

    def __enter__(self) -> KamailioProxy:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

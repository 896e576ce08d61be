"""What the Python roles of the media benchmark share: sockets, addresses, stop conditions, output.

A role prints its ready line (``emit``) once bound, runs until ``--duration`` passes or SIGTERM /
SIGINT arrives (``wait_for_stop``, on the role's event loop), then prints its result line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
from typing import Any

__all__ = ["BUFFER_BYTES", "emit", "hostport", "thread_cpu", "udp_socket", "wait_for_stop"]

BUFFER_BYTES = 8 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)


def hostport(text: str) -> tuple[str, int]:
    """argparse type: ``HOST:PORT`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def udp_socket(host: str = "127.0.0.1", port: int = 0, buffer_bytes: int = BUFFER_BYTES) -> socket.socket:
    """A bound non-blocking UDP socket with buffers as large as root may force (as the C programs)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, buffer_bytes)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, buffer_bytes)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def emit(obj: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed (the orchestrator reads line by line)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def wait_for_stop(duration: float) -> None:
    """Return after ``duration`` seconds or at SIGTERM/SIGINT, whichever comes first (role's loop)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), timeout=duration)
    except asyncio.TimeoutError:
        pass


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) per thread of this process: ``main`` for the event loop's
    thread, ``"<name> <tid>"`` for the others (the engine's packet thread among them)."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    main_tid = os.getpid()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        key = "main" if int(tid) == main_tid else f"{name} {tid}"
        out[key] = (int(fields[11]) + int(fields[12])) / tick
    return out

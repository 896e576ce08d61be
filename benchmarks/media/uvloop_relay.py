"""A uvloop Python relay doing the bare C relay's forwarding: per datagram, rewrite one header byte
(byte 1: payload type 8, marker kept) and ``sendto`` the destination from a second socket.

    python -m benchmarks.media.uvloop_relay --dest HOST:PORT [--duration S]

Prints ``{"port": P}`` when bound and ``{"received", "forwarded", "send_errors"}`` at the end.
Both hooks run on the role's uvloop event loop (one thread).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import uvloop

from benchmarks.media.role_support import emit, hostport, udp_socket, wait_for_stop


class Forwarder(asyncio.DatagramProtocol):
    """Receives on the relay's port; forwards through ``out`` (a connected datagram transport)."""

    def __init__(self) -> None:
        self.out: asyncio.DatagramTransport | None = None
        self.received = 0
        self.forwarded = 0
        self.errors = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received += 1
        if len(data) < 12 or self.out is None:
            return
        packet = bytearray(data)
        packet[1] = (packet[1] & 0x80) | 8
        self.out.sendto(packet)
        self.forwarded += 1

    def error_received(self, exc: Exception) -> None:
        self.errors += 1


class _Quiet(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:
        pass


async def relay(dest: tuple[str, int], duration: float) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    inbound = udp_socket()
    outbound = udp_socket()
    outbound.connect(dest)
    forwarder = Forwarder()
    in_tr, _ = await loop.create_datagram_endpoint(lambda: forwarder, sock=inbound)
    out_tr, _ = await loop.create_datagram_endpoint(_Quiet, sock=outbound)
    forwarder.out = out_tr
    emit({"port": inbound.getsockname()[1]})
    await wait_for_stop(duration)
    in_tr.close()
    out_tr.close()
    return {"received": forwarder.received, "forwarded": forwarder.forwarded, "send_errors": forwarder.errors}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="uvloop_relay", description=__doc__)
    parser.add_argument("--dest", type=hostport, required=True)
    parser.add_argument("--duration", type=float, default=60.0)
    args = parser.parse_args(argv)
    emit(uvloop.run(relay(args.dest, args.duration)))


if __name__ == "__main__":
    main()

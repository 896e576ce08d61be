"""The MRFP engine as a relay: one flow doing the MRFP's full per-packet work between the
benchmark's C sender and sink.

    python -m benchmarks.media.engine_relay --dest HOST:PORT [--duration S] [--metadata-interval S]

The ``MediaEngine`` (C, native) receives on the flow's port, updates the flow's metadata (counts,
payload size, rate, jitter, loss, latency), applies the flow's instruction (forward from a second
socket, mu-law -> A-law) and sends; the role's uvloop event loop drains the metadata records
through the engine's file descriptor, as the Media Processor actor does. Prints ``{"port": P}``
when running and ``{"stats", "flow", "metadata_records"}`` at the end.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import uvloop

from benchmarks.media.role_support import emit, hostport, udp_socket, wait_for_stop


def plain(value: Any) -> Any:
    """A JSON-able form of the engine's stats objects (dataclasses, mappings, numbers)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if hasattr(value, "__dataclass_fields__"):
        return {name: plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if hasattr(value, "__dict__"):
        return plain(vars(value))
    return str(value)


class MetadataDrain:
    """Counts the metadata records the engine signals; ``on_readable`` runs on the role's loop."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.records = 0

    def on_readable(self) -> None:
        self.records += len(self.engine.drain_metadata())


async def relay(
    dest: tuple[str, int], duration: float, metadata_interval: float | None, batch: int | None = None
) -> dict[str, Any]:
    from nf_modules.mediacore.engine import Instruction, MediaEngine

    loop = asyncio.get_running_loop()
    inbound = udp_socket()
    outbound = udp_socket()
    options: dict[str, Any] = {"native": True}
    if metadata_interval is not None:
        options["metadata_interval"] = metadata_interval
    if batch is not None:
        options["batch"] = batch
    engine = MediaEngine(**options)
    engine.add_flow(1, inbound, Instruction(action="forward", dest=dest, out_sock=outbound, transcode="ulaw2alaw"))
    drain = MetadataDrain(engine)
    loop.add_reader(engine.fileno(), drain.on_readable)
    engine.start()
    emit({"port": inbound.getsockname()[1]})
    try:
        await wait_for_stop(duration)
    finally:
        loop.remove_reader(engine.fileno())
        drain.on_readable()
        stats, flow = engine.stats(), engine.flow_stats(1)
        engine.close()
        inbound.close()
        outbound.close()
    return {"stats": plain(stats), "flow": plain(flow), "metadata_records": drain.records}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="engine_relay", description=__doc__)
    parser.add_argument("--dest", type=hostport, required=True)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--metadata-interval", type=float, default=None, help="default: the engine's")
    parser.add_argument("--batch", type=int, default=None, help="packets per recvmmsg (default: the engine's)")
    args = parser.parse_args(argv)
    emit(uvloop.run(relay(args.dest, args.duration, args.metadata_interval, args.batch)))


if __name__ == "__main__":
    main()

"""The MRFP carrying N bidirectional calls, for the max-calls step of the media benchmark.

    python -m benchmarks.media.mrfp_calls --calls N --sink HOST:PORT [--driver actor|engine]
                                          [--duration S]

Each call is a media bridge with two ports: side A (where UE-A sends) and side B (where UE-B
sends). What arrives on one side leaves from the other side's port towards the other UE,
transcoded mu-law -> A-law, with one engine flow per call direction in refactored mode (packets
never held). Both UEs of every call are the benchmark's C sink (``--sink``), which measures the
one-way latency from the senders' RFC 8285 stamps.

``--driver engine`` builds the bridges on a ``MediaEngine`` directly; ``--driver actor`` asks the
Media Processor actor for them over its control protocol (``allocate``, then ``update`` of both
sides' remotes), as the MRFC's Resource Controller does. Prints ``{"ports": [A0, B0, A1, B1, ...],
"driver": ...}`` once every bridge is up, and the engine's / actor's stats at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any

import uvloop

from benchmarks.media.engine_relay import MetadataDrain, plain
from benchmarks.media.role_support import emit, hostport, thread_cpu, udp_socket, wait_for_stop

CALL_SOCKET_BUFFER = 1 << 20


def actor_available() -> bool:
    """Whether the Media Processor actor this role can drive is importable."""
    try:
        from benchmarks.media.mrfp_actor_driver import ActorDriver  # noqa: F401
    except ImportError:
        return False
    return True


async def engine_bridges(
    calls: int, sink: tuple[str, int], duration: float, metadata_interval: float | None = None
) -> dict[str, Any]:
    """``calls`` bridges on one ``MediaEngine``: flow 2i = side A of call i, flow 2i+1 = side B."""
    from nf_modules.mediacore.engine import Instruction, MediaEngine

    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = [udp_socket(buffer_bytes=CALL_SOCKET_BUFFER) for _ in range(2 * calls)]
    engine = MediaEngine(native=True, **({} if metadata_interval is None else {"metadata_interval": metadata_interval}))
    try:
        for i in range(calls):
            a, b = socks[2 * i], socks[2 * i + 1]
            engine.add_flow(2 * i, a, Instruction(action="forward", dest=sink, out_sock=b, transcode="ulaw2alaw"))
            engine.add_flow(2 * i + 1, b, Instruction(action="forward", dest=sink, out_sock=a, transcode="ulaw2alaw"))
        drain = MetadataDrain(engine)
        loop.add_reader(engine.fileno(), drain.on_readable)
        engine.start()
        emit({"ports": [s.getsockname()[1] for s in socks], "driver": "engine"})
        await wait_for_stop(duration)
        loop.remove_reader(engine.fileno())
        drain.on_readable()
        return {"stats": plain(engine.stats()), "metadata_records": drain.records, "flows": 2 * calls,
                "thread_cpu_s": thread_cpu()}
    finally:
        engine.close()
        for s in socks:
            s.close()


async def actor_bridges(calls: int, sink: tuple[str, int], duration: float) -> dict[str, Any]:
    from benchmarks.media.mrfp_actor_driver import ActorDriver

    async with ActorDriver(calls) as driver:
        ports = await driver.bridge_all(sink)
        emit({"ports": ports, "driver": "actor"})
        await wait_for_stop(duration)
        return {**await driver.stats(), "thread_cpu_s": thread_cpu()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mrfp_calls", description=__doc__)
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--sink", type=hostport, required=True)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--driver", choices=("actor", "engine"), default="engine")
    parser.add_argument("--metadata-interval", type=float, default=None, help="engine driver: default the engine's")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error("--calls must be >= 1")
    if args.driver == "actor":
        emit(uvloop.run(actor_bridges(args.calls, args.sink, args.duration)))
    else:
        emit(uvloop.run(engine_bridges(args.calls, args.sink, args.duration, args.metadata_interval)))


if __name__ == "__main__":
    main()

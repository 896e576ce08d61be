"""Drives the whole MRFP (``nf_modules.mrfp.MrfpSignalling``: Media Processor on the C engine,
its Media Update) over its control protocol, as the MRFC's Resource Controller does: per call
``allocate(bridge_id)``, then ``update`` of side A's and side B's remote (both: the benchmark's
sink). Runs on the role's event loop, which also hosts the MRFP actor (``Runtime.attach``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from actors.control import ControlPeer
from actors.runtime import Runtime
from nf_modules.mrfp import MrfpSignalling

__all__ = ["ActorDriver", "FIRST_PORT"]

FIRST_PORT = 20000  # below Linux's ephemeral range and away from the MRFP's default 30000-39999
CONCURRENT_REQUESTS = 64
REQUEST_TIMEOUT = 10.0


class ActorDriver:
    """``async with ActorDriver(calls) as d: ports = await d.bridge_all(sink)``."""

    def __init__(self, calls: int, *, mode: str = "refactored", first_port: int = FIRST_PORT) -> None:
        self.calls = calls
        self.mode = mode
        self.port_range = (first_port, min(65534, first_port + 4 * calls + 400))
        self._runtime_cm: Any = None
        self.mrfp: Any = None
        self.address: tuple[str, int] | None = None
        self.peer: ControlPeer | None = None

    async def __aenter__(self) -> ActorDriver:
        self._runtime_cm = Runtime.attach()
        await self._runtime_cm.__aenter__()
        self.mrfp = MrfpSignalling.start("mrfp", port_range=self.port_range, mode=self.mode, native=True).proxy()
        self.address = tuple(await self.mrfp.get_address())  # type: ignore[assignment]
        self.peer = await ControlPeer.open(None, ("127.0.0.1", 0), timeout=REQUEST_TIMEOUT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.peer is not None:
            self.peer.close()
        await self._runtime_cm.__aexit__(*exc)

    async def _bridge(self, index: int, sink: tuple[str, int], gate: asyncio.Semaphore) -> tuple[int, int]:
        assert self.peer is not None and self.address is not None
        bridge_id = f"bench-{index}"
        async with gate:
            reply = await self.peer.request(self.address, "allocate", bridge_id=bridge_id)
            for side in ("A", "B"):
                await self.peer.request(self.address, "update", bridge_id=bridge_id, side=side,
                                        remote_host=sink[0], remote_port=sink[1])
        return reply["ports"]["A"], reply["ports"]["B"]

    async def bridge_all(self, sink: tuple[str, int]) -> list[int]:
        """Allocate and connect every call's bridge; the ports in order A0, B0, A1, B1, ..."""
        gate = asyncio.Semaphore(CONCURRENT_REQUESTS)
        pairs = await asyncio.gather(*(self._bridge(i, sink, gate) for i in range(self.calls)))
        return [port for pair in pairs for port in pair]

    async def stats(self) -> dict[str, Any]:
        return {"stats": await self.mrfp.get_stats(), "dialog_states": await self.mrfp.get_dialog_states(),
                "flows": 2 * self.calls}

"""The runtime: asyncio actors behind pykka's API, supervision, clocks, UDP, sans-IO SIP."""

from actors.actor import AsyncioActor, Terminated, unwatch, watch
from actors.future import AsyncioFuture, as_asyncio_future
from actors.runtime import Runtime

__all__ = [
    "AsyncioActor",
    "AsyncioFuture",
    "Runtime",
    "Terminated",
    "as_asyncio_future",
    "unwatch",
    "watch",
]

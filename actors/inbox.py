"""The inbox of an asyncio actor: a deque fed from any thread, drained on the loop."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from pykka._envelope import Envelope as _Envelope

if TYPE_CHECKING:
    from pykka import Future
    from pykka._envelope import Envelope

    from actors.runtime import Runtime

__all__ = ["AsyncioInbox"]

_get_running = asyncio._get_running_loop  # noqa: SLF001


class AsyncioInbox:
    """FIFO of ``(message, reply_to)`` pairs with pykka's ``put``/``get``/``empty`` surface.

    ``put`` runs on any thread. A put from the actor's own loop appends and
    wakes the actor directly; a put from a foreign thread appends (deque appends
    are atomic) and schedules one wake-up with ``call_soon_threadsafe`` unless
    one is already pending, so a burst of foreign tells costs one self-pipe
    write, not one per message. ``get``/``wait`` run on the actor's loop only.
    """

    __slots__ = ("_queue", "_loop", "_waiter", "_wake_pending", "_lock")

    def __init__(self, runtime: Runtime) -> None:
        self._queue: deque[tuple[Any, Future[Any] | None]] = deque()
        self._loop = runtime.loop
        self._waiter: asyncio.Future[None] | None = None
        self._wake_pending = False
        self._lock = threading.Lock()

    def put(self, envelope: Envelope[Any], /) -> None:
        """pykka's entry point (asks, stops): store the envelope's two fields."""
        self.put_message(envelope.message, envelope.reply_to)

    def put_message(self, message: Any, reply_to: Future[Any] | None = None) -> None:
        """Queue ``message``; ``reply_to`` is the future an ask waits on."""
        self._queue.append((message, reply_to))
        if _get_running() is self._loop:
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return
        if self._wake_pending:  # a scheduled wake-up runs after this append
            return
        with self._lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # loop closed: the actor is gone; teardown answers asks
            pass

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get(self) -> Envelope[Any]:
        """Pop the oldest message as an ``Envelope``; raises ``IndexError`` when empty."""
        message, reply_to = self._queue.popleft()
        return _Envelope(message, reply_to)

    def empty(self) -> bool:
        return not self._queue

    def __len__(self) -> int:
        return len(self._queue)

    async def wait(self) -> None:
        """Suspend until the inbox is not empty."""
        while not self._queue:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

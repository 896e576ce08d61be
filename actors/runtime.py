"""The event loop that hosts asyncio actors.

A ``Runtime`` either owns a loop (uvloop by default) running on its own daemon
thread, or attaches to a loop the caller already runs, so an aiohttp or
FastAPI service can host actors in its own loop. Actors started from code
running on a runtime's loop live on that runtime; actors started from any
other thread live on the default runtime, created on first use.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.actor import AsyncioActor

__all__ = ["Runtime"]

_get_running = asyncio._get_running_loop  # noqa: SLF001


def new_event_loop(use_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    """A fresh event loop: uvloop's when available and asked for."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a hard dependency
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class Runtime:
    """An event loop plus the actors that run on it."""

    _by_loop: dict[asyncio.AbstractEventLoop, Runtime] = {}
    _default: Runtime | None = None
    _class_lock = threading.Lock()

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        use_uvloop: bool = True,
        name: str = "vims-runtime",
    ) -> None:
        """Own a new loop on a daemon thread, or attach to ``loop``.

        When attaching, the caller keeps running (and eventually closing) the
        loop; ``shutdown()`` then only stops this runtime's actors.
        """
        self.name = name
        self._actors: dict[str, AsyncioActor] = {}
        self._closed = False
        self.owns_loop = loop is None
        if loop is None:
            self.loop = new_event_loop(use_uvloop)
            ready = threading.Event()
            self._thread: threading.Thread | None = threading.Thread(
                target=self._run_loop, args=(ready,), name=name, daemon=True
            )
            self._thread.start()
            ready.wait()
        else:
            self.loop = loop
            self._thread = None
        with Runtime._class_lock:
            Runtime._by_loop[self.loop] = self

    @classmethod
    def attach(cls, loop: asyncio.AbstractEventLoop | None = None) -> Runtime:
        """The runtime of ``loop`` (default: the running loop), made if needed."""
        loop = loop or asyncio.get_running_loop()
        with cls._class_lock:
            existing = cls._by_loop.get(loop)
        return existing if existing is not None else cls(loop)

    @classmethod
    def current(cls) -> Runtime:
        """The runtime whose loop runs this thread, else the default runtime."""
        loop = _get_running()
        if loop is not None:
            runtime = cls._by_loop.get(loop)
            if runtime is not None:
                return runtime
        return cls.default()

    @classmethod
    def default(cls) -> Runtime:
        """The process-wide default runtime, started on first use."""
        with cls._class_lock:
            if cls._default is None or cls._default._closed:
                cls._default = None
        if cls._default is None:
            runtime = cls(name="vims-default-runtime")
            with cls._class_lock:
                if cls._default is None:
                    cls._default = runtime
                    atexit.register(runtime.shutdown)
                else:  # another thread won the race
                    runtime.shutdown()
        return cls._default  # type: ignore[return-value]

    def make_default(self) -> Runtime:
        """Make this runtime the one foreign threads start actors on."""
        with Runtime._class_lock:
            Runtime._default = self
        return self

    # -- loop plumbing ----------------------------------------------------

    def _run_loop(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def in_loop_thread(self) -> bool:
        """True when called by code running on this runtime's loop."""
        return _get_running() is self.loop

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop, from any thread."""
        if _get_running() is self.loop:
            self.loop.call_soon(callback, *args)
        else:
            self.loop.call_soon_threadsafe(callback, *args)

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        """Run a coroutine on the loop from a foreign thread and return its result."""
        if self.in_loop_thread():
            raise RuntimeError("Runtime.run() would block its own loop; await instead")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # -- actors -------------------------------------------------------------

    def _register(self, actor: AsyncioActor) -> None:
        if self._closed:
            raise RuntimeError(f"runtime {self.name} is shut down")
        self._actors[actor.actor_urn] = actor

    def _unregister(self, actor: AsyncioActor) -> None:
        self._actors.pop(actor.actor_urn, None)

    @property
    def actors(self) -> list[AsyncioActor]:
        """The actors alive on this runtime, in start order."""
        return list(self._actors.values())

    async def stop_actors(self, timeout: float = 5.0) -> None:
        """Stop this runtime's actors, newest first; cancel any that overrun."""
        for actor in reversed(self.actors):
            if actor.actor_ref.is_alive():
                try:
                    actor.actor_ref.tell(_stop_message())
                except Exception:  # noqa: BLE001  (died meanwhile)
                    pass
        tasks = [a._actor_task for a in self.actors if a._actor_task is not None]  # noqa: SLF001
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=timeout)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Stop the actors; for use on the loop itself (attached runtimes)."""
        if self._closed:
            return
        await self.stop_actors(timeout)
        self._closed = True
        with Runtime._class_lock:
            Runtime._by_loop.pop(self.loop, None)
            if Runtime._default is self:
                Runtime._default = None

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the actors, then the loop and its thread if this runtime owns them.

        Call from any thread but the loop's own; on the loop, ``await aclose()``.
        """
        if self._closed:
            return
        if self.loop.is_closed():
            self._closed = True
            return
        if self.in_loop_thread():
            raise RuntimeError("shutdown() on the runtime's own loop: use `await aclose()`")
        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self.aclose(timeout), self.loop).result(3 * timeout)
        else:
            self._closed = True
        if self.owns_loop and self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        kind = "owned" if self.owns_loop else "attached"
        return f"<Runtime {self.name} {kind} actors={len(self._actors)}>"


def _stop_message() -> Any:
    from pykka import messages

    return messages._ActorStop()  # noqa: SLF001

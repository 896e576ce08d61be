"""A pykka ``Future`` that works from both sides of an event loop.

``AsyncioFuture.get()`` blocks a foreign thread until the value is set, exactly
like ``pykka.ThreadingFuture``. ``await future`` on an event loop suspends the
awaiting task without blocking its loop; the value may be set from any thread
(the actor's loop, another runtime's loop, or a plain thread).

Calling the blocking ``get()`` on an event-loop thread while the value is not
there yet raises ``RuntimeError`` instead of dead-locking the loop.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable
from typing import Any, TypeVar

import pykka

__all__ = ["AsyncioFuture", "as_asyncio_future"]

T = TypeVar("T")
_get_running = asyncio._get_running_loop  # noqa: SLF001  (C fast path, no exception)


class AsyncioFuture(pykka.Future[T]):
    """Thread-safe future with blocking ``get()`` and non-blocking ``await``.

    ``set``/``set_exception`` may run on any thread; done-callbacks run on the
    thread that completes the future and must only schedule work elsewhere.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._result: tuple[Any, Any] | None = None  # (value, exc_info)
        self._callbacks: list[Callable[[AsyncioFuture[T]], None]] | None = []
        self._event: threading.Event | None = None

    # -- completion -------------------------------------------------------

    def done(self) -> bool:
        return self._result is not None or self._get_hook is not None

    def _complete(self, result: tuple[Any, Any]) -> None:
        with self._lock:
            if self._result is not None or self._get_hook is not None:
                raise queue.Full
            self._result = result
            callbacks, self._callbacks = self._callbacks, None
            event = self._event
        if event is not None:
            event.set()
        for callback in callbacks or ():
            callback(self)

    def set(self, value: Any | None = None) -> None:
        self._complete((value, None))

    def set_exception(self, exc_info: Any | None = None) -> None:
        assert exc_info is None or len(exc_info) == 3
        if exc_info is None:
            exc_info = sys.exc_info()
        self._complete((None, exc_info))

    def set_get_hook(self, func: Any) -> None:
        with self._lock:
            if self._result is not None:
                raise queue.Full
            super().set_get_hook(func)
            callbacks, self._callbacks = self._callbacks, None
            event = self._event
        if event is not None:
            event.set()
        for callback in callbacks or ():
            callback(self)

    def add_done_callback(self, callback: Callable[[AsyncioFuture[T]], None]) -> None:
        """Call ``callback(self)`` once the future completes (now, if it has)."""
        with self._lock:
            if self._callbacks is not None:
                self._callbacks.append(callback)
                return
        callback(self)

    # -- reading ----------------------------------------------------------

    def get(self, *, timeout: float | None = None) -> T:
        if self._get_hook is not None:
            return super().get(timeout=timeout)
        if self._result is None:
            self._wait(timeout)
        value, exc_info = self._result  # type: ignore[misc]
        if exc_info is not None:
            exc_type, exc_value, exc_traceback = exc_info
            if exc_value is None:
                exc_value = exc_type()
            if exc_value.__traceback__ is not exc_traceback:
                raise exc_value.with_traceback(exc_traceback)
            raise exc_value
        return value

    def _wait(self, timeout: float | None) -> None:
        if _get_running() is not None and (timeout is None or timeout > 0):
            msg = (
                "AsyncioFuture.get() would block the running event loop; "
                "use `await future` (or ask(..., block=False) and await it)"
            )
            raise RuntimeError(msg)
        with self._lock:
            if self._result is not None or self._get_hook is not None:
                return
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        deadline = None if timeout is None else time.monotonic() + timeout
        if not event.wait(timeout):
            raise pykka.Timeout(f"{timeout} seconds")
        if self._get_hook is not None:  # a hook was set while we waited
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._result = (super().get(timeout=remaining), None)

    def __await__(self) -> Generator[Any, None, T]:
        if self._get_hook is not None:
            # A hook computes its value by blocking on other futures; run it in
            # a worker thread so the loop stays free.
            loop = asyncio.get_running_loop()
            return (yield from loop.run_in_executor(None, self.get).__await__())
        if self._result is None:
            yield from as_asyncio_future(self).__await__()
        return self.get()

    __iter__ = __await__

    # -- combinators that do not need a blocking hook ---------------------

    def _derived(
        self, sources: list[AsyncioFuture[Any]], combine: Callable[[list[Any]], Any]
    ) -> AsyncioFuture[Any]:
        out: AsyncioFuture[Any] = AsyncioFuture()
        remaining = [len(sources)]
        lock = threading.Lock()

        def on_done(_: AsyncioFuture[Any]) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            try:
                out.set(combine([f.get(timeout=0) for f in sources]))
            except Exception:  # noqa: BLE001
                out.set_exception()

        for source in sources:
            source.add_done_callback(on_done)
        return out

    def map(self, func: Callable[[T], Any]) -> AsyncioFuture[Any]:
        return self._derived([self], lambda values: func(values[0]))

    def filter(self, func: Callable[[Any], bool]) -> AsyncioFuture[Any]:
        return self._derived([self], lambda values: list(filter(func, values[0])))

    def reduce(self, func: Callable[[Any, Any], Any], *args: Any) -> AsyncioFuture[Any]:
        return self._derived([self], lambda values: functools.reduce(func, values[0], *args))

    def join(self, *futures: pykka.Future[Any]) -> pykka.Future[Iterable[Any]]:
        if all(isinstance(f, AsyncioFuture) for f in futures):
            return self._derived([self, *futures], list)  # type: ignore[list-item]
        return super().join(*futures)


def as_asyncio_future(future: AsyncioFuture[Any]) -> asyncio.Future[None]:
    """An ``asyncio.Future`` on the running loop that completes with ``future``.

    Its result is ``None``: read the value with ``future.get(timeout=0)``. The
    returned future can be given to ``asyncio.wait_for`` or ``asyncio.wait``.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    def on_done(_: AsyncioFuture[Any]) -> None:
        if _get_running() is loop:
            wake()
        else:
            loop.call_soon_threadsafe(wake)

    future.add_done_callback(on_done)
    return waiter

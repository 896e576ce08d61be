"""``AsyncioActor``: a ``pykka.Actor`` whose messages are handled on an asyncio loop.

pykka's documented semantics hold unchanged (``start()`` returns an
``ActorRef``; ``tell``/``ask``/``proxy``; ``ActorRegistry``; ``on_start``/
``on_stop``/``on_failure``; an exception in an ``ask`` goes to the caller, one
in a ``tell`` stops the actor and calls ``on_failure``; asks still queued at
stop get ``ActorDeadError``). What changes is where the code runs: every hook
and handler runs as part of one asyncio task on the actor's ``Runtime`` loop,
and ``on_receive``, proxied methods and the ``on_*`` hooks may be
``async def``. An actor still handles one message at a time: while an async
handler awaits, its later messages wait in the inbox.

Death watch: ``watch(other_ref)`` makes ``on_terminated(Terminated)`` run on
this actor when the other actor stops, with the reason it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pykka
from pykka import ActorDeadError, ActorRegistry, messages

from actors.future import AsyncioFuture
from actors.inbox import AsyncioInbox
from actors.ref import AsyncioActorRef
from actors.runtime import Runtime

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["AsyncioActor", "Terminated", "concurrent", "watch", "unwatch"]

logger = logging.getLogger("pykka")

NORMAL = "normal"
FAILURE = "failure"
KILLED = "killed"


@dataclass(frozen=True, slots=True)
class Terminated:
    """Told to a watcher when a watched actor stops.

    ``reason`` is ``"normal"`` (stopped), ``"failure"`` (an exception in a
    ``tell`` or a hook; ``exception`` holds it) or ``"killed"`` (its task was
    cancelled, e.g. by a supervisor's shutdown timeout).
    """

    actor_ref: pykka.ActorRef[Any]
    reason: str
    exception: BaseException | None = None


@dataclass(frozen=True, slots=True)
class _Watch:
    watcher: pykka.ActorRef[Any]
    add: bool


@dataclass(frozen=True, slots=True)
class _FailureHook:
    """A ``@concurrent`` handler of a tell failed: run ``on_failure`` in the actor's loop."""

    error: BaseException


_CONCURRENT: set[Any] = set()


def concurrent(method: Any) -> Any:
    """Mark an ``async def`` handler so the actor keeps handling messages while it runs.

    By default an actor handles one message at a time, so an ``async`` method
    that awaits (say, the final response of a SIP call it placed) holds the
    inbox until it returns. A ``@concurrent`` method runs as a task of the
    actor instead: the ask's future completes when it returns, other messages
    are handled meanwhile (interleaving only at its ``await`` points, on the
    same loop), and the task is cancelled when the actor stops.
    """
    if not asyncio.iscoroutinefunction(method):
        raise TypeError(f"@concurrent needs an async def, got {method!r}")
    _CONCURRENT.add(method.__code__)
    return method


# Messages handled by the runtime rather than by ``on_receive``.
_SPECIAL = frozenset(
    {
        Terminated,
        _Watch,
        _FailureHook,
        messages._ActorStop,  # noqa: SLF001
        messages.ProxyCall,
        messages.ProxyGetAttr,
        messages.ProxySetAttr,
    }
)


class AsyncioActor(pykka.Actor):
    """An actor whose loop is an asyncio task on a ``Runtime``'s event loop."""

    runtime: ClassVar[Runtime | None] = None
    """Pin every instance of a class to one runtime; ``None`` means ``Runtime.current()``."""

    actor_runtime: Runtime
    _actor_task: asyncio.Task[None] | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The runtime must be known before pykka creates the inbox.
        self.actor_runtime = type(self).runtime or Runtime.current()
        self._actor_task = None
        self._watchers: dict[str, pykka.ActorRef[Any]] = {}
        self._termination: Terminated | None = None
        self._concurrent_tasks: set[asyncio.Task[Any]] = set()
        self.actor_terminated: AsyncioFuture[Terminated] = AsyncioFuture()
        """Completes with the ``Terminated`` record once the actor's task has ended."""
        super().__init__(*args, **kwargs)
        self._actor_ref = AsyncioActorRef(self)

    # -- pykka's implementor hooks ----------------------------------------

    def _create_actor_inbox(self) -> AsyncioInbox:  # type: ignore[override]
        return AsyncioInbox(self.actor_runtime)

    @staticmethod
    def _create_future() -> AsyncioFuture[Any]:
        return AsyncioFuture()

    def _start_actor_loop(self) -> None:
        runtime = self.actor_runtime
        runtime._register(self)  # noqa: SLF001
        if runtime.in_loop_thread():
            self._spawn()
        else:
            runtime.loop.call_soon_threadsafe(self._spawn)

    def _spawn(self) -> None:
        self._actor_task = self.actor_runtime.loop.create_task(
            self._actor_loop_async(), name=str(self)
        )

    # pykka's blocking loop methods must never run here.
    def _actor_loop(self) -> None:  # pragma: no cover - guard
        raise RuntimeError("AsyncioActor runs on its runtime's event loop")

    # -- the loop -----------------------------------------------------------

    async def _actor_loop_async(self) -> None:
        """The actor's whole life, as one task on its runtime's loop.

        Messages are dispatched inline; only an ``async`` handler's coroutine
        is awaited, so a sync handler costs no task switch per message.
        """
        inbox: AsyncioInbox = self.actor_inbox  # type: ignore[assignment]
        queue = inbox._queue  # noqa: SLF001
        stopped = self.actor_stopped
        on_receive = self.on_receive
        handle_special = self._handle_receive
        iscoroutine = asyncio.iscoroutine
        envelope = None
        try:
            await self._call_hook(self.on_start)
            while not stopped.is_set():
                if not queue:
                    await inbox.wait()
                    continue
                envelope = queue.popleft()
                message, reply_to = envelope
                try:
                    if type(message) in _SPECIAL:
                        response = handle_special(message)
                    else:
                        response = on_receive(message)
                    if iscoroutine(response):
                        if response.cr_code in _CONCURRENT:
                            self._run_concurrently(response, reply_to)
                            envelope = None
                            continue
                        response = await response
                except asyncio.CancelledError:
                    raise
                except Exception:
                    await self._handle_exception(reply_to)
                except BaseException:
                    logger.debug(f"{sys.exc_info()[1]!r} in {self}. Stopping all actors.")
                    self._stop()
                    ActorRegistry.stop_all(block=False)
                else:
                    if reply_to is not None:
                        reply_to.set(response)
                envelope = None
        except asyncio.CancelledError:
            if envelope is not None and envelope[1] is not None:
                error = ActorDeadError(f"{self.actor_ref} was killed while handling the message")
                envelope[1].set_exception(exc_info=(ActorDeadError, error, None))
            self._termination = Terminated(self.actor_ref, KILLED)
            ActorRegistry.unregister(self.actor_ref)
            self.actor_stopped.set()
        finally:
            for task in list(self._concurrent_tasks):
                task.cancel()
            self._actor_loop_teardown()
            self._announce_termination()

    def _run_concurrently(self, coro: Any, reply_to: Any) -> None:
        """Run a ``@concurrent`` handler as a task of this actor; reply when it finishes."""
        task = self.loop.create_task(coro)
        self._concurrent_tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._concurrent_tasks.discard(t)
            if t.cancelled():
                if reply_to is not None:
                    error = ActorDeadError(f"{self.actor_ref} stopped before the call finished")
                    reply_to.set_exception(exc_info=(ActorDeadError, error, None))
                return
            error = t.exception()
            if error is None:
                if reply_to is not None:
                    reply_to.set(t.result())
            elif reply_to is not None:
                reply_to.set_exception(exc_info=(type(error), error, error.__traceback__))
            elif not self.actor_stopped.is_set():  # a tell failed: the actor fails, in its loop
                self.actor_inbox.put_message(_FailureHook(error))  # type: ignore[attr-defined]

        task.add_done_callback(done)

    async def _handle_exception(self, reply_to: Any) -> None:
        """An exception from a handler: to the asker, or it fails the actor."""
        if reply_to is not None:
            logger.info(f"Exception returned from {self} to caller:", exc_info=sys.exc_info())
            reply_to.set_exception()
        else:
            exc_info = sys.exc_info()
            self._handle_failure(*exc_info)
            await self._call_hook(self.on_failure, *exc_info)

    async def _call_hook(self, hook: Any, *args: Any) -> None:
        """Run an ``on_*`` hook, sync or async; a failure in it stops the actor."""
        try:
            result = hook(*args)
            if asyncio.iscoroutine(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            self._handle_failure(*sys.exc_info())

    def _actor_loop_teardown(self) -> None:
        inbox = self.actor_inbox
        while not inbox.empty():
            envelope = inbox.get()
            if isinstance(envelope.message, _Watch) and envelope.message.add:
                self._watchers[envelope.message.watcher.actor_urn] = envelope.message.watcher
            if envelope.reply_to is None:
                continue
            if isinstance(envelope.message, messages._ActorStop):  # noqa: SLF001
                envelope.reply_to.set(None)
            else:
                error = ActorDeadError(f"{self.actor_ref} stopped before handling the message")
                envelope.reply_to.set_exception(exc_info=(ActorDeadError, error, None))

    # -- stopping and failing ---------------------------------------------------

    def _stop(self) -> Any:
        """Stop now; returns a coroutine when ``on_stop`` is async (the loop awaits it)."""
        ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()
        if self._termination is None:
            self._termination = Terminated(self.actor_ref, NORMAL)
        logger.debug(f"Stopped {self}")
        try:
            result = self.on_stop()
        except Exception:  # noqa: BLE001
            self._handle_failure(*sys.exc_info())
            return None
        if asyncio.iscoroutine(result):
            return self._call_hook(lambda: result)
        return None

    def _handle_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._termination is None or self._termination.reason == NORMAL:
            self._termination = Terminated(self.actor_ref, FAILURE, exception_value)
        super()._handle_failure(exception_type, exception_value, traceback)

    def _announce_termination(self) -> None:
        self.actor_runtime._unregister(self)  # noqa: SLF001
        termination = self._termination or Terminated(self.actor_ref, NORMAL)
        self.actor_terminated.set(termination)
        watchers, self._watchers = self._watchers, {}
        for watcher in watchers.values():
            try:
                watcher.tell(termination)
            except ActorDeadError:
                pass

    # -- messages the runtime handles itself --------------------------------

    def _handle_receive(self, message: Any) -> Any:
        if isinstance(message, Terminated):
            return self.on_terminated(message)
        if isinstance(message, _FailureHook):
            error = message.error
            self._handle_failure(type(error), error, error.__traceback__)
            return self._call_hook(self.on_failure, type(error), error, error.__traceback__)
        if isinstance(message, _Watch):
            if message.add:
                self._watchers[message.watcher.actor_urn] = message.watcher
            else:
                self._watchers.pop(message.watcher.actor_urn, None)
            return None
        return super()._handle_receive(message)

    # -- public surface -----------------------------------------------------

    def watch(self, other: pykka.ActorRef[Any]) -> None:
        """Be told ``Terminated`` (through ``on_terminated``) when ``other`` stops."""
        watch(other, self.actor_ref)

    def unwatch(self, other: pykka.ActorRef[Any]) -> None:
        """Stop watching ``other``; a ``Terminated`` already sent still arrives."""
        unwatch(other, self.actor_ref)

    def on_terminated(self, terminated: Terminated) -> Any:
        """Run on this actor's loop when a watched actor has stopped.

        May be ``async def``. Raising here fails this actor, as in a ``tell``.
        """

    def kill(self) -> None:
        """Cancel the actor's task from any thread: it stops without ``on_stop``.

        Pending asks fail with ``ActorDeadError``; watchers are told ``"killed"``.
        Supervisors use this when a child overruns its shutdown timeout.
        """

        def cancel() -> None:
            if self._actor_task is not None:
                self._actor_task.cancel()

        self.actor_runtime.call_soon(cancel)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop every hook and handler of this actor runs on."""
        return self.actor_runtime.loop


def watch(watched: pykka.ActorRef[Any], watcher: pykka.ActorRef[Any]) -> None:
    """Make ``watcher`` receive ``Terminated`` when ``watched`` stops.

    If ``watched`` is already dead, ``watcher`` is told at once with the reason
    it died (or ``"normal"`` if that is no longer known). Works from any thread.
    """
    if not issubclass(watched.actor_class, AsyncioActor):
        raise TypeError(f"death watch needs an AsyncioActor, got {watched!r}")
    try:
        watched.tell(_Watch(watcher, add=True))
    except ActorDeadError:
        actor = watched._actor_weakref()  # noqa: SLF001
        termination = actor._termination if actor is not None else None  # noqa: SLF001
        watcher.tell(termination or Terminated(watched, NORMAL))


def unwatch(watched: pykka.ActorRef[Any], watcher: pykka.ActorRef[Any]) -> None:
    """Undo ``watch``; silently does nothing if ``watched`` is already dead."""
    try:
        watched.tell(_Watch(watcher, add=False))
    except ActorDeadError:
        pass

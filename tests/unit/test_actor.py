"""AsyncioActor keeps pykka's documented semantics while running on an event loop."""

from __future__ import annotations

import asyncio
import queue
import threading

import pykka
import pytest
from pykka import ActorDeadError, ActorRegistry

from actors import AsyncioActor, AsyncioFuture, Runtime, Terminated, concurrent

WAIT = 5.0  # generous: CI machines have 2 busy cores


@pytest.fixture
def runtime():
    rt = Runtime(name="test-runtime").make_default()
    yield rt
    rt.shutdown(timeout=WAIT)  # stops this runtime's actors, cancelling any that hang
    ActorRegistry.stop_all(timeout=WAIT)


class Recorder(AsyncioActor):
    """Records hook calls and messages; raises on request."""

    def __init__(self, log: list[str] | None = None) -> None:
        super().__init__()
        self.log = log if log is not None else []
        self.value = 0
        self.loop_thread: int | None = None

    def on_start(self) -> None:
        self.loop_thread = threading.get_ident()
        self.log.append("start")

    def on_stop(self) -> None:
        self.log.append("stop")

    def on_failure(self, exc_type, exc_value, tb) -> None:  # noqa: ANN001
        self.log.append(f"failure:{exc_value}")

    def on_receive(self, message: object) -> object:
        if message == "raise":
            raise ValueError("boom")
        if message == "thread":
            return threading.get_ident()
        self.log.append(f"msg:{message}")
        return message

    def add(self, n: int) -> int:
        self.value += n
        return self.value

    async def slow_double(self, n: int, gate: asyncio.Event | None = None) -> int:
        if gate is not None:
            await gate.wait()
        await asyncio.sleep(0)
        return 2 * n


class AsyncHooks(AsyncioActor):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    async def on_start(self) -> None:
        await asyncio.sleep(0)
        self.log.append("async-start")

    async def on_receive(self, message: object) -> object:
        await asyncio.sleep(0)
        return ("echo", message)

    async def on_stop(self) -> None:
        await asyncio.sleep(0)
        self.log.append("async-stop")


def test_start_returns_ref_and_tell_ask(runtime: Runtime) -> None:
    log: list[str] = []
    ref = Recorder.start(log)
    assert isinstance(ref, pykka.ActorRef)
    ref.tell("a")
    assert ref.ask("b", timeout=WAIT) == "b"
    assert log == ["start", "msg:a", "msg:b"]
    assert ref.ask("thread", timeout=WAIT) == runtime._thread.ident  # runs on the loop thread


def test_ask_non_blocking_returns_future(runtime: Runtime) -> None:
    ref = Recorder.start()
    future = ref.ask("x", block=False)
    assert isinstance(future, pykka.Future)
    assert future.get(timeout=WAIT) == "x"


def test_ask_timeout_raises_pykka_timeout(runtime: Runtime) -> None:
    gate = asyncio.Event()  # never set
    proxy = Recorder.start().proxy()
    proxy.slow_double(1, gate)
    with pytest.raises(pykka.Timeout):
        proxy.add(1).get(timeout=0.05)
    Runtime.current().call_soon(gate.set)


def test_proxy_attributes_and_methods(runtime: Runtime) -> None:
    proxy = Recorder.start().proxy()
    assert proxy.add(2).get(timeout=WAIT) == 2
    assert proxy.add(3).get(timeout=WAIT) == 5
    assert proxy.value.get(timeout=WAIT) == 5
    proxy.value = 40
    assert proxy.add(2).get(timeout=WAIT) == 42
    assert proxy.slow_double(21).get(timeout=WAIT) == 42  # async def through a proxy


def test_async_hooks_and_on_receive(runtime: Runtime) -> None:
    log: list[str] = []
    ref = AsyncHooks.start(log)
    assert ref.ask("hi", timeout=WAIT) == ("echo", "hi")
    assert ref.stop(timeout=WAIT) is True
    assert log == ["async-start", "async-stop"]


def test_exception_in_ask_goes_to_caller_and_actor_lives(runtime: Runtime) -> None:
    log: list[str] = []
    ref = Recorder.start(log)
    with pytest.raises(ValueError, match="boom"):
        ref.ask("raise", timeout=WAIT)
    assert ref.is_alive()
    assert ref.ask("after", timeout=WAIT) == "after"
    assert not any(entry.startswith("failure") for entry in log)


def test_exception_in_tell_stops_actor_and_calls_on_failure(runtime: Runtime) -> None:
    log: list[str] = []
    ref = Recorder.start(log)
    watcher = Watcher.start()
    watcher.proxy().watch_ref(ref).get(timeout=WAIT)
    ref.tell("raise")
    terminated = watcher.proxy().next_termination().get(timeout=WAIT).get(WAIT)
    assert not ref.is_alive()
    assert "failure:boom" in log
    assert "stop" not in log  # on_stop is not called on failure, as in pykka
    assert terminated.reason == "failure"
    assert isinstance(terminated.exception, ValueError)
    with pytest.raises(ActorDeadError):
        ref.tell("x")


def test_asks_queued_at_stop_get_actor_dead_error(runtime: Runtime) -> None:
    gate = asyncio.Event()
    ref = Recorder.start()
    proxy = ref.proxy()
    blocker = proxy.slow_double(1, gate)  # holds the actor
    stop = ref.stop(block=False)
    late = ref.ask("late", block=False)
    runtime.call_soon(gate.set)
    assert blocker.get(timeout=WAIT) == 2
    assert stop.get(timeout=WAIT) is True
    with pytest.raises(ActorDeadError):
        late.get(timeout=WAIT)


def test_registry_lookups_and_stop_all(runtime: Runtime) -> None:
    a = Recorder.start()
    b = Recorder.start()
    assert set(ActorRegistry.get_by_class(Recorder)) == {a, b}
    assert ActorRegistry.get_by_urn(a.actor_urn) is a
    ActorRegistry.stop_all(timeout=WAIT)
    assert not a.is_alive() and not b.is_alive()
    assert ActorRegistry.get_by_class(Recorder) == []


def test_stop_on_dead_actor_returns_false(runtime: Runtime) -> None:
    ref = Recorder.start()
    assert ref.stop(timeout=WAIT) is True
    assert ref.stop(timeout=WAIT) is False


def test_blocking_get_on_loop_thread_raises_instead_of_deadlocking(runtime: Runtime) -> None:
    async def try_blocking_get() -> str:
        future: AsyncioFuture[int] = AsyncioFuture()
        try:
            future.get()
        except RuntimeError as error:
            return str(error)
        return "no error"

    assert "would block the running event loop" in runtime.run(try_blocking_get(), WAIT)


def test_await_does_not_block_the_loop(runtime: Runtime) -> None:
    """While one task awaits an ask, other work on the same loop goes on."""

    async def scenario() -> list[str]:
        events: list[str] = []
        gate = asyncio.Event()
        proxy = Recorder.start().proxy()
        pending = proxy.slow_double(5, gate)

        async def other() -> None:
            events.append("other ran")
            gate.set()

        asyncio.get_running_loop().create_task(other())
        events.append(f"result {await pending}")
        return events

    assert runtime.run(scenario(), WAIT) == ["other ran", "result 10"]


def test_future_set_from_foreign_thread_wakes_awaiter(runtime: Runtime) -> None:
    future: AsyncioFuture[str] = AsyncioFuture()

    async def waiter() -> str:
        return await future

    concurrent = asyncio.run_coroutine_threadsafe(waiter(), runtime.loop)
    threading.Timer(0.01, future.set, args=("from thread",)).start()
    assert concurrent.result(WAIT) == "from thread"


def test_future_get_blocks_foreign_thread_until_set() -> None:
    future: AsyncioFuture[int] = AsyncioFuture()
    threading.Timer(0.01, future.set, args=(7,)).start()
    assert future.get(timeout=WAIT) == 7
    with pytest.raises(pykka.Timeout):
        AsyncioFuture().get(timeout=0.01)


def test_future_combinators_and_exceptions() -> None:
    a: AsyncioFuture[int] = AsyncioFuture()
    b: AsyncioFuture[int] = AsyncioFuture()
    joined = a.join(b)
    mapped = a.map(lambda x: x * 10)
    items: AsyncioFuture[list[int]] = AsyncioFuture()
    filtered = items.filter(lambda x: x > 1)
    reduced = items.reduce(lambda x, y: x + y, 100)
    a.set(1)
    b.set(2)
    items.set([1, 2, 3])
    assert joined.get(timeout=WAIT) == [1, 2]
    assert mapped.get(timeout=WAIT) == 10
    assert filtered.get(timeout=WAIT) == [2, 3]
    assert reduced.get(timeout=WAIT) == 106
    failing: AsyncioFuture[int] = AsyncioFuture()
    try:
        raise KeyError("k")
    except KeyError:
        failing.set_exception()
    with pytest.raises(KeyError):
        failing.map(lambda x: x).get(timeout=WAIT)
    with pytest.raises(Exception):  # noqa: B017, PT011  (pykka raises queue.Full)
        a.set(3)


class Watcher(AsyncioActor):
    """Collects ``Terminated`` notifications in a thread-safe queue the test reads.

    (Awaiting them inside the actor would block it: an actor handles one
    message at a time, so a ``Terminated`` could never arrive during the wait.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.terminations: queue.Queue[Terminated] = queue.Queue()

    def watch_ref(self, ref: pykka.ActorRef[object]) -> None:
        self.watch(ref)

    def on_terminated(self, terminated: Terminated) -> None:
        self.terminations.put(terminated)

    def next_termination(self) -> _Next:
        return _Next(self.terminations)


class _Next:
    """``watcher.proxy().next_termination().get(timeout)`` reads the queue off-loop."""

    def __init__(self, q: queue.Queue[Terminated]) -> None:
        self.q = q

    def get(self, timeout: float) -> Terminated:
        return self.q.get(timeout=timeout)


def test_death_watch_normal_stop(runtime: Runtime) -> None:
    watched = Recorder.start()
    watcher = Watcher.start()
    watcher.proxy().watch_ref(watched).get(timeout=WAIT)
    watched.stop(timeout=WAIT)
    terminated = watcher.proxy().next_termination().get(timeout=WAIT).get(WAIT)
    assert terminated.actor_ref is watched
    assert terminated.reason == "normal"
    assert terminated.exception is None


def test_death_watch_on_already_dead_actor_reports_at_once(runtime: Runtime) -> None:
    watched = Recorder.start()
    watched.tell("raise")
    assert watched.actor_stopped.wait(WAIT)
    watcher = Watcher.start()
    watcher.proxy().watch_ref(watched).get(timeout=WAIT)
    terminated = watcher.proxy().next_termination().get(timeout=WAIT).get(WAIT)
    assert terminated.reason == "failure"


def test_killed_actor_reports_killed_and_fails_pending_ask(runtime: Runtime) -> None:
    gate = asyncio.Event()
    ref = Recorder.start()
    watcher = Watcher.start()
    watcher.proxy().watch_ref(ref).get(timeout=WAIT)
    pending = ref.proxy().slow_double(1, gate)
    actor = ref._actor_weakref()
    actor.kill()
    with pytest.raises(ActorDeadError):
        pending.get(timeout=WAIT)
    assert watcher.proxy().next_termination().get(timeout=WAIT).get(WAIT).reason == "killed"
    assert not ref.is_alive()


def test_asyncio_actor_and_threading_actor_talk(runtime: Runtime) -> None:
    class Threaded(pykka.ThreadingActor):
        def __init__(self, other: pykka.ActorRef[object]) -> None:
            super().__init__()
            self.other = other

        def on_receive(self, message: object) -> object:
            return self.other.ask(message, timeout=WAIT)

    loop_ref = Recorder.start()
    threaded = Threaded.start(loop_ref)
    assert threaded.ask("relay", timeout=WAIT) == "relay"
    threaded.stop()


async def test_attached_runtime_hosts_actors_in_callers_loop() -> None:
    """Runtime.attach(): the test's own loop runs the actors."""
    loop = asyncio.get_running_loop()
    async with Runtime.attach() as rt:
        assert rt.loop is loop and not rt.owns_loop
        ref = Recorder.start()
        assert await ref.ask("thread", block=False) == threading.get_ident()
        proxy = ref.proxy()
        assert await proxy.add(4) == 4
        assert await proxy.slow_double(4) == 8
    assert not ref.is_alive()  # aclose() stopped the runtime's actors


class Caller(AsyncioActor):
    """``place`` waits for a gate; ``@concurrent`` lets the actor answer meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[str, asyncio.Event] = {}
        self.log: list[str] = []

    def open_gate(self, name: str) -> None:
        self.gates.setdefault(name, asyncio.Event()).set()

    @concurrent
    async def place(self, name: str) -> str:
        self.log.append(f"start {name}")
        await self.gates.setdefault(name, asyncio.Event()).wait()
        if name == "bad":
            raise ValueError("bad call")
        self.log.append(f"done {name}")
        return name

    async def serial(self, name: str) -> str:
        await self.gates.setdefault(name, asyncio.Event()).wait()
        return name

    def on_failure(self, exc_type, exc_value, tb) -> None:  # noqa: ANN001
        self.log.append(f"failure {exc_value}")


def test_concurrent_methods_let_the_actor_handle_other_messages(runtime: Runtime) -> None:
    proxy = Caller.start().proxy()
    first = proxy.place("one")
    second = proxy.place("two")
    assert proxy.log.get(timeout=WAIT) == ["start one", "start two"]  # both running, actor still answers
    proxy.open_gate("two")
    assert second.get(timeout=WAIT) == "two"
    assert not first.done()
    proxy.open_gate("one")
    assert first.get(timeout=WAIT) == "one"
    failing = proxy.place("bad")
    proxy.open_gate("bad")
    with pytest.raises(ValueError, match="bad call"):
        failing.get(timeout=WAIT)
    log = proxy.log.get(timeout=WAIT)
    assert log == ["start one", "start two", "done two", "done one", "start bad"]
    assert proxy.actor_ref.is_alive()  # an ask's error goes to the caller only


def test_plain_async_methods_still_hold_the_inbox(runtime: Runtime) -> None:
    proxy = Caller.start().proxy()
    held = proxy.serial("gate")
    with pytest.raises(pykka.Timeout):
        proxy.log.get(timeout=0.1)  # queued behind the awaiting method
    actor = proxy.actor_ref._actor_weakref()
    actor.actor_runtime.call_soon(actor.gates["gate"].set)
    assert held.get(timeout=WAIT) == "gate"


def test_concurrent_task_failing_from_a_tell_fails_the_actor(runtime: Runtime) -> None:
    ref = Caller.start()
    actor = ref._actor_weakref()
    ref.tell(pykka.messages.ProxyCall(attr_path=("place",), args=("bad",), kwargs={}))
    ref.proxy().open_gate("bad")
    assert actor.actor_terminated.get(timeout=WAIT).reason == "failure"
    assert actor.log[-1] == "failure bad call"


def test_pending_concurrent_calls_fail_with_actor_dead_when_it_stops(runtime: Runtime) -> None:
    proxy = Caller.start().proxy()
    pending = proxy.place("never")
    proxy.log.get(timeout=WAIT)
    proxy.actor_ref.stop(timeout=WAIT)
    with pytest.raises(ActorDeadError):
        pending.get(timeout=WAIT)


def test_concurrent_refuses_sync_functions() -> None:
    with pytest.raises(TypeError):
        concurrent(lambda: None)

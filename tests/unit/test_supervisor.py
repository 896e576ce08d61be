"""Supervisors: strategies, restart types, intensity, backoff, ordered shutdown, escalation."""

from __future__ import annotations

import asyncio
import queue
import random

import pytest
from pykka import ActorRegistry

from actors import AsyncioActor, Runtime
from actors.restart import Backoff, RestartIntensity
from actors.supervisor import ChildSpec, Supervisor, SupervisorGaveUp

WAIT = 5.0


@pytest.fixture
def runtime():
    rt = Runtime(name="supervision-test").make_default()
    yield rt
    rt.shutdown(timeout=WAIT)
    ActorRegistry.stop_all(timeout=WAIT)


class Child(AsyncioActor):
    """Reports start/stop to a thread-safe log; crashes or stops on request."""

    def __init__(self, name: str, log: queue.Queue[str], hang_on_stop: bool = False) -> None:
        super().__init__()
        self.name = name
        self.log = log
        self.hang_on_stop = hang_on_stop

    def on_start(self) -> None:
        self.log.put(f"start {self.name}")

    async def on_stop(self) -> None:
        self.log.put(f"stop {self.name}")
        if self.hang_on_stop:
            await asyncio.Event().wait()

    def on_receive(self, message: object) -> object:
        if message == "crash":
            raise RuntimeError(f"{self.name} crashed")
        if message == "exit":
            self.actor_ref.tell(_stop())
        return message


def _stop() -> object:
    from pykka import messages

    return messages._ActorStop()  # noqa: SLF001


def drain(log: queue.Queue[str], n: int) -> list[str]:
    return [log.get(timeout=WAIT) for _ in range(n)]


def specs(log: queue.Queue[str], restart: str = "permanent", names: str = "abc") -> list[ChildSpec]:
    return [ChildSpec(n, Child, (n, log), restart=restart) for n in names]


def refs(sup) -> dict[str, str]:  # noqa: ANN001
    return {c["id"]: c["ref"].actor_urn if c["ref"] else None for c in sup.which_children().get(timeout=WAIT)}


# -- pure arithmetic, exact numbers ------------------------------------------------


def test_restart_intensity_erlang_default_window() -> None:
    window = RestartIntensity(intensity=1, period=5.0)
    assert window.record(0.0) is True
    assert window.record(4.9) is False  # second restart inside 5 s
    fresh = RestartIntensity(intensity=1, period=5.0)
    assert fresh.record(0.0) is True
    assert fresh.record(5.0) is True  # the first one has left the window
    three = RestartIntensity(intensity=3, period=10.0)
    assert [three.record(t) for t in (0, 1, 2, 3)] == [True, True, True, False]


def test_backoff_doubles_to_max_and_jitters_with_seed() -> None:
    plain = Backoff(min=1.0, max=8.0)
    rng = random.Random(1)
    assert [plain.delay(n, rng) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    jittered = Backoff(min=1.0, max=8.0, random_factor=0.5)
    expected_rng = random.Random(7)
    expected = [min(8.0, 2.0**n) * (1 + expected_rng.random() * 0.5) for n in range(4)]
    rng = random.Random(7)
    assert [jittered.delay(n, rng) for n in range(4)] == expected
    assert Backoff().delay(3, rng) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"min": -1}, "backoff.min"), ({"min": 2, "max": 1}, "backoff.max"), ({"random_factor": 2}, "random_factor")],
)
def test_backoff_rejects_bad_values_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Backoff(**kwargs)


def test_child_spec_and_supervisor_validate() -> None:
    log: queue.Queue[str] = queue.Queue()
    with pytest.raises(ValueError, match="restart"):
        ChildSpec("x", Child, ("x", log), restart="sometimes")
    with pytest.raises(TypeError):
        ChildSpec("x", object)  # type: ignore[arg-type]


def test_supervisor_rejects_unknown_strategy(runtime: Runtime) -> None:
    with pytest.raises(ValueError, match="strategy"):
        Supervisor.start([], strategy="one_for_some")


# -- strategies ------------------------------------------------------------------


def test_children_start_in_order_and_stop_in_reverse(runtime: Runtime) -> None:
    log: queue.Queue[str] = queue.Queue()
    sup = Supervisor.start(specs(log))
    assert drain(log, 3) == ["start a", "start b", "start c"]
    assert sup.stop(timeout=WAIT)
    assert drain(log, 3) == ["stop c", "stop b", "stop a"]


def test_one_for_one_restarts_only_the_failed_child(runtime: Runtime) -> None:
    log: queue.Queue[str] = queue.Queue()
    sup = Supervisor.start(specs(log), intensity=5).proxy()
    drain(log, 3)
    before = refs(sup)
    sup.child("b").get(timeout=WAIT).tell("crash")
    assert drain(log, 1) == ["start b"]
    after = refs(sup)
    assert after["a"] == before["a"] and after["c"] == before["c"]
    assert after["b"] != before["b"]


def test_one_for_all_restarts_everyone(runtime: Runtime) -> None:
    log: queue.Queue[str] = queue.Queue()
    sup = Supervisor.start(specs(log), strategy="one_for_all", intensity=5).proxy()
    drain(log, 3)
    before = refs(sup)
    sup.child("b").get(timeout=WAIT).tell("crash")
    assert drain(log, 5) == ["stop c", "stop a", "start a", "start b", "start c"]
    after = refs(sup)
    assert all(after[k] != before[k] for k in "abc")


def test_rest_for_one_restarts_the_child_and_those_after_it(runtime: Runtime) -> None:
    log: queue.Queue[str] = queue.Queue()
    sup = Supervisor.start(specs(log), strategy="rest_for_one", intensity=5).proxy()
    drain(log, 3)
    before = refs(sup)
    sup.child("b").get(timeout=WAIT).tell("crash")
    assert drain(log, 3) == ["stop c", "start b", "start c"]
    after = refs(sup)
    assert after["a"] == before["a"] and after["b"] != before["b"] and after["c"] != before["c"]


# -- restart types -----------------------------------------------------------------


def test_permanent_child_is_restarted_after_a_normal_stop(runtime: Runtime) -> None:
    log: queue.Queue[str] = queue.Queue()
    sup = Supervisor.start(specs(log, "permanent", "a"), intensity=5).proxy()
    drain(log, 1)
    sup.child("a").get(timeout=WAIT).tell("exit")
    assert drain(log, 2) == ["stop a", "start a"]


def test_transient_child_restarts_on_failure_only(runtime: Runtime) -> None:
    log: queue.Queue[str] = queue.Queue()
    sup = Supervisor.start(specs(log, "transient", "a"), intensity=5).proxy()
    drain(log, 1)
    sup.child("a").get(timeout=WAIT).tell("crash")
    assert drain(log, 1) == ["start a"]
    sup.child("a").get(timeout=WAIT).tell("exit")
    assert drain(log, 1) == ["stop a"]
    sup.which_children().get(timeout=WAIT)  # the supervisor has handled the Terminated
    assert sup.which_children().get(timeout=WAIT)[0]["ref"] is None
    with pytest.raises(queue.Empty):
        log.get(timeout=0.2)


def test_temporary_child_is_never_restarted_and_forgotten(runtime: Runtime) -> None:
    log: queue.Queue[str] = queue.Queue()
    sup = Supervisor.start(specs(log, "temporary", "ab"), intensity=5).proxy()
    drain(log, 2)
    sup.child("a").get(timeout=WAIT).tell("crash")
    sup.which_children().get(timeout=WAIT)
    assert [c["id"] for c in sup.which_children().get(timeout=WAIT)] == ["b"]


# -- intensity, escalation, backoff, shutdown ------------------------------------------


class Parent(AsyncioActor):
    """Watches a supervisor and reports how it ended."""

    def __init__(self, out: queue.Queue[object]) -> None:
        super().__init__()
        self.out = out

    def watch_it(self, ref) -> None:  # noqa: ANN001
        self.watch(ref)

    def on_terminated(self, terminated) -> None:  # noqa: ANN001
        self.out.put(terminated)


def test_too_many_restarts_stop_children_and_fail_the_supervisor(runtime: Runtime) -> None:
    log: queue.Queue[str] = queue.Queue()
    out: queue.Queue[object] = queue.Queue()
    sup_ref = Supervisor.start(specs(log, names="ab"), intensity=1, period=60.0)
    Parent.start(out).proxy().watch_it(sup_ref).get(timeout=WAIT)
    sup = sup_ref.proxy()
    drain(log, 2)
    sup.child("a").get(timeout=WAIT).tell("crash")
    assert drain(log, 1) == ["start a"]  # first restart is within intensity
    sup.child("a").get(timeout=WAIT).tell("crash")
    assert drain(log, 1) == ["stop b"]  # second one: give up, stop the rest
    terminated = out.get(timeout=WAIT)
    assert terminated.reason == "failure"
    assert isinstance(terminated.exception, SupervisorGaveUp)
    assert not sup_ref.is_alive()


def test_escalation_parent_supervisor_restarts_the_child_supervisor(runtime: Runtime) -> None:
    log: queue.Queue[str] = queue.Queue()
    inner = ChildSpec("inner", Supervisor, (specs(log, names="x"),), {"intensity": 0})
    top = Supervisor.start([inner], intensity=3).proxy()
    assert drain(log, 1) == ["start x"]
    inner_ref = top.child("inner").get(timeout=WAIT)
    inner_ref.proxy().child("x").get(timeout=WAIT).tell("crash")  # intensity 0: inner gives up
    assert drain(log, 1) == ["start x"]  # top restarted inner, which started x again
    assert top.child("inner").get(timeout=WAIT).actor_urn != inner_ref.actor_urn


def test_backoff_delays_the_restart(runtime: Runtime) -> None:
    log: queue.Queue[str] = queue.Queue()
    sup = Supervisor.start(specs(log, names="a"), intensity=5, backoff=Backoff(min=0.3, max=1.0)).proxy()
    drain(log, 1)
    crashed_at = runtime.loop.time()
    sup.child("a").get(timeout=WAIT).tell("crash")
    assert drain(log, 1) == ["start a"]
    (restart_time, child_id), = sup.restarts.get(timeout=WAIT)
    assert child_id == "a"
    assert restart_time - crashed_at >= 0.3


def test_child_overrunning_its_shutdown_timeout_is_killed(runtime: Runtime) -> None:
    log: queue.Queue[str] = queue.Queue()
    slow = ChildSpec("slow", Child, ("slow", log, True), shutdown=0.2)
    sup_ref = Supervisor.start([ChildSpec("a", Child, ("a", log)), slow])
    drain(log, 2)
    slow_actor = sup_ref.proxy().child("slow").get(timeout=WAIT)._actor_weakref()
    assert sup_ref.stop(timeout=WAIT)
    assert drain(log, 2) == ["stop slow", "stop a"]  # reverse order; slow killed after 0.2 s
    assert slow_actor.actor_terminated.get(timeout=WAIT).reason == "killed"

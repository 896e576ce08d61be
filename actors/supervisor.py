"""OTP-style supervision for asyncio actors.

A ``Supervisor`` is itself an ``AsyncioActor``. It starts its children in
order, watches them, and when one stops it applies its strategy:

- ``one_for_one``: restart only that child;
- ``one_for_all``: stop the others (reverse order), restart all in order;
- ``rest_for_one``: stop the children started after it (reverse order),
  restart it and them in order.

Whether a stopped child is restarted depends on its restart type:
``permanent`` always, ``transient`` only after a failure, ``temporary`` never
(its spec is dropped). More than ``intensity`` restarts within ``period``
seconds make the supervisor give up: it stops all children in reverse order
and fails with ``SupervisorGaveUp``, which its own supervisor (if any) sees
as a child failure, so the problem escalates (Erlang's supervisor semantics).
Restarts can be delayed by a ``Backoff``. Shutdown stops children in reverse
start order, each within its ``shutdown`` timeout, killing it after that.

All supervisor code runs on the supervisor's runtime loop.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pykka
from pykka import ActorDeadError

from actors.actor import FAILURE, AsyncioActor, Terminated
from actors.future import as_asyncio_future
from actors.restart import Backoff, RestartIntensity

__all__ = ["ChildSpec", "Supervisor", "SupervisorGaveUp", "STRATEGIES", "RESTART_TYPES"]

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
RESTART_TYPES = ("permanent", "transient", "temporary")


class SupervisorGaveUp(RuntimeError):
    """Raised by a supervisor whose restart intensity was exceeded."""


@dataclass(frozen=True)
class ChildSpec:
    """How to start one child, and what to do when it stops."""

    id: str
    actor_class: type[AsyncioActor]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    restart: str = "permanent"
    shutdown: float = 5.0

    def __post_init__(self) -> None:
        if not (isinstance(self.actor_class, type) and issubclass(self.actor_class, AsyncioActor)):
            raise TypeError(f"child {self.id!r}: actor_class must be an AsyncioActor subclass")
        if self.restart not in RESTART_TYPES:
            raise ValueError(f"child {self.id!r}: restart must be one of {RESTART_TYPES}, got {self.restart!r}")
        if self.shutdown <= 0:
            raise ValueError(f"child {self.id!r}: shutdown must be > 0 seconds, got {self.shutdown}")

    def start(self) -> pykka.ActorRef[Any]:
        return self.actor_class.start(*self.args, **self.kwargs)


@dataclass(frozen=True, slots=True)
class _Restart:
    ids: tuple[str, ...]


class Supervisor(AsyncioActor):
    """Owns children, restarts them by strategy, gives up past its intensity."""

    def __init__(
        self,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: str = "one_for_one",
        intensity: int = 1,
        period: float = 5.0,
        backoff: Backoff | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        ids = [spec.id for spec in children]
        if len(set(ids)) != len(ids):
            raise ValueError(f"child ids must be unique, got {ids}")
        self.strategy = strategy
        self._specs: list[ChildSpec] = list(children)
        self._refs: dict[str, pykka.ActorRef[Any] | None] = {}
        self._intensity = RestartIntensity(intensity, period)
        self._backoff = backoff or Backoff()
        self._rng = random.Random(seed)
        self._expected_stops: set[str] = set()  # urns of children we stopped ourselves
        self.restarts: list[tuple[float, str]] = []
        """``(loop time, child id)`` of every restart, for tests and reports."""

    # -- lifecycle ----------------------------------------------------------

    def on_start(self) -> None:
        for spec in self._specs:
            self._start(spec)

    async def on_stop(self) -> None:
        await self._stop_children([spec.id for spec in self._specs])

    async def on_failure(self, *exc_info: Any) -> None:
        """A failing supervisor takes its children down with it, newest first."""
        await self._stop_children([spec.id for spec in self._specs])

    def _start(self, spec: ChildSpec) -> pykka.ActorRef[Any]:
        ref = spec.start()
        self._refs[spec.id] = ref
        self.watch(ref)
        return ref

    async def _stop_children(self, ids: Sequence[str]) -> None:
        """Stop the given children in reverse start order, each within its timeout."""
        order = [spec for spec in self._specs if spec.id in ids]
        for spec in reversed(order):
            ref = self._refs.get(spec.id)
            self._refs[spec.id] = None
            if ref is not None:
                await self._shutdown(ref, spec.shutdown)

    async def _shutdown(self, ref: pykka.ActorRef[Any], timeout: float) -> None:
        actor = ref._actor_weakref()  # noqa: SLF001
        self._expected_stops.add(ref.actor_urn)
        try:
            ref.stop(block=False)
        except ActorDeadError:
            pass
        if actor is None:
            return
        done = as_asyncio_future(actor.actor_terminated)
        try:
            await asyncio.wait_for(done, timeout)
        except TimeoutError:
            actor.kill()
            await asyncio.wait_for(as_asyncio_future(actor.actor_terminated), timeout)

    # -- reacting to children ---------------------------------------------------

    async def on_terminated(self, terminated: Terminated) -> None:
        urn = terminated.actor_ref.actor_urn
        if urn in self._expected_stops:
            self._expected_stops.discard(urn)
            return
        child_id = next((cid for cid, ref in self._refs.items() if ref is not None and ref.actor_urn == urn), None)
        if child_id is None:
            return  # not (or no longer) ours
        self._refs[child_id] = None
        spec = self._spec(child_id)
        if spec.restart == "temporary":
            self._specs.remove(spec)
            return
        if spec.restart == "transient" and terminated.reason != FAILURE:
            return
        now = self.loop.time()
        if not self._intensity.record(now):
            await self._stop_children([s.id for s in self._specs])
            raise SupervisorGaveUp(
                f"child {child_id!r} stopped ({terminated.reason}) more than "
                f"{self._intensity.intensity} time(s) in {self._intensity.period} s"
            )
        ids = self._affected(child_id)
        await self._stop_children([cid for cid in ids if cid != child_id])
        delay = self._backoff.delay(self._intensity.recent(now) - 1, self._rng)
        if delay > 0:
            self.loop.call_later(delay, self._tell_self, _Restart(tuple(ids)))
        else:
            self._restart(ids)

    def _affected(self, child_id: str) -> list[str]:
        ids = [spec.id for spec in self._specs]
        if self.strategy == "one_for_one":
            return [child_id]
        if self.strategy == "one_for_all":
            return ids
        return ids[ids.index(child_id) :]

    def _restart(self, ids: Sequence[str]) -> None:
        for spec in self._specs:
            if spec.id in ids and self._refs.get(spec.id) is None:
                self._start(spec)
                self.restarts.append((self.loop.time(), spec.id))

    def _tell_self(self, message: Any) -> None:
        try:
            self.actor_ref.tell(message)
        except ActorDeadError:
            pass

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Restart):
            self._restart(message.ids)
            return None
        return super().on_receive(message)

    def _spec(self, child_id: str) -> ChildSpec:
        for spec in self._specs:
            if spec.id == child_id:
                return spec
        raise KeyError(f"no child {child_id!r}")

    # -- the public API (call through a proxy) -----------------------------------

    def which_children(self) -> list[dict[str, Any]]:
        """One entry per child spec, in start order: id, ref, alive, restart type."""
        return [
            {
                "id": spec.id,
                "ref": self._refs.get(spec.id),
                "alive": bool(self._refs.get(spec.id) and self._refs[spec.id].is_alive()),
                "restart": spec.restart,
            }
            for spec in self._specs
        ]

    def child(self, child_id: str) -> pykka.ActorRef[Any] | None:
        """The running ref of a child, or ``None`` while it is not running."""
        self._spec(child_id)
        return self._refs.get(child_id)

    def start_child(self, spec: ChildSpec) -> pykka.ActorRef[Any]:
        """Add a child at the end of the start order and start it."""
        if any(s.id == spec.id for s in self._specs):
            raise ValueError(f"child id {spec.id!r} already exists")
        self._specs.append(spec)
        return self._start(spec)

    async def terminate_child(self, child_id: str) -> None:
        """Stop a child and keep its spec (``restart_child`` starts it again)."""
        self._spec(child_id)
        await self._stop_children([child_id])

    def restart_child(self, child_id: str) -> pykka.ActorRef[Any]:
        spec = self._spec(child_id)
        if self._refs.get(child_id) is not None:
            raise RuntimeError(f"child {child_id!r} is running")
        return self._start(spec)

    async def delete_child(self, child_id: str) -> None:
        """Stop a child and forget its spec."""
        spec = self._spec(child_id)
        await self._stop_children([child_id])
        self._specs.remove(spec)
        self._refs.pop(child_id, None)

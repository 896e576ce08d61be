"""The fault injector: an actor that applies a fault plan to a running deployment.

The experiment starts it beside the deployment (same runtime), then drives it::

    plan = load_plan("silc-crash")
    injector = FaultInjector.start(plan, deployment, timeline=timeline).proxy()   # plan resolved here
    await injector.begin()                      # time 0 of the plan: "at" faults are armed
    await injector.call_started(n)              # before sending call n's INVITE: "at_call" faults
    await injector.call_established(n)          #   fire here, and the ask returns once applied
    injector.call_ended(n, "completed")         # or "dropped" / "hanging"
    report = await injector.finish()            # revert what is still applied; timeline + verdict

Every action is recorded on the :class:`~faults.timeline.Timeline` with its time and the fault's
report. For a crash or a hang, a :class:`~faults.seams.DeadHopTap` goes on every other open
endpoint of the process, and the first datagram sent to the failed instance is recorded as
``detection_triggered``. Hop supervisors and the experiment record ``detected``,
``failover_complete`` and the rest on the same timeline (``timeline.record`` from any thread, or
``injector.record`` through the actor).

All methods run on the injector's loop (the actor's runtime). Faults act only through seams,
sockets and actor kills (:mod:`faults.kinds`); a fault that fails to apply is recorded as
``fault_failed`` and does not stop the run.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any

from actors.actor import AsyncioActor
from actors.clock import Clock, LoopClock
from actors.logs import get_logger
from actors.transport import Address, UdpEndpoint, open_endpoints
from faults.kinds import FAILURE_KINDS, Fault
from faults.plan import FaultPlan, ResolvedFault, resolve
from faults.seams import DeadHopTap
from faults.targets import FaultContext, instance_addresses, instance_endpoints, on_loop
from faults.timeline import DETECTION_TRIGGERED, FAULT_INJECTED, FAULT_REVERTED, Timeline
from faults.verdict import Check, evaluate
from nf_modules.deployment import ImsDeployment

__all__ = ["FAULT_FAILED", "FaultInjector"]

FAULT_FAILED = "fault_failed"


class FaultInjector(AsyncioActor):
    """Applies ``plan`` to ``deployment``. See the module docstring."""

    def __init__(
        self,
        plan: FaultPlan,
        deployment: ImsDeployment,
        *,
        timeline: Timeline | None = None,
        time_scale: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        super().__init__()
        # Resolving here makes a bad plan fail in the caller of start(), before anything runs.
        self.plan = plan
        self.deployment = deployment
        self.resolved: list[ResolvedFault] = resolve(plan, deployment.topology, local=set(deployment.refs))
        self.timeline = timeline
        self._time_scale = time_scale
        self.clock = clock
        self.ctx: FaultContext | None = None
        self.log = get_logger("FaultInjector", instance=plan.name)
        self._fired: set[int] = set()
        self._active: dict[int, Fault] = {}  # id(fault) -> fault, while applied
        self._taps: dict[int, list[tuple[UdpEndpoint, DeadHopTap]]] = {}
        self._timers: list[Any] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._begun = False

    async def on_start(self) -> None:
        if self.clock is None:
            self.clock = LoopClock(self.loop, time_scale=self._time_scale)
        if self.timeline is None:
            self.timeline = Timeline(self.clock)
        self.ctx = FaultContext(self.deployment, self.clock, self.timeline, self.loop)

    def on_stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for task in self._tasks:
            task.cancel()

    # ------------------------------------------------------------------ driving (asks)

    def begin(self) -> None:
        """Start the plan's clock: time-triggered faults are armed relative to now."""
        if self._begun:
            return
        self._begun = True
        self.timeline.start()  # type: ignore[union-attr]
        for rf in self.resolved:
            if rf.spec.at_s is not None:
                self._timers.append(self.clock.call_later(rf.spec.at_s, self._due_apply, rf))  # type: ignore[union-attr]

    async def call_started(self, call: int) -> list[dict[str, Any]]:
        """Call ``call`` (1, 2, ...) is about to send its INVITE: apply faults triggered by it."""
        self.timeline.call_started(call)  # type: ignore[union-attr]
        return await self._on_call(call, "started")

    async def call_established(self, call: int) -> list[dict[str, Any]]:
        self.timeline.call_established(call)  # type: ignore[union-attr]
        return await self._on_call(call, "established")

    def call_ended(self, call: int, outcome: str, **details: Any) -> None:
        self.timeline.call_ended(call, outcome, **details)  # type: ignore[union-attr]

    def record(self, event: str, **details: Any) -> None:
        self.timeline.record(event, **details)  # type: ignore[union-attr]

    def get_timeline(self) -> Timeline:
        return self.timeline  # type: ignore[return-value]

    def active_faults(self) -> list[dict[str, Any]]:
        return [f.describe() for f in self._active.values()]

    async def apply_now(self, index: int) -> list[dict[str, Any]]:
        """Apply the plan's fault ``index`` at once, whatever its trigger (for tests and tools)."""
        return await self._apply(self.resolved[index])

    async def revert_all(self, *, at_end: bool = False) -> list[dict[str, Any]]:
        """Revert every applied fault. ``at_end``: the run is over, so a crashed module whose
        fault lasts "until the end" is left down (a crash's revert restarts it)."""
        reports = []
        for fault in list(self._active.values()):
            reports.append(await self._revert(fault, restart=not (at_end and fault.kind == "crash")))
        return reports

    async def collect_from_modules(self, *, mrf_dialogs: bool = True) -> dict[str, Any]:
        """Put what the modules know on the timeline: their failover logs
        (``ImsDeployment.failover_events``) and, with ``mrf_dialogs``, the MRF dialogs still
        Connected (call it after every call has ended: those are the hanging ones)."""
        timeline = self.timeline
        assert timeline is not None
        out: dict[str, Any] = {"module_events": 0}
        events = getattr(self.deployment, "failover_events", None)
        if events is not None:
            out["module_events"] = timeline.import_module_events(await events())
        if mrf_dialogs:
            connected = 0
            for nf in self.deployment.topology.by_kind("mrfc"):
                ref = self.deployment.refs.get(nf.name)
                if ref is not None and ref.is_alive():
                    connected += (await ref.proxy().get_dialog_states()).get("Connected", 0)
            timeline.hanging_mrf_dialogs(connected)
            out["hanging_mrf_dialogs"] = connected
        return out

    async def finish(self, checks: list[Check] | tuple[Check, ...] = ()) -> dict[str, Any]:
        """Revert what is still applied, remove the taps; the run's timeline, results and verdict."""
        for timer in self._timers:
            timer.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.revert_all(at_end=True)
        for key in list(self._taps):
            await self._remove_taps(key)
        timeline = self.timeline
        assert timeline is not None
        results = timeline.results()
        verdict = evaluate((*self.plan.checks, *checks), results)
        return {"plan": self.plan.name, "timeline": timeline.as_dict(), "results": results,
                "verdict": verdict.as_dict()}

    # ------------------------------------------------------------------ internals (injector loop)

    def _run_task(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Timer callbacks: the fault's time is the deadline (read now), not when the task gets to run.
    def _due_apply(self, rf: ResolvedFault) -> None:
        self._run_task(self._apply(rf, at=self.timeline.now()))  # type: ignore[union-attr]

    def _due_revert(self, fault: Fault) -> None:
        self._run_task(self._revert(fault, at=self.timeline.now()))  # type: ignore[union-attr]

    async def _on_call(self, call: int, event: str) -> list[dict[str, Any]]:
        reports: list[dict[str, Any]] = []
        for rf in self.resolved:
            if rf.spec.at_call == call and rf.spec.on == event:
                reports.extend(await self._apply(rf))
        return reports

    async def _apply(self, rf: ResolvedFault, at: float | None = None) -> list[dict[str, Any]]:
        if rf.spec.index in self._fired:
            return []
        self._fired.add(rf.spec.index)
        ctx, timeline = self.ctx, self.timeline
        assert ctx is not None and timeline is not None
        reports = []
        for fault in rf.faults:
            key = id(fault)
            when = timeline.now() if at is None else at
            if fault.kind in FAILURE_KINDS and fault.instance is not None:
                # Taps first (same loop: nothing is sent in between), so the first datagram to
                # the failed instance after the fault cannot be missed.
                own = {id(e) for e in instance_endpoints(self.deployment, fault.instance)}
                dead = instance_addresses(self.deployment, fault.instance)
                await self._install_taps(key, dead, own, fault.describe())
            try:
                report = await fault.apply(ctx)
            except Exception as error:  # noqa: BLE001  (recorded; the run goes on)
                self.log.exception("fault_apply_failed", fault=fault.describe())
                await self._remove_taps(key)
                timeline.record(FAULT_FAILED, fault=rf.spec.index, error=repr(error), **fault.describe())
                reports.append({"error": repr(error), **fault.describe()})
                continue
            timeline.record(FAULT_INJECTED, when, fault=rf.spec.index, **report)
            self._active[key] = fault
            reports.append(report)
            if rf.spec.duration_s is not None:
                self._timers.append(self.clock.call_later(rf.spec.duration_s, self._due_revert, fault))  # type: ignore[union-attr]
        return reports

    async def _revert(self, fault: Fault, *, restart: bool = True, at: float | None = None) -> dict[str, Any]:
        if self._active.pop(id(fault), None) is None:
            return {}
        await self._remove_taps(id(fault))
        try:
            if restart:
                report = await fault.revert(self.ctx)  # type: ignore[arg-type]
            else:
                fault.applied = False
                report = {**fault.describe(), "left_down": True}
        except Exception as error:  # noqa: BLE001
            self.log.exception("fault_revert_failed", fault=fault.describe())
            report = {"error": repr(error), **fault.describe()}
        self.timeline.record(FAULT_REVERTED, at, **report)  # type: ignore[union-attr]
        return report

    async def _install_taps(self, key: int, dead: set[Address], own: set[int], fault: dict[str, Any]) -> None:
        timeline = self.timeline
        assert timeline is not None
        lock = threading.Lock()
        seen = [False]

        def first(name: str, addr: Address, data: bytes) -> None:  # on the sender's loop thread
            with lock:
                if seen[0]:
                    return
                seen[0] = True
            line = data.split(b"\r\n", 1)[0][:120].decode("utf-8", "replace")
            timeline.record(DETECTION_TRIGGERED, sender=name, to=list(addr[:2]), first_line=line,
                            **{k: v for k, v in fault.items() if k in ("kind", "instance")})

        taps = []
        for endpoint in open_endpoints():
            if id(endpoint) in own or tuple(endpoint.local_address[:2]) in dead:
                continue
            if endpoint.loop.is_closed():  # left open by an earlier run whose loop has ended
                continue
            tap = DeadHopTap(dead, endpoint.name or "?", first)
            await on_loop(endpoint.loop, functools.partial(endpoint.add_seam, tap, tap=True))
            taps.append((endpoint, tap))
        self._taps[key] = taps

    async def _remove_taps(self, key: int) -> None:
        for endpoint, tap in self._taps.pop(key, []):
            if not endpoint.closing and not endpoint.loop.is_closed():
                await on_loop(endpoint.loop, endpoint.remove_seam, tap)

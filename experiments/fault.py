"""``run.py fault`` / ``experiments.run_fault``: a fault plan against the emulated IMS while calls run.

One run (``004`` VIII-B): deploy the topology in this process (every module an actor on
loopback, ephemeral ports unless told otherwise; the mode ``baseline`` | ``refactored`` written
into the topology), register the UE pool's users (the pool carries real RTP through the MRFP
when it can), then place the plan's calls: a new call every ``load.call_interval_s`` (the
paper's "one call added every second"), each held ``load.call_hold_s``, ``load.calls`` of them,
every call between its own pair of users. Before each INVITE the :class:`FaultInjector` hears
``call_started(n)``: a fault triggered by the Nth call is applied there, before the INVITE
leaves. Call outcomes go on the injector's :class:`~faults.timeline.Timeline`: completed (our
BYE answered 200), dropped (no 2xx, or torn down by the network) or hanging (the caller's side
is over but the callee still holds the call).

After the last call ended (bounded by ``call_timeout``) the run settles (the callee legs and the
MRF dialogs stop changing, bounded), then the injector collects the modules' failover logs and
the MRF dialogs still Connected (the hanging ones), the charging taps (PGW and PCRF when the
topology has them), and judges the plan's steady-state checks, stated up front. In baseline
mode the P-CSCF's give-up (``busy_everywhere``: 5 retries, then 600) is the failed hop being
declared, so it counts as the detection.

The figures (:meth:`faults.timeline.Timeline.results`): ``fault_at_s``, ``detection_s``,
``failover_s``, ``recovery_s``, ``calls_in_setup_at_fault``, ``calls_in_setup_completed``,
``calls_dropped``, ``hanging_mrf_dialogs``, ``charging_discrepancy_bytes`` (issue 5), plus the
verdict, next to the paper's (detection 2 s, failover about 0.5 s after it, 2.5 s in all;
baseline: every call dropped after 5 retries, hanging media, OpenStack-style recovery in ~26 s).

Threads: the caller's thread waits in ``Runtime.run``; deployment, injector, calls and the live
timeline run on the runtime's loop. ``stop`` (Ctrl-C in the CLI) ends the schedule early; what
was measured is written, marked interrupted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors import Runtime, Topology
from actors.topology import MODES
from experiments.load import DEFAULT_TOPOLOGY, LoadConfig, _overrides, media_supported, resolve_topology
from experiments.progress import Progress
from experiments.results import RunResult, prepare_results_dir, run_modes, write_json, write_results
from faults.plan import FaultPlan, PlanError, load_plan, resolve
from faults.timeline import (
    CALL_ENDED,
    CALL_ESTABLISHED,
    CALL_STARTED,
    DETECTED,
    FAULT_INJECTED,
    RESULT_KEYS,
    RUN_STARTED,
    Timeline,
)

__all__ = [
    "FaultConfig",
    "Prepared",
    "Schedule",
    "default_topology",
    "drive",
    "paper_rows",
    "plan_schedule",
    "prepare",
    "prepare_run",
    "run_fault",
    "run_fault_compare",
    "with_at_call",
]

ROOT = Path(__file__).resolve().parent.parent
CHARGING_TOPOLOGY = ROOT / "topologies" / "charging.toml"
MAX_CALLS = 1000  # each call has its own pair of users: keep the registration storm bounded
#: Module failover-log events shown live and put on the report's timeline.
LIVE_MODULE_EVENTS = ("hop_failed", "failover_complete",
                      "baseline_retry", "busy_everywhere", "release_bye", "announce", "replayed")
#: Figures that are None when the run had no tap for them (not a failure of the check).
NOT_MEASURED_WHEN_NONE = ("charging_discrepancy_bytes", "hanging_mrf_dialogs")
#: Timeline events left out of the report's timeline (one per call: in samples.jsonl instead).
PER_CALL = (CALL_STARTED, CALL_ESTABLISHED, CALL_ENDED)


def default_topology() -> Path:
    """The charging topology (default.toml plus PGW and PCRF) when this build has it."""
    return CHARGING_TOPOLOGY if CHARGING_TOPOLOGY.is_file() else DEFAULT_TOPOLOGY


@dataclass
class FaultConfig:
    """Everything a fault run depends on (``to_dict`` goes to config.json)."""

    plan: str = "silc-crash"  # a built-in plan name or a plan file
    mode: str | None = None  # None: the topology's own
    topology: str = field(default_factory=lambda: str(default_topology()))
    seed: int | None = None  # None: the plan's
    time_scale: float = 1.0
    media: bool | None = None  # None: when the UE pool supports it
    ephemeral_ports: bool = True
    # Overrides of the plan's [load] and of its call-triggered faults (short runs, tests).
    calls: int | None = None
    interval: float | None = None
    hold: float | None = None
    at_call: int | None = None
    call_timeout: float = 16.0  # real seconds each final response (INVITE, BYE) is waited for
    settle_timeout: float = 5.0  # real seconds, at most, for the callee legs and MRF dialogs to settle

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in MODES:
            raise PlanError(f"--mode: expected baseline or refactored, got {self.mode!r}")
        for name in ("calls", "at_call"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise PlanError(f"--{name.replace('_', '-')}: expected a whole number >= 1, got {value!r}")
        for name in ("interval", "time_scale", "call_timeout", "settle_timeout"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 < value < math.inf):
                raise PlanError(f"--{name.replace('_', '-')}: expected a number > 0, got {value!r}")
        if self.hold is not None and (isinstance(self.hold, bool) or not isinstance(self.hold, (int, float))
                                      or not 0 <= self.hold < math.inf):
            raise PlanError(f"--hold: expected a number of seconds >= 0, got {self.hold!r}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class Schedule:
    """When each call starts (emulated seconds from the run's start) and how long it is held."""

    starts: tuple[float, ...]
    hold: float

    @property
    def duration(self) -> float:
        return (self.starts[-1] if self.starts else 0.0) + self.hold


# ----------------------------------------------------------------------------- preparing


def _load_number(plan: FaultPlan, key: str, default: float, *, integer: bool = False, minimum: float = 0.0,
                 strict: bool = False) -> Any:
    value = plan.load.get(key, default)
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum) and (not integer or float(value).is_integer())
    if not ok:
        what = "a whole number >= 1" if integer else f"a number of seconds {'>' if strict else '>='} {minimum:g}"
        raise PlanError(f"{plan.source}: load.{key}: expected {what}, got {value!r}")
    return int(value) if integer else float(value)


def plan_schedule(plan: FaultPlan, config: FaultConfig) -> Schedule:
    """The calls the plan's ``[load]`` asks for, with the config's overrides."""
    interval = config.interval if config.interval is not None else _load_number(plan, "call_interval_s", 1.0, strict=True)
    calls = config.calls if config.calls is not None else _load_number(plan, "calls", 40, integer=True, minimum=1)
    hold = config.hold if config.hold is not None else _load_number(plan, "call_hold_s", 30.0)
    if calls > MAX_CALLS:
        raise PlanError(f"{plan.source}: load.calls: at most {MAX_CALLS} calls per fault run, got {calls}")
    return Schedule(tuple(round(i * interval, 9) for i in range(calls)), float(hold))


def with_at_call(plan: FaultPlan, at_call: int) -> FaultPlan:
    """``plan`` with every call-triggered fault moved to call ``at_call``."""
    faults = tuple(dataclasses.replace(f, at_call=at_call) if f.at_call is not None else f for f in plan.faults)
    if faults == plan.faults:
        raise PlanError(f"{plan.source}: --at-call: the plan has no call-triggered fault (at_call) to move")
    return dataclasses.replace(plan, faults=faults)


@dataclass(frozen=True)
class Prepared:
    plan: FaultPlan
    topology: Topology
    schedule: Schedule
    media: bool
    load: LoadConfig  # what experiments.load needs to build the modules' arguments


def prepare(config: FaultConfig) -> Prepared:
    """Load and check everything before the run: the plan (and its ``[load]``), the topology,
    the plan against the topology, the schedule against the plan's call triggers. Raises
    :class:`~faults.plan.PlanError` or :class:`~actors.topology.TopologyError` naming the field."""
    plan = load_plan(config.plan)
    if config.seed is not None:
        plan = dataclasses.replace(plan, seed=config.seed)
    if config.at_call is not None:
        plan = with_at_call(plan, config.at_call)
    return prepare_run(plan, plan_schedule(plan, config), config)


def prepare_run(plan: FaultPlan, schedule: Schedule, config: FaultConfig) -> Prepared:
    """Check ``plan`` and ``schedule`` against the config's topology (see :func:`prepare`)."""
    if not schedule.starts:
        raise PlanError(f"{plan.source}: load.calls: the run places no call")
    if len(schedule.starts) > MAX_CALLS:
        raise PlanError(f"{plan.source}: load.calls: at most {MAX_CALLS} calls per fault run, got {len(schedule.starts)}")
    for spec in plan.faults:
        if spec.at_call is not None and spec.at_call > len(schedule.starts):
            raise PlanError(f"{plan.source}: {spec.path}.at_call: call {spec.at_call} is never placed: the run places "
                            f"{len(schedule.starts)} calls (load.calls, --calls)")
    supported = media_supported()
    if config.media and not supported:
        raise PlanError("--media: this build's UE pool does not carry media (no media=True option)")
    media = supported if config.media is None else bool(config.media)
    load = LoadConfig(users=max(2, 2 * len(schedule.starts)), mode=config.mode, seed=plan.seed,
                      time_scale=config.time_scale, media=media, topology=config.topology,
                      ephemeral_ports=config.ephemeral_ports)
    topology = resolve_topology(load)
    resolve(plan, topology, local={nf.name for nf in topology})  # bad targets and links stop here
    return Prepared(plan, topology, schedule, media, load)


# ----------------------------------------------------------------------------- the run


@dataclass
class _Call:
    n: int
    caller: str
    callee: str
    started: float  # timeline time
    result: Any = None
    error: str | None = None
    ended: float | None = None


async def drive(prepared: Prepared, config: FaultConfig, progress: Progress, stop: threading.Event) -> dict[str, Any]:
    """Deploy, register, run the schedule with the injector, settle, collect (on the runtime's loop)."""
    from faults.injector import FaultInjector
    from nf_modules.deployment import deploy

    loop = asyncio.get_running_loop()
    topology, schedule, plan, scale = prepared.topology, prepared.schedule, prepared.plan, config.time_scale
    ims = await deploy(topology, overrides=_overrides(topology, prepared.load, prepared.media))
    out: dict[str, Any] = {"interrupted": False}
    injector_ref = None
    try:
        pool = ims.proxy(ims.first("ue_pool"))
        progress.event(0.0, f"{len(ims.refs)} modules up ({topology.mode}); registering {prepared.load.users} users")
        registration = await pool.register_all(concurrency=50)
        users = sorted(await pool.registered_users())
        if len(users) < prepared.load.users:
            raise RuntimeError(f"only {len(users)} of {prepared.load.users} users registered "
                               f"({registration}); is the P-CSCF/S-CSCF path up?")
        injector_ref = FaultInjector.start(plan, ims, time_scale=scale)
        injector = injector_ref.proxy()
        timeline: Timeline = await injector.get_timeline()
        out["timeline"] = timeline
        await injector.begin()
        progress.event(0.0, f"plan {plan.name}: {len(schedule.starts)} calls, one every "
                            f"{_interval(schedule):g} s, held {schedule.hold:g} s")
        live = _LiveTimeline(timeline, progress, ims)
        watcher = loop.create_task(live.run())
        out["watcher"] = watcher
        calls: dict[int, _Call] = {}
        tasks: set[asyncio.Task[None]] = set()
        t0 = loop.time()

        async def one(call: _Call) -> None:
            try:
                call.result = await pool.call(call.caller, call.callee, hold=schedule.hold, timeout=config.call_timeout)
            except Exception as error:  # noqa: BLE001  (the pool died or timed out: the call failed)
                call.error = repr(error)
            call.ended = timeline.now()
            result = call.result
            if result is not None and 200 <= result.status < 300 and result.answered_after is not None:
                timeline.call_established(call.n, at=call.started + result.answered_after * scale)
            live.finished += 1
            live.ok += bool(result is not None and result.completed and result.ended_by == "caller")

        watch_established = any(s.on == "established" and s.at_call is not None for s in plan.faults)
        poller = loop.create_task(_poll_established(pool, calls, injector)) if watch_established else None
        try:
            for n, at in enumerate(schedule.starts, 1):
                while (delay := at / scale - (loop.time() - t0)) > 0 and not stop.is_set():
                    await asyncio.sleep(min(delay, 0.1))
                if stop.is_set():
                    out["interrupted"] = True
                    progress.event(timeline.now() - timeline.origin, "interrupted: ending the run")
                    break
                await injector.call_started(n)
                call = _Call(n, users[2 * n - 2], users[2 * n - 1], timeline.now())
                calls[n] = call
                live.started += 1
                task = loop.create_task(one(call))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            # every call's own bound: its INVITE and BYE each wait call_timeout, the hold between
            bound = (schedule.hold / scale + 2 * config.call_timeout + 2.0) if not out["interrupted"] else 5.0
            deadline = loop.time() + bound
            while tasks and loop.time() < deadline:
                await asyncio.wait(set(tasks), timeout=min(0.2, max(0.0, deadline - loop.time())))
                if stop.is_set() and not out["interrupted"]:
                    out["interrupted"] = True
                    deadline = min(deadline, loop.time() + 5.0)
            for task in list(tasks):
                task.cancel()
            out["unfinished"] = len(tasks)
            hanging = await _settle(ims, pool, calls, config.settle_timeout)
        finally:
            if poller is not None:
                poller.cancel()
        for n, call in sorted(calls.items()):
            outcome = _outcome(call, hanging)
            timeline.call_ended(n, outcome, at=call.ended if call.ended is not None else timeline.now(),
                                status=call.result.status if call.result is not None else 0)
        if prepared.media:
            try:
                out["media"] = await pool.get_media_stats()
            except Exception as error:  # noqa: BLE001
                out["media_error"] = repr(error)
        out["collected"] = await injector.collect_from_modules()
        if topology.mode == "baseline":
            give_up = timeline.first("busy_everywhere")
            if give_up is not None:  # the P-CSCF declaring the S-CSCF busy is the baseline's detection
                timeline.record(DETECTED, give_up.at, by="pcscf", how="5 retries, then 600 Busy Everywhere")
        out["charging"] = await _charging(ims, timeline) if prepared.media else {"note": "no media in this run"}
        live.flush()
        watcher.cancel()
        report = await injector.finish()
        out["report"] = report
        out["calls"] = calls
        out["hanging_callee_legs"] = sorted(hanging)
        out["duration_s"] = round(timeline.now() - timeline.origin, 3)
        return out
    finally:
        if out.get("watcher") is not None:
            out.pop("watcher").cancel()
        if injector_ref is not None:
            injector_ref.stop(block=False)
        await ims.stop()
        out["leaked_endpoints"] = _close_leftovers(loop)


def _close_leftovers(loop: asyncio.AbstractEventLoop) -> list[str]:
    """Close the UDP endpoints still open on this run's loop once every module has stopped
    (something the run started left them open); their names, for the summary. Left open they
    would outlive the loop in the transport's registry, where the next run's injector finds them."""
    from actors.transport import open_endpoints

    leftovers = [e for e in open_endpoints() if e.loop is loop and not e.closing]
    for endpoint in leftovers:
        endpoint.close()
    return [f"{e.name or '?'} {e.local_address[0]}:{e.local_address[1]}" for e in leftovers]


def _interval(schedule: Schedule) -> float:
    return schedule.starts[1] - schedule.starts[0] if len(schedule.starts) > 1 else 0.0


def _outcome(call: _Call, hanging: set[str]) -> str:
    """completed: our BYE got its 200; hanging: the callee still holds the call after the caller's
    side ended; dropped: anything else (no 2xx, torn down by the network, no answer to our BYE)."""
    if call.callee in hanging:
        return "hanging"
    result = call.result
    return "completed" if result is not None and result.completed and result.ended_by == "caller" else "dropped"


async def _callee_legs(pool: Any, callees: set[str]) -> set[str]:
    return {leg["user"] for leg in await pool.active_calls() if leg["role"] == "uas" and leg["user"] in callees}


async def _connected(ims: Any) -> int:
    total = 0
    for nf in ims.topology.by_kind("mrfc"):
        ref = ims.refs.get(nf.name)
        if ref is not None and ref.is_alive():
            total += (await ref.proxy().get_dialog_states()).get("Connected", 0)
    return total


async def _settle(ims: Any, pool: Any, calls: dict[int, _Call], timeout: float) -> set[str]:
    """Wait (at most ``timeout`` real seconds) until the callee legs still up and the MRF dialogs
    still Connected stop changing for half a second; the callees still in their call."""
    callees = {c.callee for c in calls.values()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: tuple[Any, ...] | None = None
    stable_since = loop.time()
    while True:
        legs = await _callee_legs(pool, callees)
        state = (frozenset(legs), await _connected(ims))
        if state != last:
            last, stable_since = state, loop.time()
        elif loop.time() - stable_since >= 0.5:
            return legs
        if loop.time() >= deadline:
            return legs
        await asyncio.sleep(0.1)


async def _poll_established(pool: Any, calls: dict[int, _Call], injector: Any) -> None:
    """For faults triggered by the Nth call being established: tell the injector as each caller's
    leg is confirmed (polled every 20 ms; ``pool.call`` only returns when the call is over)."""
    told: set[int] = set()
    while True:
        confirmed = {leg["user"] for leg in await pool.active_calls() if leg["role"] == "uac" and leg["state"] == "confirmed"}
        for n, call in list(calls.items()):
            if n not in told and call.caller in confirmed:
                told.add(n)
                await injector.call_established(n)
        await asyncio.sleep(0.02)


async def _charging(ims: Any, timeline: Timeline) -> dict[str, Any] | None:
    """The charging taps' totals per subscriber, on the timeline: what the MRF side sent towards
    each subscriber (the MRF's report to the PCRF, or what reached the PGW's bearer) and what the
    PGW delivered and charged. ``None`` when the topology has no PGW; a note when no bearer
    carried media (the PGW is not in this build's media path)."""
    pgws = ims.topology.by_kind("pgw")
    pcrfs = ims.topology.by_kind("pcrf")
    if not pgws:
        return None
    pgw: dict[str, dict[str, Any]] = {}
    for nf in pgws:
        if nf.name in ims.refs:
            pgw.update(await ims.proxy(nf.name).get_charging())
    pcrf: dict[str, Any] = {}
    if pcrfs and pcrfs[0].name in ims.refs:
        pcrf = await ims.proxy(pcrfs[0].name).get_charging()
    if not pgw:
        return {"note": "no PGW bearer carried media in this run (the PGW is not in the media path)", "pcrf": pcrf}
    usage = pcrf.get("usage", {})
    mrf = {s: int(usage.get(s, {}).get("mrf", {}).get("bytes", b["charged_bytes"] + b["dropped_bytes"]))
           for s, b in pgw.items()}
    charged = {s: int(b["charged_bytes"]) for s, b in pgw.items()}
    timeline.charging({"mrf": mrf, "pgw": charged})
    return {"pgw": pgw, "pcrf": pcrf}


class _LiveTimeline:
    """Puts the timeline's events (and the modules' failover events, polled) on the progress
    display as they happen (a task on the runtime's loop)."""

    def __init__(self, timeline: Timeline, progress: Progress, ims: Any) -> None:
        self.timeline, self.progress, self.ims = timeline, progress, ims
        self.shown: set[int] = set()
        self.module_seen: set[tuple[Any, ...]] = set()
        self.started = self.finished = self.ok = 0

    async def run(self) -> None:
        tick = 0
        while True:
            await asyncio.sleep(0.25)
            self.flush()
            tick += 1
            if tick % 4 == 0:
                await self._modules()
                t = self.timeline.now() - self.timeline.origin
                self.progress.update(elapsed=t, calls=f"{self.ok} completed / {self.started} placed",
                                     active=self.started - self.finished)

    def flush(self) -> None:
        origin = self.timeline.origin
        for e in self.timeline.events():
            if id(e) in self.shown or e.event in PER_CALL or e.event == RUN_STARTED:
                continue
            if "module" in e.details and e.event != "module_detection_triggered":
                continue  # a module's failover log: shown live by _modules
            self.shown.add(id(e))
            self.progress.event(e.at - origin, _describe(e.event, e.details))

    async def _modules(self) -> None:
        try:
            events = await asyncio.wait_for(self.ims.failover_events(), 1.0)
        except (Exception, asyncio.TimeoutError):  # noqa: BLE001  (a module stopping: next time)
            return
        for e in events:
            key = (e.get("module"), e.get("event"), e.get("at"))
            if key in self.module_seen or e.get("event") not in LIVE_MODULE_EVENTS:
                continue
            self.module_seen.add(key)
            t = self.timeline.at_wall(e["wall"]) - self.timeline.origin if "wall" in e else self.timeline.now() - self.timeline.origin
            self.progress.event(t, f"{e.get('module', '?')}: {e['event']}")


def _describe(event: str, details: Any) -> str:
    keep = ("kind", "instance", "link", "sender", "first_line", "count", "module", "by", "how", "failed")
    parts = [f"{k}={details[k]}" for k in keep if k in details and details[k] is not None]
    return event + (" " + " ".join(str(p) for p in parts) if parts else "")


# ----------------------------------------------------------------------------- results


def paper_rows(r: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    """``004`` VIII-B (Fig. 10b, 12b) and V-B (Fig. 4-6) next to this run's figures."""
    def s(value: Any) -> str:
        return "never" if value is None else f"{value:.3f} s"

    def dialogs() -> str:
        return "not measured" if r.get("hanging_mrf_dialogs") is None else str(r["hanging_mrf_dialogs"])

    def charging() -> str:
        value = r.get("charging_discrepancy_bytes")
        return "not measured (no PGW bearer in the media path)" if value is None else f"{value} bytes"

    calls = r.get("calls_completed", 0) + r.get("calls_dropped", 0) + r.get("calls_hanging", 0)
    if mode == "refactored":
        return [
            {"figure": "004 VIII-B, Fig. 10b", "quantity": "failure detection (Timer A + Timer B)", "paper": "2 s",
             "measured": s(r.get("detection_s"))},
            {"figure": "004 Fig. 10b", "quantity": "failover, after detection", "paper": "~0.5 s (target <= 0.1 s)",
             "measured": s(r.get("failover_s"))},
            {"figure": "004 Fig. 10b", "quantity": "back to service (fault -> first call completed)", "paper": "~2.5 s",
             "measured": s(r.get("recovery_s"))},
            {"figure": "004 VIII-B", "quantity": "calls in setup at the fault that complete", "paper": "all",
             "measured": f"{r.get('calls_in_setup_completed')} of {r.get('calls_in_setup_at_fault')}"},
            {"figure": "004 Fig. 12b", "quantity": "hanging MRF dialogs", "paper": "none", "measured": dialogs()},
            {"figure": "004 Fig. 12b", "quantity": "charging discrepancy", "paper": "none", "measured": charging()},
        ]
    return [
        {"figure": "004 V-B, Fig. 4-6", "quantity": "P-CSCF gives up (5 retries 1 s apart, then 600)",
         "paper": "5 retries 1 s apart: ~5-6 s", "measured": s(r.get("detection_s"))},
        {"figure": "004 V-B", "quantity": "calls dropped or left hanging", "paper": "all calls",
         "measured": f"{r.get('calls_dropped', 0)} dropped, {r.get('calls_hanging', 0)} hanging, "
                     f"{r.get('calls_completed', 0)} completed of {calls}"},
        {"figure": "004 Fig. 6", "quantity": "hanging media (MRF dialogs left Connected)", "paper": "yes",
         "measured": dialogs()},
        {"figure": "004 Fig. 10b", "quantity": "OpenStack-style recovery (16 s heartbeat + 8 s backup NF + 2 s)",
         "paper": "~26 s", "measured": s(r.get("recovery_s")) if r.get("recovery_s") is not None
         else "no call completed after the fault (no orchestrator restarts the NF in this run)"},
        {"figure": "004 Fig. 12b", "quantity": "charging discrepancy (MRF charges DL bytes the PGW drops)",
         "paper": "> 0", "measured": charging()},
    ]


def _metrics(out: dict[str, Any], prepared: Prepared) -> dict[str, Any]:
    report = out.get("report") or {}
    results = dict(report.get("results") or dict.fromkeys(RESULT_KEYS))
    verdict = report.get("verdict") or {"held": None, "checks": []}
    metrics: dict[str, Any] = {"mode": prepared.topology.mode, "plan": prepared.plan.name}
    metrics.update({k: results.get(k) for k in RESULT_KEYS})
    for key in ("detection_trigger_s", "calls_completed", "calls_hanging"):
        metrics[key] = results.get(key)
    metrics["calls"] = len(out.get("calls") or {})
    metrics["verdict"] = _verdict(verdict)
    media = out.get("media") or {}
    metrics["media_loss"] = media.get("loss")
    metrics["duration_s"] = out.get("duration_s")
    metrics["interrupted"] = bool(out.get("interrupted"))
    metrics["results_dir"] = None
    return metrics


def _verdict(verdict: dict[str, Any]) -> dict[str, Any]:
    """``{"held": bool, "checks": {name: {held, measured, expected}}}`` (a repeated check gets ``#2``...)."""
    checks: dict[str, Any] = {}
    for c in verdict.get("checks", []):
        name, n = c["check"], 2
        while name in checks:
            name, n = f"{c['check']}#{n}", n + 1
        held = c["held"]
        if c["measured"] is None and c.get("figure") in NOT_MEASURED_WHEN_NONE:
            held = "not measured"
        checks[name] = {"held": held, "measured": c["measured"], "expected": c["expected"]}
    judged = [c["held"] for c in checks.values() if c["held"] != "not measured"]
    return {"held": all(judged) if checks else verdict.get("held"), "checks": checks}


def _events(report: dict[str, Any], metrics: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for e in (report.get("timeline") or {}).get("events", []):
        if e["event"] in PER_CALL or e["event"] == RUN_STARTED:
            continue
        detail = {k: v for k, v in e.items() if k not in ("event", "at_s")}
        rows.append({"t": e["at_s"], "event": e["event"], "detail": _short(detail)})
    rows = _condensed(rows)
    if metrics.get("fault_at_s") is not None and metrics.get("recovery_s") is not None:
        rows.append({"t": round(metrics["fault_at_s"] + metrics["recovery_s"], 6),
                     "event": "first call completed after the fault", "detail": ""})
    return sorted(rows, key=lambda row: row["t"])


def _condensed(rows: list[dict[str, Any]], keep: int = 3) -> list[dict[str, Any]]:
    """An event repeated more than ``keep`` times (the P-CSCF's retries of many calls): its first
    and last occurrence, the last saying how many there were (all of them are in samples.jsonl)."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["event"]] = counts.get(row["event"], 0) + 1
    seen: dict[str, int] = {}
    out = []
    for row in rows:
        n = counts[row["event"]]
        seen[row["event"]] = i = seen.get(row["event"], 0) + 1
        if n <= keep or i == 1:
            out.append(row)
        elif i == n:
            out.append({**row, "event": f"{row['event']} (last of {n})"})
    return out


def _short(detail: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v}" for k, v in detail.items())
    return text if len(text) <= 160 else text[:157] + "..."


def _samples(out: dict[str, Any]) -> list[dict[str, Any]]:
    report = out.get("report") or {}
    timeline = report.get("timeline") or {}
    samples = []
    calls: dict[int, _Call] = out.get("calls") or {}
    for key, c in (timeline.get("calls") or {}).items():
        call = calls.get(int(key)) if str(key).isdigit() else None
        result = call.result if call is not None else None
        samples.append({
            "type": "call", "call": int(key) if str(key).isdigit() else key, **c,
            "caller": call.caller if call else None, "callee": call.callee if call else None,
            "status": result.status if result is not None else 0,
            "bye_status": result.bye_status if result is not None else 0,
            "ended_by": result.ended_by if result is not None else None,
            "setup_ms": round(result.answered_after * 1000, 3) if result is not None and result.answered_after else None,
            "error": call.error if call else None,
        })
    samples.sort(key=lambda s: (str(type(s["call"])), s["call"]))
    samples += [{"type": "event", **e} for e in timeline.get("events", []) if e["event"] not in PER_CALL]
    return samples


def _config_record(config: FaultConfig, prepared: Prepared, argv: list[str] | None) -> dict[str, Any]:
    source = Path(config.topology)
    return {
        "experiment": "fault",
        "argv": list(argv) if argv is not None else None,
        "seed": prepared.plan.seed,
        "mode": prepared.topology.mode,
        "media": prepared.media,
        "fault": config.to_dict(),
        "plan": prepared.plan.as_dict(),
        "schedule": {"calls": len(prepared.schedule.starts), "interval_s": _interval(prepared.schedule),
                     "hold_s": prepared.schedule.hold},
        "topology_source": str(source),
        "topology_text": source.read_text() if source.is_file() else None,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pid": os.getpid(),
    }


def run_fault(
    config: FaultConfig | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    write: bool = True,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    argv: list[str] | None = None,
    **kwargs: Any,
) -> RunResult:
    """Run one fault experiment; returns its :class:`~experiments.results.RunResult`
    (``result.metrics`` is the ``--json`` object ``R``). ``config`` or :class:`FaultConfig`
    keywords (``plan="silc-crash", mode="baseline", at_call=3, calls=5, hold=10``...).
    ``out``: results folder (default ``results/fault-<UTC>``); ``write=False`` writes nothing.
    Raises ``PlanError`` / ``TopologyError`` / ``ResultsError`` before anything starts."""
    config = config if config is not None else FaultConfig(**kwargs)
    prepared = prepare(config)
    folder = prepare_results_dir(out, "fault") if write else None
    if folder is not None:
        write_json(folder / "config.json", _config_record(config, prepared, argv))
    stop = stop or threading.Event()
    progress = progress or Progress(f"fault {prepared.plan.name} {prepared.topology.mode}", None, enabled=False)
    if progress.total is None:
        progress.total = prepared.schedule.duration
    with progress, Runtime(name="fault") as runtime:
        raw = runtime.run(drive(prepared, config, progress, stop), timeout=None)
    metrics = _metrics(raw, prepared)
    report = raw.get("report") or {}
    summary = {
        "plan": prepared.plan.as_dict(),
        "results": report.get("results"),
        "verdict": report.get("verdict"),
        "timeline": report.get("timeline"),
        "charging": raw.get("charging"),
        "media": raw.get("media"),
        "collected": raw.get("collected"),
        "hanging_callee_legs": raw.get("hanging_callee_legs"),
        "unfinished_calls": raw.get("unfinished"),
        "leaked_endpoints": raw.get("leaked_endpoints"),
    }
    result = RunResult("fault", _config_record(config, prepared, argv), metrics, summary, _samples(raw),
                       events=_events(report, metrics), paper=paper_rows(metrics, prepared.topology.mode),
                       interrupted=bool(raw.get("interrupted")))
    if folder is not None:
        write_results(result, folder)
    return result


def run_fault_compare(
    config: FaultConfig | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    write: bool = True,
    progress_factory: Any = None,
    stop: threading.Event | None = None,
    argv: list[str] | None = None,
    **kwargs: Any,
) -> dict[str, RunResult]:
    """Baseline then refactored on the same plan and seed: ``{"baseline": R, "refactored": R}``.
    Each run writes a sub-folder; the folder's summary.json and report.html put them side by side."""
    from experiments import plots
    from experiments.report import write_report

    config = config if config is not None else FaultConfig(**kwargs)
    prepared = {mode: prepare(dataclasses.replace(config, mode=mode)) for mode in MODES}  # both checked first
    folder = prepare_results_dir(out, "fault-compare") if write else None
    if folder is not None:
        write_json(folder / "config.json", {"experiment": "fault-compare", "argv": argv,
                                            "seed": prepared["refactored"].plan.seed, "fault": config.to_dict(),
                                            "plan": prepared["refactored"].plan.as_dict()})
    stop = stop or threading.Event()
    results = run_modes(
        MODES,
        lambda mode, sub, progress: run_fault(dataclasses.replace(config, mode=mode), out=sub, write=write,
                                              progress=progress, stop=stop, argv=argv),
        folder=folder, durations={mode: prepared[mode].schedule.duration for mode in MODES},
        progress_factory=progress_factory, stop=stop,
    )
    if folder is not None:
        summary = {mode: r.metrics for mode, r in results.items()}
        write_json(folder / "summary.json", {"experiment": "fault-compare", **summary})
        figures = plots.plot_compare(results, folder)
        write_report(folder, title=f"fault {prepared['refactored'].plan.name}: baseline vs refactored", metrics={},
                     columns={m: {k: v for k, v in r.metrics.items() if k != "verdict"} for m, r in results.items()},
                     figures=figures, paper=[{**row, "figure": f"{row['figure']} ({m})"}
                                             for m, r in results.items() for row in r.paper],
                     events=[{**e, "event": f"{m}: {e['event']}"} for m, r in results.items() for e in r.events],
                     interrupted=any(r.interrupted for r in results.values()))
        for r in results.values():
            r.metrics["compare_dir"] = str(folder)
    return results


"""``run.py load`` / ``experiments.run_load``: drive the emulated IMS with a call workload.

One run: deploy the topology in this process (every module an actor on loopback; ephemeral
ports unless told otherwise), register the UE pool's users (a registration storm through the
P-CSCF), then place calls from the pool following the workload (:mod:`experiments.workloads`:
a rate profile, a holding-time distribution, a callee selector), each call a real
INVITE/180/200/ACK ... BYE through the modules. While it runs, a tick every second samples
rates, active calls and the setup-time window, and the progress display shows them. At the
end: SIP metrics, per-module stats, media metrics when the UE pool carries media, a results
folder with plots and report.html (:mod:`experiments.results`).

The mode (``baseline`` | ``refactored``) is written into the topology's ``mode`` field and
also handed to every module class whose constructor takes a ``mode`` argument.

Threads: the caller's thread waits in ``Runtime.run``; deployment, the call schedule and the
ticks run on the runtime's loop. ``stop`` (a ``threading.Event``; Ctrl-C sets it in the CLI)
ends the schedule early: calls in progress get ``drain_timeout`` seconds, then what was
measured is written, marked ``interrupted``.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import inspect
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors import Runtime, Topology, load_topology
from actors.topology import MODES
from experiments.histogram import Histogram
from experiments.metrics import MediaMetrics, SipMetrics, module_metrics, retransmissions
from experiments.progress import Progress
from experiments.results import RunResult, prepare_results_dir, run_modes, write_json, write_results
from experiments.workloads import (
    SELECTORS,
    Constant,
    Fixed,
    HoldingTime,
    RateProfile,
    Ramp,
    Steps,
    WorkloadError,
    holding_time,
    plan_calls,
    profile_from_dict,
)

__all__ = ["LoadConfig", "load_config", "media_supported", "run_load", "run_load_compare"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOPOLOGY = ROOT / "topologies" / "default.toml"
MAX_CPS_P99_MS = 250.0  # a second counts towards max_cps only with p99 setup under this


@dataclass
class LoadConfig:
    """Everything a load run depends on (``to_dict`` goes to config.json; ``from_dict`` reruns it)."""

    profile: RateProfile = field(default_factory=lambda: Ramp(2, 1, 10))
    hold: HoldingTime = field(default_factory=lambda: Fixed(2.0))
    selector: str = "random"
    users: int = 100
    calls: int | None = None
    poisson: bool = False
    mode: str | None = None  # None: the topology's own
    seed: int = 1
    time_scale: float = 1.0
    media: bool | None = None  # None: when the UE pool supports it
    topology: str = str(DEFAULT_TOPOLOGY)
    ephemeral_ports: bool = True
    call_timeout: float = 32.0  # real seconds to wait for each final response
    drain_timeout: float = 40.0  # real seconds calls in progress get after the schedule ends
    register_concurrency: int = 50

    def __post_init__(self) -> None:
        if self.selector not in SELECTORS:
            raise WorkloadError(f"--callee: unknown selection {self.selector!r} (one of {', '.join(SELECTORS)})")
        if self.mode is not None and self.mode not in MODES:
            raise WorkloadError(f"--mode: expected baseline or refactored, got {self.mode!r}")
        if isinstance(self.users, bool) or not isinstance(self.users, int) or self.users < 2:
            raise WorkloadError(f"--users: expected at least 2 users, got {self.users!r}")
        if self.calls is not None and (isinstance(self.calls, bool) or not isinstance(self.calls, int) or self.calls < 1):
            raise WorkloadError(f"--calls: expected a number >= 1, got {self.calls!r}")
        for name in ("time_scale", "call_timeout", "drain_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise WorkloadError(f"--{name.replace('_', '-')}: expected a number > 0, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["profile"] = self.profile.to_dict()
        out["hold"] = self.hold.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadConfig:
        data = dict(data)
        data["profile"] = profile_from_dict(data["profile"])
        data["hold"] = holding_time(data["hold"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def load_config(
    *,
    profile: str | RateProfile = "ramp",
    start_rate: float = 2.0,
    step: float = 1.0,
    max_rate: float = 10.0,
    rate: float | None = None,
    duration: float | None = None,
    steps: str | None = None,
    hold: str | float | HoldingTime = 2.0,
    **kwargs: Any,
) -> LoadConfig:
    """A :class:`LoadConfig` from the CLI's words: ``profile`` ramp (``start_rate``, ``step``,
    ``max_rate``, optional ``duration``), constant (``rate`` or ``max_rate``, ``duration``
    default 10 s) or steps (``steps`` "SECONDS:RATE,SECONDS:RATE..."); ``hold`` seconds,
    ``exp:MEAN`` or ``uniform:LOW:HIGH``. Other keywords are LoadConfig fields."""
    if isinstance(profile, RateProfile):
        chosen = profile
    elif profile == "ramp":
        chosen = Ramp(start_rate, step, max_rate, 1.0, duration)
    elif profile == "constant":
        chosen = Constant(rate if rate is not None else max_rate, duration if duration is not None else 10.0)
    elif profile == "steps":
        chosen = Steps(parse_steps(steps or ""))
    else:
        raise WorkloadError(f"--profile: expected ramp, constant or steps, got {profile!r}")
    hold_time = hold if hasattr(hold, "sample") else holding_time(hold)  # type: ignore[arg-type]
    return LoadConfig(profile=chosen, hold=hold_time, **kwargs)  # type: ignore[arg-type]


def parse_steps(text: str) -> tuple[tuple[float, float], ...]:
    """``"5:2,5:4"`` -> ((5.0, 2.0), (5.0, 4.0)): (seconds, calls/s) steps."""
    out = []
    for item in text.split(","):
        if not item.strip():
            continue
        try:
            seconds, rate = (float(x) for x in item.split(":"))
        except ValueError:
            raise WorkloadError(f"--steps: expected SECONDS:RATE pairs separated by commas, got {item!r}") from None
        out.append((seconds, rate))
    if not out:
        raise WorkloadError("--steps: expected SECONDS:RATE pairs, e.g. 5:2,5:4")
    return tuple(out)


# ------------------------------------------------------------------------ what the pool can do


def _accepts(cls: type, name: str) -> bool:
    """Whether ``cls(...)`` takes keyword ``name`` somewhere along its constructors' chain."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters
        except (TypeError, ValueError):
            return False
        if name in params:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return False
    return False


def media_supported() -> bool:
    """The UE pool takes ``media=True`` (it sends and receives RTP for its calls)."""
    from nf_modules.ue_pool import UePool

    return _accepts(UePool, "media")


def resolve_topology(config: LoadConfig) -> Topology:
    """The topology of ``config``: loaded, ports made ephemeral, mode set. Raises TopologyError."""
    topology = load_topology(Path(config.topology))
    if config.ephemeral_ports:
        topology = topology.with_ephemeral_ports()
    if config.mode is not None:
        topology = dataclasses.replace(topology, mode=config.mode)
    if not topology.by_kind("ue_pool"):
        from actors.topology import TopologyError

        raise TopologyError(f"{config.topology}: a load run needs a ue_pool instance")
    return topology


def _overrides(topology: Topology, config: LoadConfig, media: bool) -> dict[str, dict[str, Any]]:
    from nf_modules.deployment import KINDS

    overrides: dict[str, dict[str, Any]] = {}
    for nf in topology:
        cls = KINDS.get(nf.kind)
        if cls is None:
            continue
        args: dict[str, Any] = {}
        if config.time_scale != 1.0 and _accepts(cls, "time_scale"):
            args["time_scale"] = config.time_scale
        if _accepts(cls, "mode"):
            args["mode"] = topology.mode
        if nf.kind == "ue_pool":
            args["users"] = config.users
            args["seed"] = config.seed
            if media:
                args["media"] = True
        overrides[nf.name] = args
    return overrides


# ------------------------------------------------------------------------------- the run


@dataclass
class _Live:
    """What the loop's tasks share while the calls run (loop thread only)."""

    sip: SipMetrics
    samples: list[dict[str, Any]]
    active: int = 0
    started: int = 0
    finished: int = 0
    window: Histogram = field(default_factory=Histogram)
    recent: deque[tuple[float, bool]] = field(default_factory=deque)
    by_second: dict[int, list[tuple[bool, float | None]]] = field(default_factory=dict)
    call_ids: dict[str, float] = field(default_factory=dict)  # call id -> emulated start
    planned: list[float] = field(default_factory=list)  # every planned start, ascending


async def _drive(config: LoadConfig, topology: Topology, media: bool, progress: Progress,
                 stop: threading.Event) -> dict[str, Any]:
    from nf_modules.deployment import deploy

    loop = asyncio.get_running_loop()
    sip = SipMetrics()
    live = _Live(sip=sip, samples=[])
    ims = await deploy(topology, overrides=_overrides(topology, config, media))
    out: dict[str, Any] = {"live": live, "interrupted": False}
    try:
        pool_name = ims.first("ue_pool")
        pool = ims.proxy(pool_name)
        progress.event(0.0, f"{len(ims.refs)} modules up; registering {config.users} users")
        sip.record_registration(await pool.register_all(concurrency=config.register_concurrency))
        users = await pool.registered_users()
        if len(users) < 2:
            raise RuntimeError(f"only {len(users)} of {config.users} users registered; is the P-CSCF/S-CSCF path up?")
        selector = SELECTORS[config.selector](sorted(users), config.seed)
        plans = plan_calls(config.profile, config.hold, selector, seed=config.seed, poisson=config.poisson, limit=config.calls)
        progress.event(0.0, f"{len(users)} users registered; {len(plans)} calls planned over {config.profile.duration:g} s")
        live.planned = [plan.at for plan in plans]
        scale = config.time_scale
        t0 = loop.time()
        tasks: dict[asyncio.Task[None], float] = {}  # calls in progress -> their planned start

        def now() -> float:  # emulated seconds since the first call
            return (loop.time() - t0) * scale

        async def one(plan: Any) -> None:
            live.active += 1
            live.started += 1
            try:
                result = await pool.call(plan.caller, plan.callee, hold=plan.hold, timeout=config.call_timeout)
                sample = sip.record_call(result, hold=plan.hold, time_scale=scale)
            except Exception as error:  # noqa: BLE001  (an actor died: the call failed, the run goes on)
                sip.calls += 1
                sip.failed += 1
                sip.by_status["error"] += 1
                sample = {"call_id": None, "status": 0, "completed": False, "setup_ms": None, "error": repr(error)}
            finally:
                live.active -= 1
                live.finished += 1
            sample.update(type="call", at=round(plan.at, 4), caller=plan.caller, callee=plan.callee,
                          hold=round(plan.hold, 4), ended=round(now(), 4))
            if sample.get("call_id"):
                live.call_ids[sample["call_id"]] = plan.at
            live.samples.append(sample)
            live.by_second.setdefault(int(plan.at), []).append((sample["completed"], sample.get("setup_ms")))
            if sample.get("setup_ms") is not None:
                live.window.record(sample["setup_ms"])
            live.recent.append((now(), sample["completed"]))

        ticker = loop.create_task(_ticks(config, live, ims, now, progress, stop))
        try:
            for plan in plans:
                delay = plan.at / scale - (loop.time() - t0)
                while delay > 0 and not stop.is_set():
                    await asyncio.sleep(min(delay, 0.1))
                    delay = plan.at / scale - (loop.time() - t0)
                if stop.is_set():
                    break
                task = loop.create_task(one(plan))
                tasks[task] = plan.at
                task.add_done_callback(lambda t: tasks.pop(t, None))
            if stop.is_set():
                out["interrupted"] = True
                progress.event(now(), "interrupted: draining calls in progress")
            deadline = loop.time() + (min(config.drain_timeout, 5.0) if stop.is_set() else config.drain_timeout)
            while tasks and loop.time() < deadline:
                await asyncio.wait(set(tasks), timeout=min(0.2, max(0.0, deadline - loop.time())))
                if stop.is_set() and not out["interrupted"]:
                    out["interrupted"] = True
                    deadline = min(deadline, loop.time() + 5.0)
            sip.unfinished = len(tasks)
            for task, at in list(tasks.items()):
                live.by_second.setdefault(int(at), []).append((False, None))  # that second did not hold
                task.cancel()
            if tasks:
                await asyncio.wait(list(tasks), timeout=5.0)
        finally:
            ticker.cancel()
        out["duration_s"] = round(now(), 3)
        out["planned"] = len(plans)
        if media:
            try:
                out["media_overall"] = await pool.get_media_stats()
                legs = await pool.get_media_results()
                out["media"] = [leg.as_dict() if hasattr(leg, "as_dict") else leg for leg in legs]
            except Exception as error:  # noqa: BLE001  (media numbers missing: say so, keep the SIP ones)
                out["media_error"] = repr(error)
        stats = await ims.stats()
        out["module_stats"] = stats
        sip.retransmissions = retransmissions(stats)
        return out
    finally:
        await ims.stop()


async def _ticks(config: LoadConfig, live: _Live, ims: Any, now: Any, progress: Progress, stop: threading.Event) -> None:
    """Every real second (loop task): a tick sample and a progress update."""
    last_started, last_finished, last_t = 0, 0, 0.0
    previous: dict[str, Any] = {}
    while True:
        await asyncio.sleep(1.0)
        t = now()
        offered = bisect.bisect_right(live.planned, t) - bisect.bisect_right(live.planned, last_t)
        window = max(t - last_t, 1e-9)
        completed_recent = [ok for at, ok in live.recent if at > t - 10]
        while live.recent and live.recent[0][0] < t - 10:
            live.recent.popleft()
        try:
            stats = await asyncio.wait_for(ims.stats(), 2.0)
            modules = module_metrics(stats)
        except (Exception, asyncio.TimeoutError):  # noqa: BLE001  (a module stopping: skip its numbers)
            modules = {}
        per_module = {
            name: {"msgs_in_per_s": m["msgs_in"] - previous.get(name, {}).get("msgs_in", 0), "queue_length": m["queue_length"]}
            for name, m in modules.items()
        }
        previous = modules
        tick = {
            "type": "tick",
            "t": round(t, 3),
            "offered_cps": round(offered / window, 3),
            "started_cps": round((live.started - last_started) / window, 3),
            "completed_cps": round((live.finished - last_finished) / window, 3),
            "active": live.active,
            "setup_p50_ms": _r(live.window.percentile(50)),
            "setup_p99_ms": _r(live.window.percentile(99)),
            "modules": per_module,
        }
        last_started, last_finished, last_t = live.started, live.finished, t
        live.window = Histogram()
        live.samples.append(tick)
        sip = live.sip
        progress.update(
            elapsed=t, rate=tick["started_cps"], calls=f"{sip.completed}/{live.started}", active=live.active,
            success=(sum(completed_recent) / len(completed_recent)) if completed_recent else None,
            p99_setup_ms=sip.setup.percentile(99),
        )


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def max_cps(by_second: dict[int, list[tuple[bool, float | None]]]) -> int:
    """The most calls started in one second of the schedule where every one of them completed
    with p99 setup under ``MAX_CPS_P99_MS``."""
    best = 0
    for calls in by_second.values():
        if not calls or not all(ok for ok, _ in calls):
            continue
        h = Histogram()
        h.record_all(ms for _, ms in calls if ms is not None)
        p99 = h.percentile(99)
        if p99 is not None and p99 < MAX_CPS_P99_MS:
            best = max(best, len(calls))
    return best


def _media_rows(raw: Any) -> Any:
    """The pool's media stats as ``{call_id: stats}`` or a list (``{"calls": ...}`` unwrapped)."""
    if isinstance(raw, dict) and isinstance(raw.get("calls"), (dict, list)):
        return raw["calls"]
    return raw if isinstance(raw, (dict, list)) else {}


def _result(config: LoadConfig, topology: Topology, media: bool, out: dict[str, Any], argv: list[str] | None) -> RunResult:
    live: _Live = out["live"]
    sip = live.sip
    metrics_sip = sip.summary()
    media_metrics = MediaMetrics()
    media_samples = media_metrics.add_many(_media_rows(out.get("media"))) if media and out.get("media") else []
    if media and isinstance(out.get("media_overall"), dict):
        media_metrics.set_overall(out["media_overall"])
    media_summary = media_metrics.summary()
    for sample in media_samples:
        sample["type"] = "media"
        sample["at"] = live.call_ids.get(sample["call_id"].split("/")[0])
    metrics = {
        "mode": topology.mode,
        "calls": metrics_sip["calls"],
        "completed": metrics_sip["completed"],
        "failed": metrics_sip["failed"],
        "timeouts": metrics_sip["timeouts"],
        "success_rate": metrics_sip["success_rate"],
        "max_cps": max_cps(live.by_second),
        "offered_max_cps": config.profile.max_rate,
        "setup_ms": metrics_sip["setup_ms"],
        "ringing_ms": metrics_sip["ringing_ms"],
        "media": media,
        "media_latency_ms": media_summary["latency_ms"] if media_summary else None,
        "media_loss": media_summary["loss"] if media_summary else None,
        "media_latency_approximate": media_summary["approximate"] if media_summary else None,
        "retransmissions": sip.retransmissions,
        "duration_s": out.get("duration_s"),
        "interrupted": bool(out.get("interrupted")),
        "results_dir": None,
    }
    modules = module_metrics(out.get("module_stats", {}))
    summary = {"sip": metrics_sip, "media": media_summary, "modules": modules, "planned_calls": out.get("planned")}
    if out.get("media_error"):
        summary["media_error"] = out["media_error"]
    histograms = sip.histograms()
    if media_metrics.latency.count:
        histograms["media_latency_ms"] = media_metrics.latency
    media_seconds = [{"type": "media_second", **row} for row in media_metrics.by_second(live.call_ids)]
    if media_seconds:
        summary["media_by_second"] = [{k: v for k, v in row.items() if k != "type"} for row in media_seconds]
    samples = live.samples + media_samples + media_seconds + [{"type": "module", "name": n, **m} for n, m in modules.items()]
    return RunResult("load", config_record(config, topology, media, argv), metrics, summary, samples, histograms,
                     interrupted=bool(out.get("interrupted")), paper=paper_rows(metrics, media_summary))


def paper_rows(metrics: dict[str, Any], media: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``004`` Fig. 9's media figures beside ours, when the run carried media."""
    latency = metrics.get("media_latency_ms")
    if not latency:
        return []
    media = media or {}
    measured = f"p50 {latency.get('p50')} ms, p99 {latency.get('p99')} ms, max {latency.get('max')} ms"
    if metrics.get("mode") == "baseline":
        share = media.get("latency_under_100ms")
        if share is not None:
            measured = f"{share:.0%} of packets < 100 ms; " + measured
        return [{"figure": "004 Fig. 9", "quantity": "media one-way latency, baseline",
                 "paper": "about 60% of packets < 100 ms, tail up to 600 ms", "measured": measured}]
    share = media.get("latency_under_50ms")
    if share is not None:
        measured = f"{share:.1%} of packets < 50 ms; " + measured
    return [{"figure": "004 Fig. 9", "quantity": "media one-way latency, refactored", "paper": "< 50 ms",
             "measured": measured}]


def config_record(config: LoadConfig, topology: Topology, media: bool, argv: list[str] | None) -> dict[str, Any]:
    source = Path(config.topology)
    return {
        "experiment": "load",
        "argv": list(argv) if argv is not None else None,
        "seed": config.seed,
        "mode": topology.mode,
        "media": media,
        "load": config.to_dict(),
        "topology_source": str(source),
        "topology_text": source.read_text() if source.is_file() else None,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pid": os.getpid(),
    }


def _want_media(config: LoadConfig) -> bool:
    supported = media_supported()
    if config.media and not supported:
        raise WorkloadError("--media: this build's UE pool does not carry media (no media=True option)")
    return supported if config.media is None else bool(config.media)


def run_load(
    config: LoadConfig | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    write: bool = True,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    argv: list[str] | None = None,
    **kwargs: Any,
) -> RunResult:
    """Run one load experiment; returns its :class:`~experiments.results.RunResult`
    (``result.metrics`` is the ``--json`` object). ``config`` or keywords for :func:`load_config`
    (``profile="ramp", max_rate=20, hold=1, mode="baseline"``...). ``out``: results folder
    (default ``results/load-<UTC>``); ``write=False`` writes nothing. Raises ``WorkloadError``,
    ``TopologyError`` or ``ResultsError`` before anything starts when the input is bad."""
    config = config if config is not None else load_config(**kwargs)
    topology = resolve_topology(config)
    media = _want_media(config)
    folder = prepare_results_dir(out, "load") if write else None
    if folder is not None:
        write_json(folder / "config.json", config_record(config, topology, media, argv))
    stop = stop or threading.Event()
    progress = progress or Progress(f"load {topology.mode}", config.profile.duration, enabled=False)
    with progress, Runtime(name="load") as runtime:
        raw = runtime.run(_drive(config, topology, media, progress, stop), timeout=None)
    result = _result(config, topology, media, raw, argv)
    if folder is not None:
        write_results(result, folder)
    return result


def run_load_compare(
    config: LoadConfig | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    write: bool = True,
    progress_factory: Any = None,
    stop: threading.Event | None = None,
    argv: list[str] | None = None,
    **kwargs: Any,
) -> dict[str, RunResult]:
    """Baseline then refactored on the same workload (same seed); ``{"baseline": R, "refactored": R}``.
    Each run writes a sub-folder of the results folder; the folder's own summary.json and
    report.html put them side by side."""
    from experiments import plots
    from experiments.report import write_report

    config = config if config is not None else load_config(**kwargs)
    for mode in MODES:
        resolve_topology(dataclasses.replace(config, mode=mode))
    media = _want_media(config)
    folder = prepare_results_dir(out, "load-compare") if write else None
    stop = stop or threading.Event()
    if folder is not None:
        write_json(folder / "config.json", {"experiment": "load-compare", "argv": argv, "seed": config.seed,
                                            "media": media, "load": config.to_dict()})
    results = run_modes(
        MODES,
        lambda mode, sub, progress: run_load(dataclasses.replace(config, mode=mode), out=sub, write=write,
                                             progress=progress, stop=stop, argv=argv),
        folder=folder, durations={mode: config.profile.duration for mode in MODES},
        progress_factory=progress_factory, stop=stop,
    )
    if folder is not None:
        summary = {mode: r.metrics for mode, r in results.items()}
        write_json(folder / "summary.json", {"experiment": "load-compare", **summary})
        figures = plots.plot_compare(results, folder)
        write_report(folder, title="load: baseline vs refactored", metrics={}, columns=summary, figures=figures,
                     paper=[row for r in results.values() for row in r.paper],
                     interrupted=any(r.interrupted for r in results.values()))
        for r in results.values():
            r.metrics["compare_dir"] = str(folder)
    return results

"""``run.py fault --figure 10a|11``: the detection experiments of ``004`` VIII-B versus call rate.

Each point is one short run (:func:`experiments.fault.drive`): calls at a constant rate (each
between its own pair of users, held ``hold`` seconds), and after ``before`` seconds, at a seeded
random phase within one call interval, the S-CSCF Incoming Leg Control crashes (a time-triggered
crash, so the fault does not line up with an INVITE); calls go on for ``after`` seconds more.

- **Fig. 10a**: time from the fault to the first SIP message sent to the dead hop (the
  injector's dead-hop tap: "failure detection mechanism triggers"). Paper: 6 ms at 2 calls/s,
  dropping to 1 ms from about 7 calls/s.
- **Fig. 11**: detection (Timer A + Timer B expiry, from the fault) and failover (from detection
  to the replacement serving) versus the call rate. Paper: about 2 s and 0.5 s, growing only
  slightly with load.

Both come from the same kind of point, so one run of points serves either figure; each writes a
results folder with the points, a plot, and the paper-vs-measured table.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actors import Runtime
from experiments.fault import FaultConfig, Schedule, drive, prepare_run
from experiments.progress import Progress
from experiments.results import RunResult, prepare_results_dir, write_json, write_results
from faults.plan import PlanError, parse_plan

__all__ = ["FIGURES", "DEFAULT_RATES", "figure_plan", "run_figure", "run_rate_point"]

FIGURES = ("10a", "11")
DEFAULT_RATES = (2.0, 4.0, 6.0, 8.0, 10.0)
TARGET = "scscf.incoming_leg_control"


def figure_plan(fault_at: float, seed: int) -> Any:
    """The paper's fault at a time instead of a call: S-CSCF Incoming Leg Control crashes."""
    text = (f'name = "silc-crash-at-{fault_at:.4f}s"\nseed = {seed}\n'
            f'[[fault]]\nkind = "crash"\ntarget = "{TARGET}"\nat = {fault_at!r}\n')
    return parse_plan(text, source="figure point")


def run_rate_point(rate: float, config: FaultConfig, *, before: float = 2.0, after: float = 3.0, repeat: int = 0,
                   progress: Progress | None = None, stop: threading.Event | None = None) -> dict[str, Any]:
    """One run: calls at ``rate`` per second, the crash ``before`` (+ a random phase, seeded by the
    seed, the rate and ``repeat``) seconds in, calls for ``after`` more seconds. The run's figures
    plus ``rate``."""
    if not rate > 0 or not math.isfinite(rate):
        raise PlanError(f"--rates: a rate must be a number > 0, got {rate!r}")
    seed = config.seed if config.seed is not None else 1
    phase = random.Random(f"{seed}/{rate}/{repeat}").uniform(0.0, 1.0 / rate)
    fault_at = before + phase
    calls = max(1, math.ceil((fault_at + after) * rate))
    hold = config.hold if config.hold is not None else 1.0
    schedule = Schedule(tuple(round(i / rate, 9) for i in range(calls)), hold)
    prepared = prepare_run(figure_plan(round(fault_at, 4), seed), schedule, config)
    progress = progress or Progress(f"fig point {rate:g}/s", schedule.duration, enabled=False)
    with progress, Runtime(name="fault-figure") as runtime:
        raw = runtime.run(drive(prepared, config, progress, stop or threading.Event()), timeout=None)
    results = dict((raw.get("report") or {}).get("results") or {})
    point = {"rate": rate, "calls": calls, "fault_at_s": results.get("fault_at_s")}
    for key in ("detection_trigger_s", "detection_s", "failover_s", "recovery_s", "calls_in_setup_at_fault",
                "calls_in_setup_completed", "calls_dropped", "calls_completed", "calls_hanging"):
        point[key] = results.get(key)
    point["interrupted"] = bool(raw.get("interrupted"))
    return point


def _mean_point(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs of one rate: the mean of each figure over the runs that measured it (``None`` if
    none did), the counts summed, and every run under ``runs``."""
    point: dict[str, Any] = {"rate": runs[0]["rate"], "repeats": len(runs)}
    for key in ("fault_at_s", "detection_trigger_s", "detection_s", "failover_s", "recovery_s"):
        values = [r[key] for r in runs if r.get(key) is not None]
        point[key] = round(sum(values) / len(values), 6) if values else None
    for key in ("calls", "calls_in_setup_at_fault", "calls_in_setup_completed", "calls_dropped", "calls_completed",
                "calls_hanging"):
        point[key] = sum(r.get(key) or 0 for r in runs)
    point["interrupted"] = any(r["interrupted"] for r in runs)
    if len(runs) > 1:
        point["runs"] = runs
    return point


def paper_rows(figure: str, points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for p in points:
        def ms(key: str) -> str:
            return "never" if p.get(key) is None else f"{p[key] * 1000:.1f} ms"

        def s(key: str) -> str:
            return "never" if p.get(key) is None else f"{p[key]:.3f} s"

        if figure == "10a":
            paper = "6 ms" if p["rate"] <= 2 else ("1 ms" if p["rate"] >= 7 else "between 6 and 1 ms")
            rows.append({"figure": "004 Fig. 10a", "quantity": f"fault -> detection trigger at {p['rate']:g} calls/s",
                         "paper": paper, "measured": ms("detection_trigger_s")})
        else:
            rows.append({"figure": "004 Fig. 11", "quantity": f"detection at {p['rate']:g} calls/s",
                         "paper": "~2 s, slightly more at peak load", "measured": s("detection_s")})
            rows.append({"figure": "004 Fig. 11", "quantity": f"failover at {p['rate']:g} calls/s",
                         "paper": "~0.5 s, slightly more at peak load", "measured": s("failover_s")})
    return rows


def _plot(figure: str, points: Sequence[dict[str, Any]], folder: Path) -> Any:
    from experiments.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    rates = [p["rate"] for p in points]
    if figure == "10a":
        title = "004 Fig. 10a: fault -> failure detection trigger vs call rate"
        ax.plot(rates, [None if p["detection_trigger_s"] is None else p["detection_trigger_s"] * 1000 for p in points],
                "o-", label="measured")
        ax.plot([2, 7, max(rates + [10])], [6, 1, 1], "s--", color="grey", label="paper (approx.)")
        ax.set_ylabel("ms, fault -> first message to dead hop")
    else:
        title = "004 Fig. 11: detection and failover time vs call rate"
        ax.plot(rates, [p["detection_s"] for p in points], "o-", label="detection (fault -> Timer B)")
        ax.plot(rates, [p["failover_s"] for p in points], "^-", label="failover (detection -> serving)")
        ax.axhline(2.0, color="grey", linestyle="--", linewidth=1, label="paper: detection 2 s")
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="paper: failover 0.5 s")
        ax.set_ylabel("seconds")
    ax.set_xlabel("call rate (calls/s)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, folder, f"fig{figure}", title)


def run_figure(
    figure: str,
    config: FaultConfig,
    *,
    rates: Sequence[float] = DEFAULT_RATES,
    before: float = 2.0,
    after: float | None = None,
    repeats: int = 1,
    out: str | os.PathLike[str] | None = None,
    write: bool = True,
    progress_factory: Any = None,
    stop: threading.Event | None = None,
    argv: list[str] | None = None,
) -> RunResult:
    """The points of ``figure`` ("10a" or "11"), one short run per rate; ``result.metrics`` is
    ``{"figure", "mode", "points": [{rate, detection_trigger_s, detection_s, failover_s, ...}]}``.
    ``after``: seconds of calls after the fault (default 0.5 for 10a, 3 for 11)."""
    if figure not in FIGURES:
        raise PlanError(f"--figure: expected one of {', '.join(FIGURES)}, got {figure!r}")
    if not rates:
        raise PlanError("--rates: give at least one rate")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise PlanError(f"--repeats: expected a whole number >= 1, got {repeats!r}")
    after = after if after is not None else (0.5 if figure == "10a" else 3.0)
    config = dataclasses.replace(config, mode=config.mode or "refactored")
    for rate in rates:  # every point's input checked before the first runs
        if not rate > 0 or not math.isfinite(rate):
            raise PlanError(f"--rates: a rate must be a number > 0, got {rate!r}")
    prepare_run(figure_plan(before, config.seed or 1), Schedule((0.0,), 1.0), config)
    folder = prepare_results_dir(out, f"fault-fig{figure}") if write else None
    record = {"experiment": f"fault-fig{figure}", "argv": argv, "seed": config.seed, "rates": list(rates), "repeats": repeats,
              "before_s": before, "after_s": after, "fault": config.to_dict()}
    if folder is not None:
        write_json(folder / "config.json", record)
    stop = stop or threading.Event()
    points = []
    for rate in rates:
        runs = []
        for i in range(repeats):
            if stop.is_set():
                break
            label = f"{rate:g}/s" + (f" #{i + 1}" if repeats > 1 else "")
            progress = progress_factory(label, before + after) if progress_factory else None
            runs.append(run_rate_point(rate, config, before=before, after=after, repeat=i, progress=progress, stop=stop))
        if runs:
            points.append(_mean_point(runs))
    metrics = {"figure": figure, "mode": config.mode, "points": points, "interrupted": stop.is_set(),
               "results_dir": None}
    result = RunResult(f"fault-fig{figure}", record, metrics, {"points": points},
                       [{"type": "point", **p} for p in points], paper=paper_rows(figure, points),
                       interrupted=stop.is_set())
    if folder is not None:
        write_results(result, folder)
        _plot(figure, points, folder)
        # the report again, with the figure's plot in it
        from experiments.plots import Figure
        from experiments.report import write_report

        figure_file = Figure(f"fig{figure}", f"004 Fig. {figure}", folder / f"fig{figure}.png", folder / f"fig{figure}.svg")
        write_report(folder, title=f"004 Fig. {figure} ({config.mode})", metrics={"figure": figure, "mode": config.mode},
                     summary={"points": points}, figures=[figure_file], paper=result.paper, interrupted=result.interrupted)
    return result

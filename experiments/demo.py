"""The default demo (``python run.py``): the project's point in about two minutes.

The full IMS runs in one process on loopback, twice: once in ``baseline`` mode (the serial
media control loop, no failover) and once ``refactored`` (pipelined prefetch, Timer A / fast
retry / Timer B supervisors, failover through backup links). Each mode gets

1. a short call ramp with media (004 VIII-A: 2 calls/s, one more each second), from which the
   media one-way latency of the two modes is compared (Fig. 9), and
2. the paper's fault: the S-CSCF Incoming Leg Control crashes while calls are being set up
   (plan ``silc-crash``, triggered earlier here so the run stays short), from which detection,
   failover, dropped calls, hanging MRF dialogs and the charging discrepancy are compared
   (Fig. 10-12).

Both experiments write their own results folders (with plots and ``report.html``) under the
demo's folder, and the demo writes a ``report.html`` of its own that puts the headline figures
side by side beside the paper's and links the two detailed reports.
"""

from __future__ import annotations

import html
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from experiments.fault import FaultConfig, run_fault_compare
from experiments.load import load_config, run_load_compare
from experiments.progress import Progress
from experiments.plots import Figure
from experiments.report import CSS, figure_html, html_table, print_rows
from experiments.results import RunResult, prepare_results_dir, write_json

__all__ = ["DemoConfig", "demo_rows", "run_demo"]

MODES = ("baseline", "refactored")


@dataclass(frozen=True)
class DemoConfig:
    """The demo's workload: small enough for ~2 minutes on a 2-core machine."""

    max_rate: float = 8.0  # the media ramp climbs 2, 3, ... to this many calls/s
    hold: float = 4.0  # seconds each ramp call is held with media flowing
    fault_calls: int = 12  # calls of the fault run, one per second
    fault_at_call: int = 8  # the S-CSCF ILC crashes as this call is set up
    fault_hold: float = 8.0
    seed: int = 1
    time_scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def demo_rows(load: dict[str, RunResult], fault: dict[str, RunResult]) -> list[list[str]]:
    """The headline table: quantity, paper, baseline, refactored."""

    def lm(mode: str, *keys: str) -> Any:
        value: Any = load[mode].metrics if mode in load else None
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def fm(mode: str, key: str) -> Any:
        return fault[mode].metrics.get(key) if mode in fault else None

    rows = [
        ["calls placed / completed (ramp)", "-",
         *(f"{_fmt(lm(m, 'calls'))} / {_fmt(lm(m, 'completed'))}" for m in MODES)],
        ["call setup p99 (INVITE->200)", "-", *(_fmt(lm(m, "setup_ms", "p99"), " ms") for m in MODES)],
        ["media one-way latency p50", "Fig. 9: -", *(_fmt(lm(m, "media_latency_ms", "p50"), " ms", 2) for m in MODES)],
        ["media one-way latency p99", "Fig. 9: 600 ms / < 50 ms",
         *(_fmt(lm(m, "media_latency_ms", "p99"), " ms", 2) for m in MODES)],
        ["media loss", "-", *(_fmt(lm(m, "media_loss"), "", 4) for m in MODES)],
        ["failure detection after the fault", "Fig. 10b: 2 s",
         *(_fmt(fm(m, "detection_s"), " s", 3) for m in MODES)],
        ["failover after detection", "Fig. 10b: 0.5 s", *(_fmt(fm(m, "failover_s"), " s", 3) for m in MODES)],
        ["first call completed after the fault", "2.5 s / OpenStack ~26 s",
         *(_fmt(fm(m, "recovery_s"), " s", 3) for m in MODES)],
        ["calls in set-up at the fault: completed", "all (refactored)",
         *(f"{_fmt(fm(m, 'calls_in_setup_completed'))} of {_fmt(fm(m, 'calls_in_setup_at_fault'))}" for m in MODES)],
        ["calls dropped", "baseline: all", *(_fmt(fm(m, "calls_dropped")) for m in MODES)],
        ["hanging MRF dialogs", "baseline > 0", *(_fmt(fm(m, "hanging_mrf_dialogs")) for m in MODES)],
        ["charging discrepancy (MRF - PGW)", "Fig. 12: baseline > 0",
         *(_fmt(fm(m, "charging_discrepancy_bytes"), " B") for m in MODES)],
    ]
    return rows


def _write_report(folder: Path, rows: list[list[str]], load_dir: Path, fault_dir: Path, interrupted: bool) -> Path:
    links = "".join(f"<li><a href='{html.escape(p.name)}/report.html'>{html.escape(title)}</a></li>"
                    for title, p in (("media ramp: baseline vs refactored", load_dir),
                                     ("S-CSCF Incoming Leg Control failure: baseline vs refactored", fault_dir)))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>vIMS demo</title><style>{CSS}</style>",
             "</head><body><h1>vIMS emulator demo: baseline vs refactored</h1>"]
    if interrupted:
        parts.append("<div class='banner'><b>Interrupted:</b> these are the measurements taken until then.</div>")
    parts.append("<p>The full IMS in one process on loopback; every module hop a real UDP SIP hop, media "
                 "through the C engine. Paper: 004 (Fig. 9-12).</p>")
    parts.append("<h2>Side by side</h2>" + html_table(rows, ["", "paper", "baseline", "refactored"]))
    figures = [Figure(stem, title, (folder / stem).with_suffix(".png"), (folder / stem).with_suffix(".svg"))
               for stem, title in (("load/compare_media_cdf", "Media one-way latency CDF, ramp (Fig. 9)"),
                                   ("fault/fault_timeline_baseline", "S-CSCF ILC failure, baseline (Fig. 4-6, 12)"),
                                   ("fault/fault_timeline_refactored", "S-CSCF ILC failure, refactored (Fig. 10)"))]
    parts.append("<h2>Plots</h2>" + "\n".join(figure_html(f) for f in figures))
    parts.append(f"<h2>Detailed reports</h2><ul>{links}</ul>")
    parts.append("</body></html>")
    path = folder / "report.html"
    path.write_text("\n".join(parts))
    return path


def run_demo(
    config: DemoConfig | None = None,
    *,
    out: str | Path | None = None,
    progress_factory: Callable[[str, float], Progress] | None = None,
    stop: threading.Event | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Run the demo; returns ``{"load": {...}, "fault": {...}, "rows": [...], "report": path,
    "results_dir": path, "interrupted": bool}`` (``load``/``fault`` map mode -> metrics)."""
    config = config or DemoConfig()
    stop = stop or threading.Event()
    folder = prepare_results_dir(out, "demo")
    write_json(folder / "config.json", {"experiment": "demo", "argv": argv or [], "seed": config.seed,
                                        "demo": config.to_dict()})
    load_cfg = load_config(profile="ramp", start_rate=2.0, step=1.0, max_rate=config.max_rate, hold=config.hold,
                           media=True, seed=config.seed, time_scale=config.time_scale)
    load = run_load_compare(load_cfg, out=folder / "load", progress_factory=_label(progress_factory, "ramp"),
                            stop=stop, argv=argv)
    fault: dict[str, RunResult] = {}
    if not stop.is_set():
        fault_cfg = FaultConfig(plan="silc-crash", calls=config.fault_calls, interval=1.0, hold=config.fault_hold,
                                at_call=config.fault_at_call, seed=config.seed, time_scale=config.time_scale,
                                media=True)
        fault = run_fault_compare(fault_cfg, out=folder / "fault", progress_factory=_label(progress_factory, "fault"),
                                  stop=stop, argv=argv)
    rows = demo_rows(load, fault)
    interrupted = stop.is_set() or any(r.interrupted for r in (*load.values(), *fault.values()))
    report = _write_report(folder, rows, folder / "load", folder / "fault", interrupted)
    summary = {
        "load": {m: r.metrics for m, r in load.items()},
        "fault": {m: r.metrics for m, r in fault.items()},
        "rows": rows,
        "report": str(report),
        "results_dir": str(folder),
        "interrupted": interrupted,
    }
    write_json(folder / "summary.json", summary)
    return summary


def _label(factory: Callable[[str, float], Progress] | None, part: str) -> Callable[[str, float], Progress] | None:
    if factory is None:
        return None
    return lambda mode, total: factory(f"{part} {mode}", total)

"""Plots of a run, PNG and SVG, with matplotlib's Agg backend (no display needed).

Each function draws one figure and returns a :class:`Figure` record (its file stem, title and
paths) for the report, or ``None`` when there is nothing to draw:

- :func:`latency_cdf`: CDFs of latency histograms (call setup, media one-way latency), one line
  per label; log x axis.
- :func:`over_time`: offered and achieved call rate, active calls, and p99 setup per second.
- :func:`fault_timeline`: events on a time axis (fault injected, detection, failover...).
- :func:`instance_counts`: instances per kind over time (scaling runs).

Runs on the caller's thread (matplotlib is not thread-safe: one run writes at a time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments.histogram import Histogram

if TYPE_CHECKING:
    from experiments.results import RunResult

__all__ = ["Figure", "fault_timeline", "instance_counts", "latency_cdf", "media_by_second", "over_time", "plot_compare",
           "plot_run"]


@dataclass(frozen=True)
class Figure:
    stem: str
    title: str
    png: Path
    svg: Path


LABELS = {
    "setup_ms": "call setup INVITE->200",
    "ringing_ms": "INVITE->180",
    "INVITE_ms": "INVITE transaction (to final response)",
    "BYE_ms": "BYE transaction",
    "REGISTER_ms": "REGISTER transaction",
    "media_latency_ms": "media one-way latency",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3, "svg.fonttype": "none"})
    return plt


def _save(fig: Any, folder: Path, stem: str, title: str) -> Figure:
    plt = _pyplot()
    fig.tight_layout()
    png, svg = folder / f"{stem}.png", folder / f"{stem}.svg"
    fig.savefig(png, dpi=120)
    fig.savefig(svg)
    plt.close(fig)
    return Figure(stem, title, png, svg)


def latency_cdf(
    histograms: Mapping[str, Histogram], folder: Path, *, stem: str, title: str, xlabel: str = "milliseconds",
    marks: Sequence[float] = (),
) -> Figure | None:
    """CDF lines of the non-empty histograms; ``marks`` draws vertical reference lines (e.g. 100 ms)."""
    lines = {label: h for label, h in histograms.items() if h.count}
    if not lines:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, h in lines.items():
        cdf = h.cdf()
        xs = [max(v, h.resolution) for v, _ in cdf]
        ys = [f for _, f in cdf]
        ax.step([xs[0], *xs], [0.0, *ys], where="post", label=f"{LABELS.get(label, label)} (n={h.count})")
    for mark in marks:
        ax.axvline(mark, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter(""))
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction <= x")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, folder, stem, title)


def over_time(ticks: Sequence[Mapping[str, Any]], folder: Path, *, stem: str = "over_time", title: str = "Calls over time") -> Figure | None:
    """Two panels: call rates and active calls; p99 setup per tick."""
    if len(ticks) < 1:
        return None
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    t = [row["t"] for row in ticks]
    # each tick describes the second that ends at its t: steps drawn backwards from t
    top.plot(t, [row.get("offered_cps", 0) for row in ticks], label="offered calls/s", drawstyle="steps-pre")
    top.plot(t, [row.get("started_cps", 0) for row in ticks], label="started calls/s", drawstyle="steps-pre")
    top.plot(t, [row.get("completed_cps", 0) for row in ticks], label="calls ended/s", drawstyle="steps-pre")
    top.plot(t, [row.get("active", 0) for row in ticks], label="active calls", linestyle=":", marker=".")
    top.set_ylabel("calls")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(title)
    p99 = [(row["t"], row["setup_p99_ms"]) for row in ticks if row.get("setup_p99_ms") is not None]
    p50 = [(row["t"], row["setup_p50_ms"]) for row in ticks if row.get("setup_p50_ms") is not None]
    if p99:
        bottom.plot(*zip(*p99), label="setup p99 (ms)", marker=".")
    if p50:
        bottom.plot(*zip(*p50), label="setup p50 (ms)", marker=".")
    media = [(row["t"], row["media_p99_ms"]) for row in ticks if row.get("media_p99_ms") is not None]
    if media:
        bottom.plot(*zip(*media), label="media one-way p99 (ms)", marker=".")
    bottom.set_ylabel("ms")
    bottom.set_xlabel("seconds from the first call")
    if p99 or p50 or media:
        bottom.legend(loc="upper left", fontsize=8)
    return _save(fig, folder, stem, title)


def media_by_second(rows: Sequence[Mapping[str, Any]], folder: Path, *, stem: str = "media_by_second",
                    title: str = "Media one-way latency by second of the schedule") -> Figure | None:
    """p50/p99/max media latency of the calls started in each second (``004`` Fig. 9's x axis)."""
    rows = [r for r in rows if r.get("p50") is not None]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    seconds = [r["second"] for r in rows]
    for key, style in (("p50", "-"), ("p99", "--"), ("max", ":")):
        ax.plot(seconds, [r[key] for r in rows], style, marker=".", label=key)
    ax.set_xlabel("second of the schedule the calls started in")
    ax.set_ylabel("ms")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, folder, stem, title)


def fault_timeline(events: Sequence[Mapping[str, Any]], folder: Path, *, stem: str = "fault_timeline",
                   title: str = "Fault timeline") -> Figure | None:
    """Each event a labelled tick on a time axis (``{"t": s, "event": text}``)."""
    points = [(float(e["t"]), str(e.get("event", ""))) for e in events if e.get("t") is not None]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.35 * len(points)))
    for i, (t, text) in enumerate(sorted(points)):
        ax.plot([t], [i], "o", color="tab:red")
        ax.annotate(f"{text} ({t:.3f} s)", (t, i), xytext=(6, -3), textcoords="offset points", fontsize=8)
    ax.set_yticks([])
    ax.set_xlabel("seconds")
    ax.set_title(title)
    ax.margins(x=0.25, y=0.3)
    return _save(fig, folder, stem, title)


def instance_counts(rows: Sequence[Mapping[str, Any]], folder: Path, *, stem: str = "instances",
                    title: str = "Instances over time") -> Figure | None:
    """One step line per key other than ``t``."""
    if not rows:
        return None
    kinds = sorted({k for row in rows for k in row if k != "t"})
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for kind in kinds:
        ax.plot([r["t"] for r in rows], [r.get(kind, 0) for r in rows], drawstyle="steps-post", label=kind)
    ax.set_xlabel("seconds")
    ax.set_ylabel("instances")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, folder, stem, title)


def plot_run(result: RunResult, folder: Path) -> list[Figure]:
    """Every plot one run has data for."""
    figures = [
        latency_cdf({k: v for k, v in result.histograms.items() if not k.startswith("media")}, folder,
                    stem="sip_latency_cdf", title="SIP latency CDF"),
        latency_cdf({k: v for k, v in result.histograms.items() if k.startswith("media")}, folder,
                    stem="media_latency_cdf", marks=(50, 100),
                    title="Media one-way latency CDF" + (" (from per-leg p50/p90/p99/max)"
                                                         if result.metrics.get("media_latency_approximate") else "")),
        over_time(result.ticks(), folder),
        media_by_second([s for s in result.samples if s.get("type") == "media_second"], folder),
        fault_timeline(result.events, folder),
        instance_counts(result.instances, folder),
    ]
    return [f for f in figures if f is not None]


def plot_compare(results: Mapping[str, RunResult], folder: Path) -> list[Figure]:
    """Side-by-side plots of several runs (e.g. baseline and refactored)."""
    figures = []
    approximate = any(r.metrics.get("media_latency_approximate") for r in results.values())
    for name, stem, title, marks in (
        ("setup_ms", "compare_setup_cdf", "Call setup INVITE->200 CDF", ()),
        ("media_latency_ms", "compare_media_cdf",
         "Media one-way latency CDF" + (" (from per-leg p50/p90/p99/max)" if approximate else ""), (50, 100)),
    ):
        lines = {label: r.histograms[name] for label, r in results.items() if name in r.histograms}
        figures.append(latency_cdf(lines, folder, stem=stem, title=title, marks=marks))
    for label, r in results.items():
        figures.append(over_time(r.ticks(), folder, stem=f"over_time_{label}", title=f"Calls over time ({label})"))
        figures.append(fault_timeline(r.events, folder, stem=f"fault_timeline_{label}", title=f"Fault timeline ({label})"))
    return [f for f in figures if f is not None]

"""The results folder every run writes, and the result object experiments return.

Layout of ``results/<experiment>-<UTC timestamp>/`` (or ``--out DIR``)::

    config.json      full configuration, seed, argv (``run.py rerun DIR`` repeats the run)
    samples.jsonl    raw samples, one JSON object per line, each with a "type"
                     (call, tick, media, module, event)
    summary.json     the run's summary (what ``--json`` prints, plus detail)
    *.png, *.svg     plots (experiments/plots.py)
    report.html      self-contained report (experiments/report.py)

:func:`prepare_results_dir` checks up front that the folder can be written (bad ``--out`` is
an error before anything starts). Writing happens on the caller's thread.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.histogram import Histogram

__all__ = [
    "RESULTS_ROOT",
    "ResultsError",
    "RunResult",
    "prepare_results_dir",
    "read_config",
    "write_json",
    "write_results",
]

ROOT = Path(__file__).resolve().parent.parent
RESULTS_ROOT = ROOT / "results"


class ResultsError(ValueError):
    """The results folder cannot be used."""


def utc_stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def prepare_results_dir(out: str | os.PathLike[str] | None, experiment: str) -> Path:
    """Create the results folder (``out``, or ``results/<experiment>-<UTC stamp>``) and check it
    is writable; :class:`ResultsError` naming the folder otherwise."""
    if out is None:
        path = RESULTS_ROOT / f"{experiment}-{utc_stamp()}"
        n = 1
        while path.exists():
            n += 1
            path = RESULTS_ROOT / f"{experiment}-{utc_stamp()}-{n}"
    else:
        path = Path(out)
    if path.exists() and not path.is_dir():
        raise ResultsError(f"--out {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ResultsError(f"--out {path}: cannot write there ({error.strerror or error})") from None
    return path


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_default) + "\n")
    tmp.replace(path)


def _default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Histogram):
        return value.to_dict()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def read_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """A results folder's config.json; :class:`ResultsError` when it is missing or unreadable."""
    path = Path(folder) / "config.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"rerun {folder}: no config.json there (not a results folder?)") from None
    except (OSError, ValueError) as error:
        raise ResultsError(f"rerun {folder}: cannot read config.json ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("argv"), list):
        raise ResultsError(f"rerun {folder}: config.json has no argv list")
    return data


@dataclass
class RunResult:
    """What an experiment returns: the ``--json`` metrics, the detail behind them, where they went.

    ``metrics`` is the stable machine-readable dict (README "Running experiments");
    ``summary`` adds detail; ``samples`` are raw rows; ``histograms`` feed the CDF plots;
    ``events`` are timeline entries ``{"t": s, "event": text}`` (fault runs);
    ``instances`` optional ``{"t": s, "<kind>": count, ...}`` rows; ``paper`` rows
    ``{"figure", "quantity", "paper", "measured"}`` for the paper-vs-measured table."""

    experiment: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    histograms: dict[str, Histogram] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    instances: list[dict[str, Any]] = field(default_factory=list)
    paper: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    results_dir: Path | None = None

    def ticks(self) -> list[dict[str, Any]]:
        return [s for s in self.samples if s.get("type") == "tick"]

    def to_json(self) -> dict[str, Any]:
        return dict(self.metrics)

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]


def write_samples(path: Path, samples: Iterable[Mapping[str, Any]]) -> int:
    n = 0
    with path.open("w") as f:
        for sample in samples:
            f.write(json.dumps(sample, default=_default, separators=(",", ":")) + "\n")
            n += 1
    return n


def write_results(result: RunResult, folder: Path, *, plots: bool = True) -> Path:
    """Write samples, summary, plots and report.html of ``result`` into ``folder`` (config.json
    was written when the run started); returns the report's path."""
    from experiments import plots as plotting
    from experiments.report import write_report

    result.results_dir = folder
    result.metrics["results_dir"] = str(folder)
    write_samples(folder / "samples.jsonl", result.samples)
    summary = {
        "experiment": result.experiment,
        "interrupted": result.interrupted,
        "metrics": result.metrics,
        **result.summary,
        "histograms": {name: h.to_dict() for name, h in result.histograms.items()},
        "events": result.events,
    }
    write_json(folder / "summary.json", summary)
    figures = plotting.plot_run(result, folder) if plots else []
    return write_report(folder, title=_title(result), metrics=result.metrics, summary=result.summary,
                        figures=figures, paper=result.paper, events=result.events, interrupted=result.interrupted)


def _title(result: RunResult) -> str:
    mode = result.metrics.get("mode")
    return f"{result.experiment}" + (f" ({mode})" if mode else "")


def run_modes(
    modes: Iterable[str],
    run_one: Callable[[str, Path | None, Any], RunResult],
    *,
    folder: Path | None,
    durations: Mapping[str, float | None],
    progress_factory: Callable[[str, float | None], Any] | None,
    stop: threading.Event,
) -> dict[str, RunResult]:
    """A comparison's runs, one mode after the other until ``stop``: ``run_one(mode, out,
    progress)`` writes its results to ``folder/<mode>`` (``None``: writes nothing)."""
    results: dict[str, RunResult] = {}
    for mode in modes:
        if stop.is_set():
            break
        progress = progress_factory(mode, durations[mode]) if progress_factory else None
        results[mode] = run_one(mode, (folder / mode) if folder is not None else None, progress)
    return results

"""Experiments: workloads, metrics, results folders and reports, and the runs behind ``run.py``.

From Python (notebooks, your own scripts)::

    from experiments import run_load
    result = run_load(profile="ramp", start_rate=2, step=1, max_rate=10, hold=2, mode="refactored")
    result.metrics["setup_ms"]["p99"], result.results_dir

    from experiments import run_fault_compare
    runs = run_fault_compare(plan="silc-crash", calls=12, at_call=8)
    runs["refactored"].metrics["detection_s"]

Names are imported lazily, so ``import experiments`` stays cheap.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "LoadConfig": "load", "load_config": "load", "run_load": "load", "run_load_compare": "load",
    "FaultConfig": "fault", "run_fault": "fault", "run_fault_compare": "fault",
    "DemoConfig": "demo", "run_demo": "demo",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"experiments.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'experiments' has no attribute {name!r}")

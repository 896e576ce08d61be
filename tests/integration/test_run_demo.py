"""``run.py demo`` end to end on a short workload: both modes, the media ramp and the S-CSCF
Incoming Leg Control failure, the side-by-side table, the JSON line and the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(300)
def test_demo_compares_both_modes_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = _run("demo", "--max-rate", "3", "--hold", "2", "--fault-calls", "5", "--fault-at-call", "3",
                "--no-progress", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result["load"]) == set(result["fault"]) == {"baseline", "refactored"}
    for mode in ("baseline", "refactored"):
        load = result["load"][mode]
        assert load["calls"] > 0 and load["completed"] == load["calls"], load
        assert load["media_latency_ms"] is not None and load["media_latency_ms"]["p99"] > 0
    refactored, baseline = result["fault"]["refactored"], result["fault"]["baseline"]
    assert 1.9 <= refactored["detection_s"] <= 3.0
    assert refactored["calls_dropped"] == 0 and refactored["hanging_mrf_dialogs"] == 0
    assert baseline["failover_s"] is None and baseline["calls_dropped"] > 0
    assert "demo: baseline vs refactored" in proc.stderr and "charging discrepancy" in proc.stderr
    report = (out / "report.html").read_text()
    assert "<svg" in report and "fault/report.html" in report and "load/report.html" in report
    assert json.loads((out / "config.json").read_text())["argv"][0] == "demo"


def test_demo_refuses_a_fault_call_past_the_run() -> None:
    proc = _run("demo", "--fault-calls", "3", "--fault-at-call", "5", timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--fault-at-call" in proc.stderr

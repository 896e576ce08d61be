"""``run.py fault --figure 11`` end to end on one short point (004 Fig. 11): calls at 4 calls/s,
the S-CSCF Incoming Leg Control crashes 1 s in; detection (Timer A + Timer B from the first
message to the dead hop) and failover are measured, printed beside the paper's and plotted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_figure_11_point_measures_detection_and_failover(tmp_path: Path) -> None:
    out = tmp_path / "fig11"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "fault", "--figure", "11", "--rates", "4", "--before", "1",
         "--after", "1", "--no-progress", "--json", "--out", str(out)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics["figure"] == "11" and metrics["mode"] == "refactored"
    (point,) = metrics["points"]
    assert point["rate"] == 4 and point["calls"] == 9  # (1 s + phase + 1 s) at 4 calls/s
    assert 1.0 <= point["fault_at_s"] <= 1.25  # 1 s plus a phase within one call interval
    assert 0 <= point["detection_trigger_s"] < 1.0
    # Timer A + Timer B run from the first message to the dead hop
    assert abs(point["detection_s"] - (point["detection_trigger_s"] + 2.0)) < 0.1
    assert point["failover_s"] is not None and point["failover_s"] <= 0.5
    for name in ("fig11.png", "fig11.svg", "report.html", "config.json", "summary.json"):
        assert (out / name).is_file(), name
    assert "004 Fig. 11" in proc.stderr and "paper" in proc.stderr

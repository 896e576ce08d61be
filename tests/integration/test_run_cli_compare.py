"""``run.py load --compare --json`` and Ctrl-C during ``run.py load``, as subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_compare_runs_both_modes_on_the_same_workload(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "run.py", "load", "--compare", "--profile", "constant", "--rate", "2", "--duration", "1",
         "--hold", "0.2", "--users", "6", "--no-media", "--out", str(tmp_path), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr
    both = json.loads(done.stdout.strip().splitlines()[-1])
    assert list(both) == ["baseline", "refactored"]
    for mode, m in both.items():
        assert m["mode"] == mode
        assert (m["calls"], m["completed"]) == (2, 2)
        assert m["results_dir"] == str(tmp_path / mode)
        assert (tmp_path / mode / "report.html").is_file()
    assert {"report.html", "summary.json", "compare_setup_cdf.svg"} <= {p.name for p in tmp_path.iterdir()}
    assert "<th>baseline</th><th>refactored</th>" in (tmp_path / "report.html").read_text()
    calls = {mode: [(s["caller"], s["callee"], s["at"]) for s in map(json.loads, (tmp_path / mode / "samples.jsonl").read_text().splitlines())
                    if s["type"] == "call"] for mode in both}
    assert sorted(calls["baseline"]) == sorted(calls["refactored"])  # the same seeded workload


def test_ctrl_c_stops_cleanly_and_writes_what_was_measured(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "run.py", "load", "--profile", "constant", "--rate", "4", "--duration", "120", "--hold", "0.2",
         "--users", "10", "--no-media", "--out", str(tmp_path), "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 60
        for line in process.stderr:  # with --json, progress goes to stderr
            if "calls planned" in line or time.monotonic() > deadline:
                break
        time.sleep(2.0)  # let some calls happen (the measurement, not a synchronisation)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    m = json.loads(out.strip().splitlines()[-1])
    assert m["interrupted"] is True and 0 < m["calls"] < 480 and m["completed"] >= 1
    assert "Interrupted" in (tmp_path / "report.html").read_text()
    assert json.loads((tmp_path / "summary.json").read_text())["interrupted"] is True

"""``run.py fault`` end to end, as a user runs it: the paper's ``silc-crash`` plan on a short
workload (the crash at the 3rd of 5 calls, one a second, held 10 s) in both modes, ``--compare
--json``; and bad plans refused with exit status 2 before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
RESULT_KEYS = ("fault_at_s", "detection_s", "failover_s", "recovery_s", "calls_in_setup_at_fault",
               "calls_in_setup_completed", "calls_dropped", "hanging_mrf_dialogs", "charging_discrepancy_bytes")


def _run(*args: str, timeout: float = 150.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "fault", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(180)
def test_silc_crash_compare_baseline_drops_and_hangs_refactored_fails_over(tmp_path: Path) -> None:
    out = tmp_path / "compare"
    proc = _run("--plan", "silc-crash", "--compare", "--at-call", "3", "--calls", "5", "--hold", "10",
                "--no-progress", "--json", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(payload) == {"baseline", "refactored"}
    for mode, r in payload.items():
        assert set(RESULT_KEYS) <= r.keys(), mode
        assert r["mode"] == mode and r["plan"] == "silc-crash" and r["calls"] == 5
        assert 1.9 <= r["fault_at_s"] <= 2.5  # the 3rd call, one a second
        assert r["calls_in_setup_at_fault"] >= 1  # the 3rd call's INVITE was on its way
        assert 0 <= r["detection_trigger_s"] < 0.5  # its INVITE reached the dead hop at once

    new = payload["refactored"]
    assert 1.9 <= new["detection_s"] <= 3.0
    assert new["failover_s"] is not None and 0 <= new["failover_s"] <= 0.5
    assert new["detection_s"] <= new["recovery_s"] <= new["detection_s"] + 1.5
    assert new["calls_in_setup_completed"] == new["calls_in_setup_at_fault"]
    assert new["calls_dropped"] == 0 and new["hanging_mrf_dialogs"] == 0
    checks = new["verdict"]["checks"]
    assert checks["detection_at"]["held"] is True and checks["setup_calls_complete"]["held"] is True
    assert checks["no_hanging_mrf_dialogs"]["held"] is True

    old = payload["baseline"]
    assert old["failover_s"] is None
    assert 5.0 <= old["detection_s"] <= 8.0  # the P-CSCF gives up after 5 retries a second apart
    assert old["calls_dropped"] >= 3  # the 3rd call and every one after it: 600 Busy Everywhere
    assert old["calls_hanging"] >= 1 and old["hanging_mrf_dialogs"] >= 1  # the BYE died at the failed module
    assert old["calls_completed"] == 0 and old["recovery_s"] is None
    assert old["verdict"]["held"] is False
    assert old["verdict"]["checks"]["no_hanging_mrf_dialogs"]["held"] is False

    # the results folders: side by side, and each mode's own
    for name in ("config.json", "summary.json", "report.html", "fault_timeline_baseline.png",
                 "fault_timeline_refactored.svg"):
        assert (out / name).is_file(), name
    for mode in ("baseline", "refactored"):
        for name in ("config.json", "summary.json", "samples.jsonl", "report.html", "fault_timeline.png"):
            assert (out / mode / name).is_file(), (mode, name)
        calls = [json.loads(line) for line in (out / mode / "samples.jsonl").read_text().splitlines()]
        assert sum(1 for s in calls if s["type"] == "call") == 5
    config = json.loads((out / "config.json").read_text())
    assert config["argv"][:3] == ["fault", "--plan", "silc-crash"] and "--compare" in config["argv"]
    again = build_parser().parse_args(config["argv"])  # what `run.py rerun` will run
    assert (again.plan, again.compare, again.at_call, again.calls, again.hold, again.seed) == ("silc-crash", True, 3, 5, 10.0, 1)
    report = (out / "report.html").read_text()
    assert "Paper vs measured" in report and "Timer A + Timer B" in report
    # the printed comparison goes to stderr with --json (stdout's last line is the JSON)
    assert "paper vs measured" in proc.stderr and "verdict (refactored)" in proc.stderr


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[[fault]]\nkind = "crash"\ntarget = "scscf.nowhere"\nat_call = 2\n', "fault[0].target"),
        ('[[fault]]\nkind = "delay"\nlink = ["pcscf", "scscf.session_controller"]\nduration = "5 parsecs"\n'
         '[fault.params]\ndelay = "20ms"\n', "fault[0].duration"),
        ('[[fault]]\nkind = "loss"\nlink = ["pcscf", "hss"]\n[fault.params]\nprobability = 0.1\n', "fault[0].link"),
        ('[load]\ncalls = 3\n[[fault]]\nkind = "crash"\ntarget = "pcscf"\nat_call = 9\n', "fault[0].at_call"),
        ('[load]\ncall_interval_s = "soon"\n[[fault]]\nkind = "crash"\ntarget = "pcscf"\n', "load.call_interval_s"),
    ],
)
@pytest.mark.timeout(60)
def test_a_bad_plan_stops_before_the_run_naming_the_field(tmp_path: Path, text: str, field: str) -> None:
    plan = tmp_path / "bad.toml"
    plan.write_text(text)
    out = tmp_path / "never"
    proc = _run("--plan", str(plan), "--json", "--out", str(out), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert field in proc.stderr and "run.py fault: error:" in proc.stderr
    assert proc.stdout == "" and not out.exists()  # nothing ran, nothing was written


@pytest.mark.timeout(60)
def test_unknown_plan_name_and_misused_options_are_usage_errors() -> None:
    proc = _run("--plan", "no-such-plan")
    assert proc.returncode == 2 and "silc-crash" in proc.stderr  # the built-in names are listed
    proc = _run("--figure", "11", "--plan", "silc-crash")
    assert proc.returncode == 2 and "--figure" in proc.stderr
    proc = _run("--plan", "silc-crash", "--rates", "2,4")
    assert proc.returncode == 2 and "--rates" in proc.stderr
    proc = _run("--figure", "10a", "--rates", "2,-1")
    assert proc.returncode == 2 and "rate" in proc.stderr
    proc = _run("--plan", "lossy-link", "--at-call", "3")  # its faults are time-triggered: nothing to move
    assert proc.returncode == 2 and "--at-call" in proc.stderr

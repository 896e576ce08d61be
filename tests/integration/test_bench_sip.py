"""``python run.py bench sip``: the SIPp benchmark end to end with a tiny workload, and its parts.

The end-to-end test runs the real command (``serve`` subprocesses, Kamailio when installed, SIPp)
with two 3-second steps at 10 and 20 calls/s and checks the JSON line's shape and figures. The
other tests check the pieces that decide the figures (percentiles, pass rule, ``max_cps``), the
port relocation of the topologies, the parsing of SIPp's files, the ``--max-seconds`` bound and
the command line's answers to bad input.

SIPp missing skips the tests that need it on a developer machine and fails them in CI (``CI=true``,
where ``.ci/run`` installs it); Kamailio missing only turns its target into a "skipped" entry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from actors.topology import load_topology
from experiments.bench_sip import (
    PASS_P99_MS,
    TARGETS,
    TOPOLOGIES,
    BenchConfig,
    Sipp,
    callee_names,
    format_table,
    free_port_block,
    max_cps,
    parse_rtt_csv,
    parse_stat_csv,
    percentile,
    relocate_topology,
    run_bench,
    step_passed,
)
from experiments.kamailio import KAMAILIO_CFG, find_kamailio

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STEP_KEYS = {"cps", "failed", "p50_ms", "p99_ms", "planned", "attempted", "succeeded", "passed"}


def require_sipp() -> str:
    path = shutil.which("sipp")
    if path is None:
        reason = "sipp is not installed (.ci/run installs it: apt-get install sip-tester)"
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def run_cli(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def step(cps: float, *, failed: int = 0, p99: float | None = 100.0, planned: int = 10, attempted: int = 10) -> dict[str, Any]:
    return {"cps": cps, "failed": failed, "p50_ms": 50.0, "p99_ms": p99, "planned": planned, "attempted": attempted}


# ---------------------------------------------------------------------------------- end to end


@pytest.mark.timeout(300)
def test_bench_sip_end_to_end_json(tmp_path: Path) -> None:
    """Every target with two tiny steps: all calls succeed, the JSON line has the documented shape."""
    require_sipp()
    started = time.monotonic()
    out = run_cli(
        "bench", "sip", "--rates", "10,20", "--step-seconds", "3", "--hold-ms", "500",
        "--targets", ",".join(TARGETS), "--max-seconds", "240", "--workdir", str(tmp_path), "--json",
        timeout=280,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert out.returncode == 0, f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert list(results) == list(TARGETS), results.keys()
    assert elapsed < 240 + 30, f"the run took {elapsed:.0f} s, beyond --max-seconds 240"
    kamailio_installed = find_kamailio() is not None
    for name, record in results.items():
        if name == "kamailio" and not kamailio_installed:
            assert record["max_cps"] is None and record["steps"] == [], record
            assert "not installed" in record["skipped"], record
            continue
        context = f"{name}: {json.dumps(record, indent=1)}\n{out.stderr[-3000:]}"
        assert "error" not in record and "skipped" not in record, context
        assert [s["cps"] for s in record["steps"]] == [10, 20], context
        for s in record["steps"]:
            assert STEP_KEYS <= set(s), context
            assert s["planned"] == s["attempted"] == s["succeeded"] == s["cps"] * 3, context
            assert s["failed"] == 0, context
            # the emulated UE rings 50 ms before it answers: no setup can be faster
            assert 50 <= s["p50_ms"] <= s["p99_ms"] <= s["max_ms"], context
            assert s["setup_samples"] == s["succeeded"], context
        expected = max((s["cps"] for s in record["steps"] if s["p99_ms"] < PASS_P99_MS), default=0)
        assert record["max_cps"] == expected, context
        assert (tmp_path / name / "step01-10cps" / "stat.csv").is_file()
    # the serve subprocesses were stopped (SIGINT) and exited cleanly
    assert results["one_process"]["exit_status"] == 0, results["one_process"]
    assert results["two_process"]["exit_status"] == 0, results["two_process"]


@pytest.mark.timeout(120)
def test_bench_sip_table_without_json(tmp_path: Path) -> None:
    """Without --json: the side-by-side table, one row per rate and the max_cps row."""
    require_sipp()
    out = run_cli(
        "bench", "sip", "--rates", "10", "--step-seconds", "2", "--hold-ms", "200",
        "--targets", "one_process", "--workdir", str(tmp_path), timeout=100,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = out.stdout.splitlines()
    assert any(row.split("|")[0].strip() == "10" and " ok" in row for row in rows), out.stdout
    assert any(row.startswith(" max_cps |") and row.split("|")[1].strip() == "10" for row in rows), out.stdout


def test_max_seconds_bounds_the_run(tmp_path: Path) -> None:
    """With too little time for one step, no target is started and each says why."""
    require_sipp()
    config = BenchConfig(rates=(10,), step_seconds=60, max_seconds=5, workdir=tmp_path)
    started = time.monotonic()
    results = run_bench(config, kamailio_binary="/bin/true")
    assert time.monotonic() - started < 5
    assert list(results) == list(TARGETS)
    for record in results.values():
        assert record["steps"] == [] and record["truncated"] is True and record["max_cps"] == 0, record
        assert "--max-seconds" in record["note"]
    assert not (tmp_path / "one_process" / "serve.log").exists()


# ---------------------------------------------------------------------------------- the figures


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([], 50) is None
    # 200 samples, 2 slow ones: p99 is the 198th, still fast; a third slow one makes it slow
    assert percentile([60.0] * 198 + [900.0] * 2, 99) == 60.0
    assert percentile([60.0] * 197 + [900.0] * 3, 99) == 900.0


def test_pass_rule_and_max_cps() -> None:
    assert step_passed(step(50))
    assert not step_passed(step(50, failed=1))
    assert not step_passed(step(50, p99=PASS_P99_MS))  # strictly under 250 ms
    assert step_passed(step(50, p99=PASS_P99_MS - 1))
    assert not step_passed(step(50, p99=None))  # no call set up at all
    assert not step_passed(step(50, attempted=9))  # SIPp could not place every planned call
    assert max_cps([step(50), step(100), step(150, failed=3)]) == 100
    assert max_cps([step(50, p99=400.0)]) == 0
    assert max_cps([]) == 0


def test_table_puts_targets_side_by_side() -> None:
    results = {
        "one_process": {"max_cps": 50, "steps": [{**step(50), "passed": True, "target_cpu_pct": 40.0},
                                                  {**step(100, failed=4), "passed": False, "target_cpu_pct": 99.0}]},
        "kamailio": {"max_cps": None, "steps": [], "skipped": "kamailio is not installed"},
    }  # fmt: skip
    table = format_table(results)
    rows = {row.split("|")[0].strip(): row for row in table.splitlines() if "|" in row}
    assert "one_process" in rows["calls/s"] and "kamailio" in rows["calls/s"]
    assert rows["50"].split("|")[1].split()[0] == "0" and "ok" in rows["50"]
    assert rows["100"].split("|")[1].split()[0] == "4" and "FAIL" in rows["100"]
    assert rows["max_cps"].split("|")[1].strip() == "50" and rows["max_cps"].split("|")[2].strip() == "skipped"
    assert "kamailio: kamailio is not installed" in table


# ---------------------------------------------------------------------------------- the parts


@pytest.mark.parametrize("name", ["one_process", "two_process"])
def test_relocated_topology_keeps_its_shape(tmp_path: Path, name: str) -> None:
    original = load_topology(TOPOLOGIES[name])
    path, ports = relocate_topology(TOPOLOGIES[name], 12000, tmp_path / "moved.toml")
    moved = load_topology(path)
    lowest = min(nf.port for nf in original)
    assert ports["pcscf"] == 12000 + original["pcscf"].port - lowest
    for nf in original:
        assert moved[nf.name].port == 12000 + nf.port - lowest
        assert moved[nf.name].process == nf.process and moved[nf.name].kind == nf.kind
        assert moved[nf.name].options == nf.options  # the RTP port ranges are left alone
    assert moved.links == original.links and moved.processes() == original.processes()


def test_callees_are_the_topology_ue_pool_users() -> None:
    names = callee_names(TOPOLOGIES["one_process"])
    assert names[0] == "ue0001" and names[-1] == "ue1000" and len(names) == 1000
    assert callee_names(TOPOLOGIES["one_process"], 3) == ["ue0001", "ue0002", "ue0003"]


def test_free_port_block_is_free_and_below_rtp_ranges() -> None:
    first = free_port_block(28, seed=1)
    assert 10000 <= first and first + 28 <= 19999


def test_sipp_scenario_is_stock_uac_with_rotating_callee(tmp_path: Path) -> None:
    sipp = Sipp.prepare(require_sipp(), tmp_path, ["ue0001", "ue0002"], 15000)
    scenario = sipp.scenario.read_text()
    assert "[service]" not in scenario
    assert "INVITE sip:[field0]@[remote_ip]:[remote_port] SIP/2.0" in scenario
    assert 'rtd="true"' in scenario  # SIPp measures INVITE -> 200
    assert sipp.callees.read_text() == "SEQUENTIAL\nue0001;\nue0002;\n"
    command = sipp.command(("127.0.0.1", 5060), 50, 3000, BenchConfig(), tmp_path / "stat.csv")
    joined = " ".join(command)
    for part in ("-r 50 ", "-m 3000 ", "-d 5000 ", "-i 127.0.0.1 ", "-mi 127.0.0.1 ", "-trace_rtt", "-timeout_error"):
        assert part in joined, joined


def test_parse_sipp_files() -> None:
    stat = "A;OutgoingCall(C);SuccessfulCall(C);FailedCall(C)\n1;2;2;0\n9;30;28;2\n"
    assert parse_stat_csv(stat) == {"A": "9", "OutgoingCall(C)": "30", "SuccessfulCall(C)": "28", "FailedCall(C)": "2"}
    assert parse_stat_csv("only a header\n") == {}
    rtt = "Date_ms;response_time_ms;rtd_no\n108.001;52;1\n204.001;61;1\n250;9;2\ngarbage\n300;x;1\n"
    assert parse_rtt_csv(rtt) == [52.0, 61.0]


def test_kamailio_config_is_valid() -> None:
    binary = find_kamailio()
    if binary is None:
        pytest.skip("kamailio is not installed (the bench skips its target)")
    out = subprocess.run(
        [binary, "-c", "-f", str(KAMAILIO_CFG), "-A", "LISTEN_PORT=15999", "-A", 'UAS_URI="sip:127.0.0.1:15998"'],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "udp: 127.0.0.1 [127.0.0.1]:15999" in out.stdout + out.stderr


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rates", "50,abc"], "expected calls/s numbers"),
        (["--rates", "50,-1"], "a rate must be a number > 0"),
        (["--targets", "one_process,asterisk"], "targets are one_process, two_process, kamailio"),
        (["--step-seconds", "0"], "expected a number > 0"),
        (["--max-seconds", "soon"], "expected a number of seconds"),
        (["--base-port", "80"], "expected a port 1024..65000"),
    ],
)
def test_bad_options_get_a_precise_error(args: list[str], message: str) -> None:
    out = run_cli("bench", "sip", *args, timeout=30)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_bench_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="targets must be among"):
        BenchConfig(targets=("nope",))
    with pytest.raises(ValueError, match="rates must be positive"):
        BenchConfig(rates=(10, 0))
    with pytest.raises(ValueError, match="callees must be >= 1"):
        BenchConfig(callees=0)

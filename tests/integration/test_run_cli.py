"""``run.py`` subcommands end to end as subprocesses: exit codes, --json last line, results folder, rerun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WAIT = 120


def run_py(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "run.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=WAIT)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


SHORT = ("--profile", "constant", "--rate", "3", "--duration", "1", "--hold", "0.2", "--users", "10", "--no-media")


def test_load_json_results_folder_and_rerun(tmp_path: Path) -> None:
    first = run_py("load", *SHORT, "--seed", "9", "--callee", "round_robin", "--out", str(tmp_path / "a"), "--json")
    assert first.returncode == 0, first.stderr
    m = last_json(first.stdout)
    assert (m["calls"], m["completed"], m["failed"]) == (3, 3, 0)
    assert m["results_dir"] == str(tmp_path / "a")
    assert set(m["setup_ms"]) == {"p50", "p90", "p99", "p999", "max"}
    assert m["media_latency_ms"] is None and m["mode"] == "refactored"
    names = {p.name for p in (tmp_path / "a").iterdir()}
    assert {"config.json", "samples.jsonl", "summary.json", "report.html", "sip_latency_cdf.png", "sip_latency_cdf.svg"} <= names
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["argv"] == ["load", *SHORT, "--seed", "9", "--callee", "round_robin"]

    again = run_py("rerun", str(tmp_path / "a"), "--out", str(tmp_path / "b"), "--json")
    assert again.returncode == 0, again.stderr
    m2 = last_json(again.stdout)
    assert m2["results_dir"] == str(tmp_path / "b")
    assert (m2["calls"], m2["completed"]) == (3, 3)
    config2 = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config2["argv"] == config["argv"] and config2["load"] == config["load"]
    pairs = lambda folder: [(s["caller"], s["callee"], s["at"]) for s in map(json.loads, (folder / "samples.jsonl").read_text().splitlines()) if s["type"] == "call"]  # noqa: E731
    assert sorted(pairs(tmp_path / "a")) == sorted(pairs(tmp_path / "b")) == [
        ("ue0001", "ue0002", 0.0), ("ue0003", "ue0004", 0.3333), ("ue0005", "ue0006", 0.6667)]


def test_plain_output_ends_with_the_summary_table_and_report_path(tmp_path: Path) -> None:
    done = run_py("load", *SHORT, "--out", str(tmp_path / "r"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == f"report: {tmp_path / 'r' / 'report.html'}"
    assert any(line.strip().startswith("calls placed") and line.strip().endswith("3") for line in lines)
    assert any(line.startswith("[load refactored]") for line in lines)  # the non-TTY progress lines


def test_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    for argv, message in (
        (("load", "--start-rate", "4", "--max-rate", "2"), "the ramp ends before it starts"),
        (("load", "--max-rate", "-3"), "a rate cannot be negative"),
        (("load", "--wat"), "unrecognized arguments: --wat"),
        (("rerun", str(tmp_path)), "no config.json"),
    ):
        done = run_py(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert done.stdout == ""
        assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr


def test_an_ims_that_cannot_register_fails_with_status_1(tmp_path: Path) -> None:
    lonely = tmp_path / "pool_only.toml"
    lonely.write_text('[nf.ue_pool]\nkind = "ue_pool"\n')
    done = run_py("load", "--topology", str(lonely), "--users", "4", "--no-media", "--out", str(tmp_path / "o"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("run.py load: failed: ") and "P-CSCF" in done.stderr


def test_bench_media_takes_its_own_options() -> None:
    bench_help = run_py("bench", "media", "--help")
    assert bench_help.returncode == 0 and "--max-calls" in bench_help.stdout
    bad = run_py("bench", "media", "--duration", "-1")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr

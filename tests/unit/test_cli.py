"""experiments.cli: options, --help, and bad input refused with one line and status 2 before anything starts."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from experiments import cli

ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["load", "--bogus"], "unrecognized arguments: --bogus"),
        (["load", "--step", "-1"], "argument --step: a rate cannot be negative"),
        (["load", "--max-rate", "-5"], "argument --max-rate: a rate cannot be negative"),
        (["load", "--start-rate", "0"], "argument --start-rate: expected calls/s > 0"),
        (["load", "--start-rate", "5", "--max-rate", "2"], "the ramp ends before it starts"),
        (["load", "--duration", "0"], "argument --duration: expected a number > 0"),
        (["load", "--hold", "exp:-1"], "hold: mean"),
        (["load", "--profile", "steps", "--steps", "5:x"], "--steps: expected SECONDS:RATE"),
        (["load", "--profile", "sine"], "argument --profile: invalid choice"),
        (["load", "--mode", "fast"], "argument --mode: invalid choice"),
        (["load", "--topology", "/nonexistent.toml"], "argument --topology: no such file"),
        (["load", "--time-scale", "nan"], "argument --time-scale"),
        (["load", "--media", "--no-media"], "not allowed with argument"),
        (["rerun"], "the following arguments are required: DIR"),
        (["bench", "sip", "--rates", "10,-1"], "a rate must be a number > 0"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_status_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert message in err and "error:" in err


def test_unwritable_out_and_bad_topology_stop_before_anything_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(["load", "--no-media", "--out", str(blocker / "sub")], capsys)
    assert code == 2 and err.startswith("run.py load: error: --out") and "cannot write" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('[nf.x]\nkind = "pcscf"\nport = "abc"\n')
    code, _, err = run(["load", "--no-media", "--topology", str(bad)], capsys)
    assert code == 2 and "nf.x.port: expected an integer" in err
    no_pool = tmp_path / "no_pool.toml"
    no_pool.write_text('[nf.p]\nkind = "pcscf"\n')
    code, _, err = run(["load", "--no-media", "--topology", str(no_pool), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "needs a ue_pool" in err
    assert not (tmp_path / "o").exists()


def test_rerun_refuses_what_is_not_a_results_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["rerun", str(tmp_path)], capsys)
    assert code == 2 and "no config.json" in err
    (tmp_path / "config.json").write_text('{"argv": ["rerun", "x"]}')
    code, _, err = run(["rerun", str(tmp_path)], capsys)
    assert code == 2 and "cannot be repeated" in err


def test_fault_names_a_bad_plan(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["fault", "--plan", "no-such-plan"], capsys)
    assert code == 2 and "no-such-plan" in err and err.strip().count("\n") == 0


@pytest.mark.parametrize(
    "argv, words",
    [
        ([], ["demo", "serve", "load", "fault", "bench", "rerun"]),
        (["load"], ["--profile", "--start-rate", "--step", "--max-rate", "--duration", "--hold", "--calls", "--compare",
                    "--media", "--topology", "--mode", "--seed", "--time-scale", "--out", "--json"]),
        (["serve"], ["--topology", "--duration", "--process", "--json"]),
        (["rerun"], ["DIR", "--out", "--json"]),
        (["bench", "sip"], ["--rates", "--step-seconds", "--json"]),
        (["bench", "media"], ["--duration", "--max-calls", "--json"]),
        (["fault"], ["--plan", "--compare", "--figure", "--at-call", "--mode", "--seed", "--out", "--json"]),
        (["demo"], ["--max-rate", "--hold", "--fault-calls", "--fault-at-call", "--seed", "--out", "--json"]),
    ],
)
def test_help_explains_every_option(argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([*argv, "--help"], capsys)
    assert code == 0
    for word in words:
        assert word in out, word


def test_record_argv_drops_output_options_and_pins_the_seed() -> None:
    args = argparse.Namespace()
    assert cli.record_argv(args, ["load", "--out", "x", "--json", "--max-rate", "3"], 7) == [  # noqa: SLF001
        "load", "--max-rate", "3", "--seed", "7"]
    assert cli.record_argv(args, ["load", "--out=x", "--seed", "2"], 7) == ["load", "--seed", "2"]  # noqa: SLF001


def test_run_py_only_parses() -> None:
    source = (ROOT / "run.py").read_text()
    assert "from experiments.cli import" in source
    assert "argparse" not in source and "deploy" not in source

"""experiments.results / plots / report / progress: the results folder a run leaves behind."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from experiments.histogram import Histogram
from experiments.progress import Progress
from experiments.report import flatten, print_compare_table, print_summary_table, summary_rows, write_report
from experiments.results import ResultsError, RunResult, prepare_results_dir, read_config, write_json, write_results


def sample_result() -> RunResult:
    setup, media = Histogram(), Histogram()
    setup.record_all([50.0, 60.0, 70.0, 300.0])
    media.record_all([1.0, 2.0, 120.0])
    metrics = {"mode": "baseline", "calls": 4, "completed": 3, "failed": 1, "max_cps": 2,
               "setup_ms": {"p50": 60.0, "p90": 300.0, "p99": 300.0, "p999": 300.0, "max": 300.0},
               "media_latency_ms": {"p50": 2.0, "p90": 120.0, "p99": 120.0, "max": 120.0}, "media_loss": 0.0,
               "results_dir": None}
    ticks = [{"type": "tick", "t": float(t), "offered_cps": 2, "started_cps": 2, "completed_cps": 1, "active": 1,
              "setup_p50_ms": 60.0, "setup_p99_ms": 70.0} for t in (1, 2, 3)]
    return RunResult(
        "load", {"argv": ["load"]}, metrics, {"sip": {"calls": 4}}, ticks + [{"type": "call", "status": 200}],
        {"setup_ms": setup, "media_latency_ms": media},
        events=[{"t": 1.5, "event": "fault injected"}, {"t": 3.5, "event": "detection"}],
        instances=[{"t": 0, "pcscf": 1}, {"t": 2, "pcscf": 2}],
        paper=[{"figure": "004 Fig. 9", "quantity": "media latency", "paper": "< 50 ms", "measured": "p99 120 ms"}],
        interrupted=True,
    )


def test_results_folder_has_everything(tmp_path: Path) -> None:
    folder = prepare_results_dir(tmp_path / "run", "load")
    result = sample_result()
    report = write_results(result, folder)
    names = {p.name for p in folder.iterdir()}
    for stem in ("sip_latency_cdf", "media_latency_cdf", "over_time", "fault_timeline", "instances"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names, stem
        assert (folder / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
    assert {"samples.jsonl", "summary.json", "report.html"} <= names
    lines = (folder / "samples.jsonl").read_text().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["tick", "tick", "tick", "call"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["metrics"]["results_dir"] == str(folder)
    assert Histogram.from_dict(summary["histograms"]["setup_ms"]).count == 4
    html = report.read_text()
    assert report == folder / "report.html"
    assert html.count("<svg") == 5  # every plot inline: the page needs no other file
    assert "Interrupted" in html and "Paper vs measured" in html and "&lt; 50 ms" in html
    assert "fault injected" in html
    assert 'src="' not in html.replace('src="data:', "")  # no external references


def test_report_falls_back_to_base64_png(tmp_path: Path) -> None:
    from experiments.plots import Figure

    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG fake")
    page = write_report(tmp_path, title="t", metrics={"calls": 1},
                        figures=[Figure("x", "x plot", png, tmp_path / "missing.svg")]).read_text()
    assert "data:image/png;base64," in page


def test_compare_report_puts_runs_side_by_side(tmp_path: Path) -> None:
    page = write_report(tmp_path, title="cmp", metrics={}, columns={"baseline": {"calls": 1}, "refactored": {"calls": 2}})
    assert "<th>baseline</th><th>refactored</th>" in page.read_text()


def test_prepare_results_dir_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ResultsError, match="not a folder"):
        prepare_results_dir(a_file, "load")
    with pytest.raises(ResultsError, match="cannot write"):
        prepare_results_dir(a_file / "sub", "load")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ResultsError, match="cannot write"):
            prepare_results_dir(locked / "x", "load")


def test_default_results_dir_is_named_by_experiment_and_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import experiments.results as results

    monkeypatch.setattr(results, "RESULTS_ROOT", tmp_path)
    first = prepare_results_dir(None, "load")
    second = prepare_results_dir(None, "load")
    assert first.parent == tmp_path and first.name.startswith("load-20") and first.name.endswith("Z")
    assert second != first


def test_read_config(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no config.json"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ResultsError, match="cannot read"):
        read_config(tmp_path)
    write_json(tmp_path / "config.json", {"argv": ["load", "--seed", "3"]})
    assert read_config(tmp_path)["argv"] == ["load", "--seed", "3"]


def test_summary_rows_and_tables() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == [("a.b", 1), ("a.c.d", 2), ("e", 3)]
    rows = dict(summary_rows(sample_result().metrics))
    assert rows["setup INVITE->200 p99 (ms)"] == "300"
    assert rows["media one-way p50 (ms)"] == "2"
    assert "results_dir" not in rows
    out = io.StringIO()
    print_summary_table(sample_result().metrics, title="load", stream=out)
    text = out.getvalue()
    assert text.startswith("load\n") and "calls placed" in text and "\x1b[" not in text
    out = io.StringIO()
    print_compare_table({"baseline": {"calls": 1}, "refactored": {"calls": 22}}, stream=out)
    assert "baseline" in out.getvalue().splitlines()[1] and out.getvalue().rstrip().endswith("22")


def test_progress_plain_lines_and_events() -> None:
    out = io.StringIO()
    progress = Progress("load", 10, stream=out, every=0.0)
    with progress:
        progress.update(elapsed=2.0, rate=3.0, active=4, calls="5/6", success=0.5, p99_setup_ms=12.25)
        progress.event(2.5, "fault injected")
    lines = out.getvalue().splitlines()
    assert lines[0] == "[load] 2/10 s | call rate 3.0/s | calls 5/6 | active calls 4 | success 50.0% | p99 setup 12.2 ms"
    assert lines[1] == "[load] t=2.500s fault injected"
    assert lines[-1].endswith("(done)")


def test_progress_disabled_prints_nothing_and_live_renders() -> None:
    out = io.StringIO()
    with Progress("x", enabled=False, stream=out) as progress:
        progress.update(rate=1.0)
        progress.event(0.0, "e")
    assert out.getvalue() == ""
    live = Progress("x", 5, stream=io.StringIO(), live=True)
    live.update(elapsed=1.0, rate=2.0, active=1)
    live.event(0.5, "detected")
    from rich.console import Console

    console = Console(file=io.StringIO(), width=80)
    console.print(live._render())  # noqa: SLF001
    assert "detected" in console.file.getvalue() and "call rate" in console.file.getvalue()  # type: ignore[attr-defined]

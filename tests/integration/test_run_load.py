"""``experiments.run_load`` from Python: the IMS on loopback (ephemeral ports), short workloads."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path

import pytest

from experiments import LoadConfig, run_load
from experiments.load import media_supported
from experiments.workloads import Constant, Fixed, Ramp

pytestmark = pytest.mark.integration

DOCUMENTED_KEYS = {"calls", "completed", "failed", "max_cps", "setup_ms", "media_latency_ms", "media_loss", "results_dir",
                   "mode", "timeouts", "success_rate", "ringing_ms", "retransmissions", "duration_s", "interrupted"}


def test_a_ramp_through_the_ims_writes_a_full_results_folder(tmp_path: Path) -> None:
    config = LoadConfig(profile=Ramp(2, 2, 4), hold=Fixed(0.2), users=10, media=False, mode="baseline", seed=5)
    result = run_load(config, out=tmp_path / "run")
    m = result.metrics
    assert DOCUMENTED_KEYS <= set(m)
    assert m["mode"] == "baseline"
    assert (m["calls"], m["completed"], m["failed"]) == (6, 6, 0)  # 2 in the first second, 4 in the second
    assert m["max_cps"] in (2, 4)  # 4 unless the machine made that second's p99 >= 250 ms
    setup = m["setup_ms"]
    assert 0 < setup["p50"] <= setup["p90"] <= setup["p99"] <= setup["p999"] <= setup["max"]
    assert m["media_latency_ms"] is None and m["media_loss"] is None
    assert m["interrupted"] is False
    folder = Path(m["results_dir"])
    assert folder == tmp_path / "run" == result.results_dir
    assert {"config.json", "samples.jsonl", "summary.json", "report.html", "sip_latency_cdf.svg", "over_time.png"} <= {
        p.name for p in folder.iterdir()}
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    calls = [s for s in samples if s["type"] == "call"]
    assert len(calls) == 6 and all(s["completed"] and s["status"] == 200 for s in calls)
    assert sorted(s["at"] for s in calls) == [0.0, 0.5, 1.0, 1.25, 1.5, 1.75]
    modules = [s for s in samples if s["type"] == "module"]
    pcscf = next(s for s in modules if s["name"] == "pcscf")
    assert pcscf["msgs_in"] > 6 * 4  # each call crosses the P-CSCF twice each way, plus registrations
    saved = json.loads((folder / "config.json").read_text())
    assert LoadConfig.from_dict(saved["load"]) == config  # enough to repeat the run
    assert saved["seed"] == 5 and saved["mode"] == "baseline"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["sip"]["registration"]["registered"] == 10
    assert summary["sip"]["transactions_ms"]["BYE"]["count"] == 6


def test_stop_ends_the_run_early_and_keeps_what_was_measured(tmp_path: Path) -> None:
    stop = threading.Event()
    config = LoadConfig(profile=Constant(4, 60), hold=Fixed(0.2), users=10, media=False)
    timer = threading.Timer(4.0, stop.set)  # registration takes ~1 s, then calls for ~3 s
    timer.start()
    try:
        result = run_load(config, out=tmp_path / "run", stop=stop)
    finally:
        timer.cancel()
    m = result.metrics
    assert m["interrupted"] is True
    assert 0 < m["calls"] < 240
    assert m["completed"] >= 1
    assert m["duration_s"] < 30
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Interrupted" in html
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["interrupted"] is True


def test_write_false_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import experiments.results as results

    monkeypatch.setattr(results, "RESULTS_ROOT", tmp_path)
    result = run_load(profile="constant", rate=3, duration=1.0, hold=0.1, users=4, media=False, write=False)
    assert result.metrics["calls"] == 3 and result.results_dir is None
    assert list(tmp_path.iterdir()) == []


def test_time_scale_runs_the_schedule_faster() -> None:
    started = time.monotonic()
    result = run_load(profile="constant", rate=4, duration=4, hold=2.0, users=6, media=False, time_scale=4, write=False)
    wall = time.monotonic() - started
    assert (result.metrics["calls"], result.metrics["completed"]) == (16, 16)
    assert result.metrics["duration_s"] >= 4.0  # emulated seconds
    assert wall < 4.0 + 3.0  # 4 emulated s of calls + 2 s holds at 4x, plus deploy and registration


@pytest.mark.skipif(not media_supported() or importlib.util.find_spec("nf_modules.mediacore.engine") is None,
                    reason="this build's UE pool carries no media")
def test_media_metrics_when_the_pool_carries_media(tmp_path: Path) -> None:
    result = run_load(profile="constant", rate=2, duration=1.0, hold=1.0, users=4, media=True, out=tmp_path / "m")
    m = result.metrics
    assert m["completed"] == 2
    latency = m["media_latency_ms"]
    assert latency is not None and 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    assert m["media_latency_approximate"] is False  # every leg's engine buckets merged into one histogram
    assert result.summary["media"]["calls"] == 4  # both legs of both calls
    assert m["media_loss"] is not None and 0 <= m["media_loss"] < 0.5
    assert (tmp_path / "m" / "media_latency_cdf.svg").is_file()

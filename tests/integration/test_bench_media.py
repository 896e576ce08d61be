"""``python run.py bench media``: the media benchmark end to end with a tiny workload, and its parts.

The C programs are built with gcc into a temporary directory. Their test drives the sender and
the sink directly (a bounded, stamped, multi-flow stream: everything sent arrives, every packet
carries a latency stamp, no sequence gap; arrival read by the sink or taken from the kernel), then the C relay in between (every packet forwarded
arrives with its payload type rewritten). The end-to-end test runs the real command (1 s per
measurement, one round, 10 and 20 calls) and checks the JSON line's keys, that the figures are
positive and that in every max-calls step the sink received exactly what the sender sent. No
timing is asserted: the machine is shared.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.media.programs import Role, build_programs
from experiments.bench_media import build_parser, max_calls_passed

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build benchmarks/media/*.c"),
]

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_programs(tmp_path_factory.mktemp("bench_media_build"))


def _send(programs: dict[str, Path], dests: list[str], count: int, rate: int, stamp: bool) -> dict:
    argv = [str(programs["sender"]), "--rate", str(rate), "--count", str(count), "--duration", "30"]
    for dest in dests:
        argv += ["--dest", dest]
    if stamp:
        argv.append("--stamp")
    with Role("sender", argv, ready=False) as sender:
        return sender.result(TIMEOUT)


@pytest.mark.parametrize("arrival", [[], ["--kernel-time", "--lazy-us", "1000"]], ids=["read-time", "kernel-time"])
def test_sender_to_sink_counts_stamps_and_flows(programs: dict[str, Path], arrival: list[str]) -> None:
    count, flows = 3000, 3
    with Role("sink", [str(programs["sink"]), *arrival, "--expect", str(count), "--idle-ms", "3000",
                       "--duration", "60", "--flows", str(flows)]) as sink:
        dest = f"127.0.0.1:{sink.ready['port']}"
        sent = _send(programs, [dest] * flows, count, rate=20000, stamp=True)
        got = sink.result(TIMEOUT)
    assert sent["sent"] == count and sent["send_errors"] == 0
    assert sent["bytes_per_packet"] == 172 + 16
    assert got["received"] == count
    assert got["bytes"] == count * 188
    assert got["stamped"] == count
    assert got["pt"] == {"0": count}
    assert got["flows_seen"] == flows and got["seq_lost"] == 0
    lat = got["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["p999"] and lat["max"] > 0
    assert lat["max"] < 1000  # kernel arrival times converted to CLOCK_MONOTONIC like the stamps


def test_c_relay_rewrites_and_forwards_everything_it_gets(programs: dict[str, Path]) -> None:
    count = 2000
    with Role("sink", [str(programs["sink"]), "--expect", str(count), "--idle-ms", "3000", "--duration", "60",
                       "--flows", "1"]) as sink:
        with Role("relay", [str(programs["relay"]), "--dest", f"127.0.0.1:{sink.ready['port']}"]) as relay:
            sent = _send(programs, [f"127.0.0.1:{relay.ready['port']}"], count, rate=10000, stamp=False)
            got = sink.result(TIMEOUT)
            relayed = relay.stop()
    assert sent["bytes_per_packet"] == 172
    assert relayed["received"] == relayed["forwarded"] == count
    assert got["received"] == count and got["pt"] == {"8": count} and got["stamped"] == 0


def test_max_calls_is_the_last_pass_before_the_first_failure() -> None:
    def step(calls: int, passed: bool) -> dict:
        return {"calls": calls, "passed": passed}

    assert max_calls_passed([]) == 0
    assert max_calls_passed([step(250, False)]) == 0
    assert max_calls_passed([step(500, True), step(250, True), step(750, False), step(1000, True)]) == 500


@pytest.mark.parametrize("argv", [["--duration", "0"], ["--calls", "10,x"], ["--max-calls", "-1"], ["--repeat", "0"]])
def test_bad_options_are_rejected(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)


def test_bench_media_json_end_to_end() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.bench_media", "--duration", "1", "--repeat", "1", "--calls", "10,20",
         "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("bare_c_relay_pps", "uvloop_relay_pps", "mrfp_engine_pps", "mrfp_vs_c_relay"):
        assert result[key] > 0, (key, result)
    assert result["errors"] == {}
    assert all(v > 0 for v in result["packets_per_cpu_s"].values()), result["packets_per_cpu_s"]
    for case, rounds in result["throughput"].items():
        (only,) = rounds
        assert 0 < only["received"] <= only["sent"], case
        assert only["pt"] == {"8": only["received"]}, case  # every relay rewrote the payload type
    steps = result["calls_steps"]
    assert [s["calls"] for s in steps] == [10, 20] or (steps and not steps[-1]["passed"])
    for s in steps:
        assert s["sent"] == s["offered_pps"] == s["calls"] * 100  # 1 s at 100 packets/s a call
        assert s["received"] == s["sent"] and s["lost"] == 0 and s["seq_lost"] == 0
        assert s["flows_seen"] == 2 * s["calls"]
        assert s["p99_ms"] > 0
        floor = s["floor"]  # the harness alone at the same load: everything arrives too
        assert floor["sent"] == floor["received"] == s["sent"] and floor["p99_ms"] > 0
    assert result["max_calls_p99_under_5ms"] in (0, 10, 20)
    assert result["max_calls_driver"] in ("actor", "engine")

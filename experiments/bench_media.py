"""``python run.py bench media``: packets/s of the media plane against a bare C relay, and max calls.

All in one run, with 172-byte G.711 RTP packets (12-byte header + 160-byte mu-law payload) on
127.0.0.1, the same C sender (``benchmarks/media/sender.c``) and C sink (``sink.c``) around:

- ``bare_c_relay``: the ceiling, ``relay.c`` (recvmmsg batch, rewrite one header byte, sendmmsg);
- ``uvloop_relay``: the same forwarding in Python on uvloop (``benchmarks.media.uvloop_relay``);
- ``mrfp_engine``: the MRFP's C engine (``nf_modules.mediacore.engine.MediaEngine``) doing its
  full per-packet work: metadata records (drained by the role's event loop), the flow's
  instruction, mu-law -> A-law transcoding (``benchmarks.media.engine_relay``).

Throughput: the sender blasts for ``--duration`` seconds; a relay's figure is the rate at which
the sink received its output (first to last packet). The three cases run interleaved, ``--repeat``
rounds, so load from other processes hits them alike; a case's figure is its best round (other
processes' load only ever lowers a round) and ``mrfp_vs_c_relay`` the ratio of the best rounds
(target >= 0.90); ``median_pps`` / ``mrfp_vs_c_relay_median`` and ``mrfp_vs_c_relay_rounds``
(within each round) are given too. ``packets_per_cpu_s``: packets forwarded per CPU-second of
the relay process (median of the rounds), a figure that other load moves much less;
``mrfp_vs_c_relay_per_cpu`` compares those. The C relay and the engine both receive up to 64
packets per recvmmsg.

Max calls: the MRFP (``benchmarks.media.mrfp_calls``) with N bidirectional calls, one engine flow
per call direction, refactored mode (packets never held), every direction 50 packets/s with the
RFC 8285 send-time stamp (188-byte packets), so N calls = 100 * N packets/s. The sink measures
one-way latency (CLOCK_MONOTONIC, stamp to arrival) and counts what arrived. A step passes with
p99 < 5 ms and zero loss (every packet sent arrived); N steps up until a step fails or
``--max-calls``; ``max_calls_p99_under_5ms`` is the largest passing N before the first failure
(0 if none). A failing step is measured again (``--step-retries``, default once; a burst of other
load can fail a step that the MRFP holds); ``attempts`` says how many runs a step took. The role
drives the MRFP through its Media Processor actor's control protocol when that actor exists
(``driver: "actor"``), else the engine directly (``driver: "engine"``).
The sender sleeps at least ``--tick-us`` (0.5 ms) between batches, sending what fell due
meanwhile, and stamps each batch as it hands it to the kernel; the sink takes each packet's
arrival time from the kernel (SO_TIMESTAMPNS): neither's scheduling delays count as MRFP
latency. Each step also runs the harness alone (sender straight to sink, ``floor``).
``--mrfp-rt`` runs the MRFP under SCHED_FIFO (the other load of a shared machine then no longer
delays it).

Everything runs on the caller's thread: subprocesses started and awaited with timeouts.

    python -m experiments.bench_media [--duration S] [--repeat R] [--calls 100,250,500,...]
                                      [--max-calls N] [--calls-duration S] [--driver auto|actor|engine]
                                      [--tick-us US] [--mrfp-rt] [--relay-rt]
                                      [--step-retries K] [--no-floor] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.media.programs import BenchProcessError, Role, build_programs, python_role
from experiments.cli import non_negative_float, non_negative_int, positive_float, positive_int

__all__ = [
    "DEFAULT_CALLS",
    "P99_LIMIT_MS",
    "THROUGHPUT_CASES",
    "build_parser",
    "format_table",
    "main",
    "max_calls_passed",
    "run_bench_media",
]

HOST = "127.0.0.1"
THROUGHPUT_CASES = ("bare_c_relay", "uvloop_relay", "mrfp_engine")
DEFAULT_CALLS = (100, 250, 500, 750, 1000, 1250, 1500, 2000, 2500)
RELAY_BATCH = 64  # packets per recvmmsg of the C relay and of the engine in the throughput cases
P99_LIMIT_MS = 5.0
RT_PRIORITY = 10
# The max-calls sink takes arrival times from the kernel (SO_TIMESTAMPNS), so it may read lazily:
# its own wake-up delays never count (measured here at 100,000 packets/s, sender straight to sink:
# p99 1.5 ms reading eagerly at normal priority, 0.2 ms with kernel times and 1 ms naps, at
# 40% of the sink's CPU).
SINK_ARGS = ("--kernel-time", "--lazy-us", "1000")
SENDER_TICK_US = 500.0  # max calls: the sender sends what fell due every 0.5 ms at the most
PACKETS_PER_CALL = 100  # two directions x 50 packets/s (G.711, 20 ms)
DESCRIPTION = (
    "Media plane packets/s: bare C relay vs uvloop relay vs the MRFP engine (172-byte G.711 RTP, loopback), and "
    "the most bidirectional calls the MRFP carries with p99 one-way latency < 5 ms and zero loss."
)
SINK_IDLE_MS = 1000  # the sink stops this long after the last packet (max-calls steps)
THROUGHPUT_IDLE_MS = 500  # the same for throughput rounds (the sender blasts without a pause)


def _load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _relay_argv(case: str, programs: dict[str, Path], dest: str, duration: float) -> list[str]:
    life = ["--dest", dest, "--duration", f"{duration:g}"]
    batch = ["--batch", str(RELAY_BATCH)]
    if case == "bare_c_relay":
        return [str(programs["relay"]), *life, *batch]
    if case == "uvloop_relay":
        return [*python_role("benchmarks.media.uvloop_relay"), *life]
    if case == "mrfp_engine":
        return [*python_role("benchmarks.media.engine_relay"), *life, *batch]
    raise ValueError(f"unknown throughput case {case!r}")


def measure_throughput(
    case: str, programs: dict[str, Path], duration: float, *, relay_rt: bool = False
) -> dict[str, Any]:
    """One round of one case: sink, relay, then the sender blasting ``duration`` s at the relay.

    ``relay_rt``: the relay under SCHED_FIFO when allowed (it then owns a core while the sender
    blasts; other processes' load stops moving the figure, at their expense for ``duration``)."""
    budget = duration + 60
    prefix = realtime_prefix() if relay_rt else []
    with Role("sink", [str(programs["sink"]), "--idle-ms", str(THROUGHPUT_IDLE_MS), "--duration", f"{budget:g}",
                       "--flows", "1"]) as sink:
        dest = f"{HOST}:{sink.ready['port']}"
        with Role(case, [*prefix, *_relay_argv(case, programs, dest, budget)]) as relay:
            cpu_before = relay.cpu_seconds()
            with Role("sender", [str(programs["sender"]), "--dest", f"{HOST}:{relay.ready['port']}",
                                 "--rate", "0", "--duration", f"{duration:g}"], ready=False) as sender:
                sent = sender.result(budget)
            received = sink.result(budget)
            cpu_after = relay.cpu_seconds()
            relayed = relay.stop()
    cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return {
        "pps": received["pps"],
        "relay_cpu_s": cpu,
        "packets_per_cpu_s": received["received"] / cpu if cpu else None,
        "sent": sent["sent"],
        "sender_pps": sent["pps"],
        "received": received["received"],
        "relay": relayed,
        "relay_sched": "fifo" if prefix else "normal",
        "pt": received["pt"],
    }


def realtime_prefix(priority: int = RT_PRIORITY) -> list[str]:
    """``chrt -f PRIORITY`` when this process may run SCHED_FIFO programs, else nothing.

    For ``--mrfp-rt`` / ``--relay-rt``: on a shared machine a process at normal priority waits
    for a CPU for milliseconds now and then, whatever its own load.
    """
    chrt = shutil.which("chrt")
    if chrt is None:
        return []
    try:
        ok = subprocess.run([chrt, "-f", str(priority), "true"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return []
    return [chrt, "-f", str(priority)] if ok else []


def measure_calls(
    calls: int, programs: dict[str, Path], duration: float, driver: str, *, mrfp_rt: bool = False,
    tick_us: float = SENDER_TICK_US,
) -> dict[str, Any]:
    """One max-calls step: the MRFP with ``calls`` bridges, the sender at 100 * calls packets/s.

    ``mrfp_rt``: the MRFP under SCHED_FIFO when allowed; ``tick_us``: the sender's least sleep
    between batches.
    """
    budget = duration + 120
    rt = realtime_prefix() if mrfp_rt else []
    flows = 2 * calls
    rate = PACKETS_PER_CALL * calls
    count = int(round(rate * duration))
    with tempfile.TemporaryDirectory(prefix="bench_media_") as tmp:
        with Role("sink", [str(programs["sink"]), *SINK_ARGS, "--idle-ms", str(SINK_IDLE_MS), "--duration",
                           f"{budget:g}", "--expect", str(count), "--flows", str(flows)]) as sink:
            sink_addr = f"{HOST}:{sink.ready['port']}"
            mrfp_argv = [*rt, *python_role("benchmarks.media.mrfp_calls"), "--calls", str(calls),
                         "--sink", sink_addr, "--duration", f"{budget:g}", "--driver", driver]
            with Role("mrfp", mrfp_argv, ready_timeout=120) as mrfp:
                dests = Path(tmp) / "dests.txt"
                dests.write_text("".join(f"{HOST}:{port}\n" for port in mrfp.ready["ports"]))
                cpu_before = mrfp.cpu_seconds()
                with Role("sender", [str(programs["sender"]), "--dests-file", str(dests), "--rate", str(rate),
                                     "--count", str(count), "--duration", f"{duration * 2 + 5:g}", "--stamp",
                                     "--tick-us", f"{tick_us:g}"], ready=False) as sender:
                    sent = sender.result(budget)
                received = sink.result(budget)
                cpu_after = mrfp.cpu_seconds()
                mrfp_result = mrfp.stop()
    latency = received.get("latency_ms") or {}
    lost = sent["sent"] - received["received"]
    p99 = latency.get("p99")
    return {
        "calls": calls,
        "offered_pps": rate,
        "sent": sent["sent"],
        "received": received["received"],
        "lost": lost,
        "loss": lost / sent["sent"] if sent["sent"] else 0.0,
        "seq_lost": received["seq_lost"],
        "flows_seen": received["flows_seen"],
        "p50_ms": latency.get("p50"),
        "p90_ms": latency.get("p90"),
        "p99_ms": p99,
        "p999_ms": latency.get("p999"),
        "max_ms": latency.get("max"),
        "sender_max_late_ms": sent["max_late_ms"],
        "mrfp_cpu_s": cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None,
        "sender_cpu_s": sent.get("cpu_s"),
        "sink_cpu_s": received.get("cpu_s"),
        "sink_elapsed_s": received["elapsed_s"],
        "sender_tick_us": tick_us,
        "driver": mrfp.ready.get("driver", driver),
        "mrfp_sched": "fifo" if rt else "normal",
        "mrfp": mrfp_result,
        "passed": bool(lost == 0 and received["received"] > 0 and p99 is not None and p99 < P99_LIMIT_MS),
    }


def measure_floor(calls: int, programs: dict[str, Path], duration: float, *,
                  tick_us: float = SENDER_TICK_US) -> dict[str, Any]:
    """The harness alone at a max-calls step's load: the sender straight to the sink (no MRFP),
    same flows, rate and stamps; its latency is the floor under the MRFP's figures."""
    budget = duration + 120
    flows = 2 * calls
    rate = PACKETS_PER_CALL * calls
    count = int(round(rate * duration))
    with tempfile.TemporaryDirectory(prefix="bench_media_") as tmp:
        with Role("sink", [str(programs["sink"]), *SINK_ARGS, "--idle-ms", str(SINK_IDLE_MS), "--duration",
                           f"{budget:g}", "--expect", str(count), "--flows", str(flows)]) as sink:
            dests = Path(tmp) / "dests.txt"
            dests.write_text(f"{HOST}:{sink.ready['port']}\n" * flows)
            with Role("sender", [str(programs["sender"]), "--dests-file", str(dests), "--rate", str(rate),
                                 "--count", str(count), "--duration", f"{duration * 2 + 5:g}", "--stamp",
                                 "--tick-us", f"{tick_us:g}"], ready=False) as sender:
                sent = sender.result(budget)
            received = sink.result(budget)
    latency = received.get("latency_ms") or {}
    return {"sent": sent["sent"], "received": received["received"], "p50_ms": latency.get("p50"),
            "p99_ms": latency.get("p99"), "max_ms": latency.get("max")}


def max_calls_passed(steps: Sequence[dict[str, Any]]) -> int:
    """The largest call count of the passing steps before the first failing one (0 if none)."""
    best = 0
    for step in sorted(steps, key=lambda s: s["calls"]):
        if not step["passed"]:
            break
        best = step["calls"]
    return best


def _default_driver() -> str:
    from benchmarks.media.mrfp_calls import actor_available

    return "actor" if actor_available() else "engine"


def run_bench_media(
    duration: float = 3.0,
    calls: Sequence[int] = DEFAULT_CALLS,
    *,
    repeat: int = 3,
    max_calls: int | None = None,
    calls_duration: float | None = None,
    driver: str = "auto",
    mrfp_rt: bool = False,
    tick_us: float = SENDER_TICK_US,
    floor: bool = True,
    relay_rt: bool = False,
    step_retries: int = 1,
    cases: Sequence[str] = THROUGHPUT_CASES,
    build_dir: Path | None = None,
    json: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the whole benchmark; returns the result dict (see the module docstring for its keys).

    ``json`` only tells ``log`` defaulting: progress goes to stderr when the JSON line owns stdout.
    """
    if log is None:
        stream = sys.stderr if json else sys.stdout
        log = lambda text: print(text, file=stream, flush=True)  # noqa: E731
    steps_to_run = sorted(n for n in calls if max_calls is None or n <= max_calls)
    load_before = _load()
    log(f"load: {load_before}")
    with tempfile.TemporaryDirectory(prefix="bench_media_build_") as tmp:
        programs = build_programs(build_dir or Path(tmp))
        rounds: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
        errors: dict[str, str] = {}
        for r in range(repeat):
            for case in cases:
                if case in errors:
                    continue
                try:
                    m = measure_throughput(case, programs, duration, relay_rt=relay_rt)
                except BenchProcessError as exc:
                    errors[case] = str(exc)
                    log(f"{case}: failed: {exc}")
                    continue
                rounds[case].append(m)
                log(f"round {r + 1}/{repeat} {case}: {m['pps']:,.0f} packets/s "
                    f"(sent {m['sent']:,}, received {m['received']:,})")
        best = {case: max((m["pps"] for m in ms), default=None) for case, ms in rounds.items()}
        medians = {case: _median([m["pps"] for m in ms]) for case, ms in rounds.items()}
        per_cpu = {case: _median([m["packets_per_cpu_s"] for m in ms if m["packets_per_cpu_s"]])
                   for case, ms in rounds.items()}
        if driver == "auto":
            driver = _default_driver()
        steps: list[dict[str, Any]] = []
        for n in steps_to_run:
            try:
                for attempt in range(1, step_retries + 2):
                    step = measure_calls(n, programs, calls_duration or duration, driver, mrfp_rt=mrfp_rt,
                                         tick_us=tick_us)
                    step["attempts"] = attempt
                    if step["passed"]:
                        break
                    log(f"calls {n} attempt {attempt}: p99 {step['p99_ms']} ms, lost {step['lost']}")
            except BenchProcessError as exc:
                errors[f"calls_{n}"] = str(exc)
                log(f"calls {n}: failed: {exc}")
                break
            if floor:
                try:
                    step["floor"] = measure_floor(n, programs, calls_duration or duration, tick_us=tick_us)
                except BenchProcessError as exc:
                    errors[f"floor_{n}"] = str(exc)
            steps.append(step)
            log(f"calls {n} ({step['offered_pps']:,} packets/s, driver {step['driver']}): "
                f"p99 {step['p99_ms']} ms, lost {step['lost']} -> {'pass' if step['passed'] else 'FAIL'}")
            if not step["passed"]:
                break
    c_relay = best.get("bare_c_relay")
    engine = best.get("mrfp_engine")
    c_median, engine_median = medians.get("bare_c_relay"), medians.get("mrfp_engine")
    result: dict[str, Any] = {
        "bare_c_relay_pps": _round(c_relay),
        "uvloop_relay_pps": _round(best.get("uvloop_relay")),
        "mrfp_engine_pps": _round(engine),
        "mrfp_vs_c_relay": round(engine / c_relay, 3) if engine and c_relay else None,
        "median_pps": {case: _round(v) for case, v in medians.items()},
        "mrfp_vs_c_relay_median": round(engine_median / c_median, 3) if engine_median and c_median else None,
        "mrfp_vs_c_relay_rounds": [round(e["pps"] / c["pps"], 3) for c, e in
                                   zip(rounds.get("bare_c_relay", []), rounds.get("mrfp_engine", [])) if c["pps"]],
        "max_calls_p99_under_5ms": max_calls_passed(steps) if steps_to_run else None,
        "packets_per_cpu_s": {case: _round(v) for case, v in per_cpu.items()},
        "mrfp_vs_c_relay_per_cpu": (round(per_cpu["mrfp_engine"] / per_cpu["bare_c_relay"], 3)
                                    if per_cpu.get("mrfp_engine") and per_cpu.get("bare_c_relay") else None),
        "max_calls_driver": steps[0]["driver"] if steps else driver,
        "max_calls_mrfp_sched": steps[0]["mrfp_sched"] if steps else None,
        "packet_bytes": 172,
        "stamped_packet_bytes": 188,
        "duration_s": duration,
        "relay_sched": "fifo" if relay_rt and realtime_prefix() else "normal",
        "repeat": repeat,
        "rounds": {case: [_round(m["pps"]) for m in ms] for case, ms in rounds.items()},
        "throughput": rounds,
        "calls_steps": steps,
        "load_before": load_before,
        "load_after": _load(),
        "errors": errors,
    }
    return result


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def format_table(result: dict[str, Any]) -> str:
    """The side-by-side table of the throughput cases and the max-calls steps."""
    c_relay = result["bare_c_relay_pps"]
    per_cpu = result["packets_per_cpu_s"]
    lines = ["media plane, 172-byte G.711 RTP on loopback: packets/s best of the rounds (other load only lowers "
             "a round), packets per CPU-second of the relay process median of the rounds", "",
             f"{'case':<16}{'packets/s':>12}{'vs C relay':>12}{'pkts/CPU-s':>12}{'vs C relay':>12}  rounds (packets/s)"]
    for case, key in (("bare C relay", "bare_c_relay_pps"), ("uvloop relay", "uvloop_relay_pps"),
                      ("MRFP engine", "mrfp_engine_pps")):
        name = key.removesuffix("_pps")
        pps, cpu = result[key], per_cpu.get(name)
        rounds = result["rounds"].get(name, [])
        ratio = f"{pps / c_relay:.2f}" if pps and c_relay else "-"
        c_cpu = per_cpu.get("bare_c_relay")
        cpu_ratio = f"{cpu / c_cpu:.2f}" if cpu and c_cpu else "-"
        shown = f"{pps:>12,.0f}" if pps else f"{'-':>12}"
        cpu_shown = f"{cpu:>12,.0f}" if cpu else f"{'-':>12}"
        lines.append(f"{case:<16}{shown}{ratio:>12}{cpu_shown}{cpu_ratio:>12}  "
                     + ", ".join(f"{p:,.0f}" for p in rounds if p))
    if result.get("mrfp_vs_c_relay_rounds"):
        lines.append("MRFP engine / bare C relay, round by round: "
                     + ", ".join(f"{r:.2f}" for r in result["mrfp_vs_c_relay_rounds"]))
    lines += ["", f"MRFP, N bidirectional calls at 50 packets/s each way (driver: {result['max_calls_driver']})",
              f"{'calls':>6}{'packets/s':>11}{'sent':>10}{'lost':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
              f"{'MRFP CPU':>10}{'harness CPU':>13}  pass  {'harness alone p99 ms':>20}"]
    for s in result["calls_steps"]:
        lines.append(f"{s['calls']:>6}{s['offered_pps']:>11,}{s['sent']:>10,}{s['lost']:>7}"
                     f"{_ms(s['p50_ms'])}{_ms(s['p99_ms'])}{_ms(s['max_ms'])}{_cpu_share(s, 'mrfp_cpu_s'):>10}"
                     f"{_cpu_share(s, 'sender_cpu_s', 'sink_cpu_s'):>13}"
                     f"  {'yes ' if s['passed'] else 'NO  '}{_ms((s.get('floor') or {}).get('p99_ms')):>20}")
    if result.get("mrfp_vs_c_relay_median") is not None:
        lines.append(f"medians of the rounds: MRFP engine / bare C relay = {result['mrfp_vs_c_relay_median']:.2f}")
    lines += ["", f"max calls with p99 < {P99_LIMIT_MS:g} ms and zero loss: {result['max_calls_p99_under_5ms']}",
              f"load before: {result['load_before']}", f"load after:  {result['load_after']}"]
    for name, err in result["errors"].items():
        lines.append(f"error in {name}: {err.splitlines()[0] if err else ''}")
    return "\n".join(lines)


def _cpu_share(step: dict[str, Any], *keys: str) -> str:
    """CPU time of the processes named by ``keys`` over the step's traffic span, in cores (100% = one)."""
    values, span = [step.get(key) for key in keys], step.get("sink_elapsed_s")
    if not span or any(v is None for v in values):
        return "-"
    return f"{sum(values) / span:.0%}"


def _ms(value: float | None) -> str:
    return f"{value:>9.3f}" if value is not None else f"{'-':>9}"


def _call_list(text: str) -> tuple[int, ...]:
    return tuple(positive_int(item) for item in text.split(",") if item.strip())


def build_parser(prog: str = "run.py bench media") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    add_bench_media_options(parser)
    return parser


def add_bench_media_options(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options, for ``build_parser`` and for run.py's ``bench media`` subparser."""
    parser.add_argument("--duration", type=positive_float, default=3.0, help="seconds per measurement (default 3)")
    parser.add_argument("--repeat", type=positive_int, default=3, help="rounds of the throughput cases (default 3)")
    parser.add_argument("--calls", type=_call_list, default=DEFAULT_CALLS,
                        help="call counts to step through, comma-separated (default 100,250,500,750,1000,...,2500)")
    parser.add_argument("--max-calls", type=non_negative_int, default=None,
                        help="skip steps above this call count (0: no max-calls steps)")
    parser.add_argument("--calls-duration", type=positive_float, default=None,
                        help="seconds per max-calls step (default: --duration)")
    parser.add_argument("--driver", choices=("auto", "actor", "engine"), default="auto",
                        help="max calls through the Media Processor actor or the engine directly (default auto)")
    parser.add_argument("--tick-us", type=non_negative_float, default=SENDER_TICK_US,
                        help="max calls: the sender's least sleep between batches, us "
                        "(default %(default)g; 0: per packet)")
    parser.add_argument("--mrfp-rt", action="store_true", help="max calls: run the MRFP under SCHED_FIFO as well")
    parser.add_argument("--relay-rt", action="store_true",
                        help="throughput: run each relay under SCHED_FIFO (steadier figures on a busy machine)")
    parser.add_argument("--step-retries", type=non_negative_int, default=1,
                        help="max calls: measure a failing step again up to this many times (default 1)")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="max calls: skip the harness-alone run (sender straight to sink) of each step")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object, last line")


def main(argv_or_namespace: Sequence[str] | argparse.Namespace | None = None) -> int:
    """Entry point: an argv list (without the program name), a parsed namespace, or None (sys.argv)."""
    if isinstance(argv_or_namespace, argparse.Namespace):
        args = argparse.Namespace(**{**vars(build_parser().parse_args([])), **vars(argv_or_namespace)})
    else:
        args = build_parser().parse_args(None if argv_or_namespace is None else list(argv_or_namespace))
    result = run_bench_media(
        duration=args.duration, calls=args.calls, repeat=args.repeat, max_calls=args.max_calls,
        calls_duration=args.calls_duration, driver=args.driver, mrfp_rt=args.mrfp_rt,
        tick_us=args.tick_us, floor=args.floor, relay_rt=args.relay_rt,
        step_retries=args.step_retries, json=args.json,
    )
    if args.json:
        print(format_table(result), file=sys.stderr)
        print(json.dumps(result, default=str), flush=True)
    else:
        print(format_table(result), flush=True)
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())

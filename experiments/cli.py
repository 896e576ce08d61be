"""The command line behind ``run.py``: subcommands, their options, and dispatch to ``experiments/``.

    run.py [demo]     the default demo
    run.py serve      the IMS of a topology for external clients (SIPp, softphones)
    run.py load       a call workload through the emulated IMS, with metrics, plots, report
    run.py fault      a fault plan against the IMS, or 004 Fig. 10a / 11
    run.py bench sip|media
    run.py rerun DIR  repeat the run whose results are in DIR

Bad input (unknown options, impossible profiles, an unwritable ``--out``, a topology that
does not load) prints one line ``run.py <cmd>: error: ...`` and exits 2 before anything starts.
With ``--json`` the last line of stdout is one JSON object. Ctrl-C stops a run cleanly; what
was measured is written, marked interrupted, and the exit status is 130.

``experiments.fault_cli`` and ``experiments.bench_media`` add their own options to their
subparsers and run from the parsed namespace. ``UsageError`` raised from a handler becomes the
one-line error and status 2; ``StopOnSigint`` and ``record_argv`` are the Ctrl-C and rerun
helpers.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["StopOnSigint", "UsageError", "add_common_options", "build_parser", "main", "record_argv"]

ROOT = Path(__file__).resolve().parent.parent
INTERRUPTED = 130


class UsageError(Exception):
    """Bad input found after parsing; becomes a one-line error and exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``run.py load: error: argument --max-rate: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------------------------ value types


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, "a number of seconds")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def rate(text: str) -> float:
    value = _number(text, "calls/s (a number >= 0)")
    if value < 0:
        raise argparse.ArgumentTypeError(f"a rate cannot be negative, got {text}")
    return value


def positive_rate(text: str) -> float:
    value = rate(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected calls/s > 0, got 0")
    return value


def _whole(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _whole(text, 1)


def non_negative_int(text: str) -> int:
    return _whole(text, 0)


def non_negative_float(text: str) -> float:
    value = _number(text, "a number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def seed_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


# ------------------------------------------------------------------------------ the parser


def add_common_options(parser: argparse.ArgumentParser, *, out: bool = True, topology: bool = True,
                       mode: bool = True) -> None:
    """The options every experiment takes (the demo runs both modes on the default topology)."""
    group = parser.add_argument_group("common options")
    if topology:
        group.add_argument("--topology", type=existing_file, default=None, metavar="FILE",
                           help="topology TOML (default: topologies/default.toml)")
    if mode:
        group.add_argument("--mode", choices=("baseline", "refactored"), default=None,
                           help="which design the modules run: the paper's baseline or the refactored one "
                           "(default: the topology's mode)")
    group.add_argument("--seed", type=seed_int, default=None,
                       help="master seed for every random choice of the run (default: the topology's seed)")
    group.add_argument("--time-scale", type=positive_float, default=1.0, metavar="X",
                       help="emulated seconds per real second for the modules' timers and the schedule (default 1)")
    if out:
        group.add_argument("--out", type=Path, default=None, metavar="DIR",
                           help="results folder (default: results/<experiment>-<UTC timestamp>/)")
    group.add_argument("--json", action="store_true",
                       help="print one JSON object with the results as the last line of stdout")


def _add_demo_options(parser: argparse.ArgumentParser) -> None:
    add_common_options(parser, topology=False, mode=False)
    parser.add_argument("--max-rate", type=positive_rate, default=8.0, metavar="CPS",
                        help="the media ramp climbs from 2 calls/s by one each second to this (default 8)")
    parser.add_argument("--hold", type=positive_float, default=4.0, metavar="S",
                        help="seconds each ramp call is held with media (default 4)")
    parser.add_argument("--fault-calls", type=positive_int, default=12, metavar="N",
                        help="calls of the fault run, one per second (default 12)")
    parser.add_argument("--fault-at-call", type=positive_int, default=8, metavar="N",
                        help="the S-CSCF Incoming Leg Control crashes as call N is set up (default 8)")
    parser.add_argument("--no-progress", action="store_true", help="no live progress display")


def _add_load_options(parser: argparse.ArgumentParser) -> None:
    w = parser.add_argument_group("workload")
    w.add_argument("--profile", choices=("ramp", "constant", "steps"), default="ramp",
                   help="call-rate profile: ramp (004 VIII-A: --start-rate, +--step each second, up to --max-rate), "
                   "constant (--rate for --duration), steps (--steps) (default ramp)")
    w.add_argument("--start-rate", type=positive_rate, default=2.0, metavar="CPS", help="ramp: calls/s in the first second (default 2)")
    w.add_argument("--step", type=rate, default=1.0, metavar="CPS", help="ramp: calls/s added each second (default 1)")
    w.add_argument("--max-rate", type=positive_rate, default=10.0, metavar="CPS",
                   help="ramp: the rate it climbs to; constant: the rate when --rate is not given (default 10)")
    w.add_argument("--rate", type=positive_rate, default=None, metavar="CPS", help="constant: calls/s")
    w.add_argument("--duration", type=positive_float, default=None, metavar="S",
                   help="seconds of calls (ramp default: until one second at --max-rate is over; constant default 10)")
    w.add_argument("--steps", default=None, metavar="S:CPS,...", help="steps: SECONDS:RATE pairs, e.g. 5:2,5:4,5:8")
    w.add_argument("--hold", default="2", metavar="SPEC",
                   help="call holding time: SECONDS, exp:MEAN or uniform:LOW:HIGH (default 2)")
    w.add_argument("--calls", type=positive_int, default=None, metavar="N", help="stop placing calls after N (default: the profile's)")
    w.add_argument("--users", type=positive_int, default=100, metavar="N", help="UE pool users to register and call between (default 100)")
    w.add_argument("--callee", choices=("random", "round_robin"), default="random",
                   help="how caller and callee are chosen (default random, seeded)")
    w.add_argument("--poisson", action="store_true", help="Poisson call arrivals at the profile's rate (default: evenly paced)")
    media = w.add_mutually_exclusive_group()
    media.add_argument("--media", dest="media", action="store_true", default=None,
                       help="UEs send and receive RTP for their calls (error if this build's UE pool cannot)")
    media.add_argument("--no-media", dest="media", action="store_false", help="signalling only")
    w.add_argument("--compare", action="store_true",
                   help='run baseline then refactored on the same workload; --json prints {"baseline": M, "refactored": M}')
    w.add_argument("--call-timeout", type=positive_float, default=32.0, metavar="S",
                   help="real seconds to wait for each final response (default 32)")
    w.add_argument("--topology-ports", action="store_true",
                   help="bind the topology's own ports (default: ephemeral ports, so runs can share the machine)")
    w.add_argument("--no-progress", action="store_true", help="no live progress display")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="run.py",
        description="IMS/NFV emulator. Without a subcommand it runs the demo.",
        epilog="Each subcommand has its own --help.",
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                        help="log level of the modules (default warning)")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="{demo,serve,load,fault,bench,rerun}")

    demo = sub.add_parser("demo", help="the default demo (also what run.py does without a subcommand)")
    _add_demo_options(demo)
    _add_demo_options(parser)  # the same options work without the subcommand

    serve = sub.add_parser("serve", help="run the IMS of a topology for external clients (SIPp, softphones)",
                           description="Deploy a topology, register its UE pool, print the addresses and SIPp "
                           "command lines to use, and keep running until Ctrl-C or --duration.")
    serve.add_argument("--topology", type=existing_file, default=None, metavar="FILE",
                       help="topology TOML (default: topologies/default.toml)")
    serve.add_argument("--duration", type=positive_float, default=None, help="stop after this many seconds (default: until Ctrl-C)")
    serve.add_argument("--process", default=None, help="run only this placement group of the topology (the others run elsewhere)")
    serve.add_argument("--json", action="store_true", help="print the modules' final stats as one JSON object, last line")

    load = sub.add_parser(
        "load", help="drive the emulated IMS with a call workload; metrics, plots and a report",
        description="Deploys the topology in this process (ephemeral ports), registers --users UEs, places calls "
        "following the workload, and writes config.json, samples.jsonl, summary.json, plots and report.html to the "
        "results folder. --json keys: see README 'Running experiments'.",
    )
    _add_load_options(load)
    add_common_options(load)

    from experiments import bench_media, fault_cli

    fault = sub.add_parser("fault", help="inject a fault plan while calls run (built-in plans: faults/plans)",
                           description="Runs a fault plan (a built-in name such as silc-crash, or a TOML file) "
                           "against the IMS while calls run, in one mode or both (--compare), or reproduces "
                           "004 Fig. 10a / Fig. 11 (--figure).")
    fault_cli.add_arguments(fault)

    bench = sub.add_parser("bench", help="benchmarks (sip, media)")
    bench_sub = bench.add_subparsers(dest="bench_target", required=True, parser_class=_Parser)
    _add_bench_sip(bench_sub)
    media = bench_sub.add_parser("media", help="media plane throughput and the largest call count MRFP holds",
                                 description="A bare C relay, a uvloop relay and the MRFP engine between the same C "
                                 "sender and sink, then the most concurrent calls the MRFP carries with p99 under 5 ms.")
    bench_media.add_bench_media_options(media)

    rerun = sub.add_parser("rerun", help="repeat the run whose results folder is DIR (same configuration and seed)",
                           description="Reads DIR/config.json and runs the same command again into a new results folder.")
    rerun.add_argument("dir", type=Path, metavar="DIR", help="a results folder written by an earlier run")
    rerun.add_argument("--out", type=Path, default=None, metavar="DIR", help="results folder of the repeat (default: a new one)")
    rerun.add_argument("--json", action="store_true", help="print one JSON object with the results as the last line")
    return parser


def _add_bench_sip(bench_sub: Any) -> None:
    from experiments.bench_sip import TARGETS

    def rate_list(text: str) -> tuple[float, ...]:
        rates = []
        for item in text.split(","):
            value = _number(item, "calls/s numbers separated by commas")
            if not value > 0:
                raise argparse.ArgumentTypeError(f"a rate must be a number > 0, got {item!r}")
            rates.append(int(value) if value.is_integer() else value)
        return tuple(rates)

    def target_list(text: str) -> tuple[str, ...]:
        targets = tuple(t.strip() for t in text.split(",") if t.strip())
        if not targets or any(t not in TARGETS for t in targets):
            raise argparse.ArgumentTypeError(f"targets are {', '.join(TARGETS)}; got {text!r}")
        return targets

    def port_number(text: str) -> int:
        value = positive_int(text)
        if not 1024 <= value <= 65000:
            raise argparse.ArgumentTypeError(f"expected a port 1024..65000, got {value}")
        return value

    parser = bench_sub.add_parser(
        "sip", help="SIPp calls at stepped rates against `serve` (one and two processes) and Kamailio",
        description="SIPp's uac places calls (held --hold-ms) at stepped rates, --step-seconds per step, "
        "against each target started fresh; per step: offered cps, attempted/succeeded/failed calls, "
        "p50/p99 setup time (INVITE->200). max_cps: the highest rate with 0 failed calls and p99 < 250 ms.",
    )
    parser.add_argument("--rates", type=rate_list, default=None,
                        help="calls/s per step, e.g. 50,100,150 (default: 50,100,...,1000, stopping at the first failing step)")
    parser.add_argument("--step-seconds", type=positive_float, default=60.0, help="seconds of calls per step (default 60)")
    parser.add_argument("--hold-ms", type=positive_int, default=5000, help="call hold time, SIPp -d (default 5000)")
    parser.add_argument("--targets", type=target_list, default=None,
                        help="comma-separated: one_process,two_process,kamailio (default: all three)")
    parser.add_argument("--max-seconds", type=positive_float, default=3600.0,
                        help="bound on the whole benchmark, shared among the targets (default 3600)")
    parser.add_argument("--all-steps", action="store_true", help="run every rate even after a step failed")
    parser.add_argument("--callees", type=positive_int, default=None, help="rotate calls over the first N emulated UEs (default: all)")
    parser.add_argument("--base-port", type=port_number, default=None,
                        help="first of 28 UDP ports for the targets and SIPp (default: a free block in 10000-19999); "
                        "5060 keeps the topologies' own ports")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and SIPp traces here (default: a new temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the results as the last line")


# ------------------------------------------------------------------------------ running


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    from actors.logs import configure_logging

    configure_logging(args.log_level)
    command = args.command or "demo"
    handlers: dict[str, Callable[[argparse.Namespace, list[str]], int]] = {
        "demo": _demo, "serve": _serve, "load": _load, "fault": _fault, "bench": _bench, "rerun": _rerun,
    }
    try:
        return handlers[command](args, argv)
    except UsageError as error:
        print(f"run.py {command}: error: {error}", file=sys.stderr)
        return 2


def _demo(args: argparse.Namespace, argv: list[str]) -> int:
    from experiments.demo import DemoConfig, run_demo
    from experiments.progress import Progress
    from experiments.report import print_rows
    from experiments.results import ResultsError

    stream = sys.stderr if args.json else sys.stdout
    if args.fault_at_call > args.fault_calls:
        raise UsageError(f"--fault-at-call {args.fault_at_call} is past --fault-calls {args.fault_calls}")
    config = DemoConfig(max_rate=args.max_rate, hold=args.hold, fault_calls=args.fault_calls,
                        fault_at_call=args.fault_at_call, seed=args.seed if args.seed is not None else 1,
                        time_scale=args.time_scale)

    def progress(label: str, total: float) -> Progress:
        return Progress(label, total, enabled=not args.no_progress, stream=stream)

    try:
        with StopOnSigint() as stop:
            summary = run_demo(config, out=args.out, progress_factory=progress, stop=stop,
                               argv=record_argv(args, argv, config.seed))
    except ResultsError as error:
        raise UsageError(str(error)) from None
    except KeyboardInterrupt:
        print("run.py demo: aborted (second Ctrl-C); nothing more was written", file=stream)
        return INTERRUPTED
    print_rows(summary["rows"], ["", "paper", "baseline", "refactored"],
               title="demo: baseline vs refactored (004)", stream=stream)
    print(f"report: {summary['report']}", file=stream)
    if args.json:
        print(json.dumps({k: summary[k] for k in ("load", "fault", "results_dir", "report", "interrupted")},
                         default=str), flush=True)
    return INTERRUPTED if summary["interrupted"] else 0


def _serve(args: argparse.Namespace, argv: list[str]) -> int:
    from actors.topology import TopologyError, load_topology
    from experiments.serve import DEFAULT_TOPOLOGY, serve

    try:
        topology = load_topology(args.topology or DEFAULT_TOPOLOGY)
    except TopologyError as error:
        raise UsageError(str(error)) from None
    if args.process is not None and args.process not in topology.processes():
        raise UsageError(f"--process: no placement group {args.process!r} in {topology.source}")
    stats = serve(topology, duration=args.duration, process=args.process)
    if args.json:
        print(json.dumps(stats, sort_keys=True, default=str))
    return 0


class StopOnSigint:
    """Ctrl-C sets ``stop`` (the run winds down and writes what it has); a second one raises."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._previous: Any = None

    def __enter__(self) -> threading.Event:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self.stop

    def _handle(self, *_: Any) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        print("\nstopping: finishing calls in progress and writing what was measured (Ctrl-C again to abort)",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def record_argv(args: argparse.Namespace, argv: list[str], seed: int) -> list[str]:
    """The argv to repeat this run: without --out/--json, with the seed made explicit."""
    out: list[str] = []
    skip = False
    for i, item in enumerate(argv):
        if skip:
            skip = False
            continue
        if item in ("--out",):
            skip = True
            continue
        if item.startswith("--out=") or item == "--json":
            continue
        out.append(item)
    if not any(a == "--seed" or a.startswith("--seed=") for a in out):
        out += ["--seed", str(seed)]
    return out


def _load(args: argparse.Namespace, argv: list[str]) -> int:
    from actors.topology import TopologyError, load_topology
    from experiments.load import DEFAULT_TOPOLOGY, load_config, run_load, run_load_compare
    from experiments.progress import Progress
    from experiments.report import print_compare_table, print_summary_table
    from experiments.results import ResultsError
    from experiments.workloads import WorkloadError

    topology_file = args.topology or DEFAULT_TOPOLOGY
    try:
        seed = args.seed if args.seed is not None else load_topology(topology_file).seed
        config = load_config(
            profile=args.profile, start_rate=args.start_rate, step=args.step, max_rate=args.max_rate, rate=args.rate,
            duration=args.duration, steps=args.steps, hold=args.hold, selector=args.callee, users=args.users,
            calls=args.calls, poisson=args.poisson, mode=args.mode, seed=seed, time_scale=args.time_scale,
            media=args.media, topology=str(topology_file), ephemeral_ports=not args.topology_ports,
            call_timeout=args.call_timeout,
        )
    except (WorkloadError, TopologyError) as error:
        raise UsageError(str(error)) from None
    record = record_argv(args, argv, seed)
    show = not args.no_progress

    def progress(mode: str, total: float) -> Progress:
        return Progress(f"load {mode}", total, enabled=show, stream=sys.stderr if args.json else sys.stdout)

    try:
        with StopOnSigint() as stop:
            if args.compare:
                results = run_load_compare(config, out=args.out, stop=stop, argv=record, progress_factory=progress)
            else:
                mode = args.mode or load_topology(topology_file).mode
                results = {mode: run_load(config, out=args.out, stop=stop, argv=record, progress=progress(mode, config.profile.duration))}
    except (WorkloadError, TopologyError, ResultsError) as error:
        raise UsageError(str(error)) from None
    except KeyboardInterrupt:
        print("run.py load: aborted (second Ctrl-C); nothing more was written", file=sys.stderr)
        return INTERRUPTED
    except RuntimeError as error:  # the IMS did not come up (e.g. no user could register)
        print(f"run.py load: failed: {error}", file=sys.stderr)
        return 1
    interrupted = any(r.interrupted for r in results.values())
    table_stream = sys.stderr if args.json else sys.stdout
    if args.compare:
        print_compare_table({m: r.metrics for m, r in results.items()}, title="load: baseline vs refactored", stream=table_stream)
        folder = next(iter(results.values())).metrics.get("compare_dir")
    else:
        (result,) = results.values()
        print_summary_table(result.metrics, title=f"load ({result.metrics['mode']})", stream=table_stream)
        folder = result.metrics["results_dir"]
    if folder:
        print(f"report: {Path(folder) / 'report.html'}", file=table_stream)
    if args.json:
        if args.compare:  # both keys always, null for a mode an interrupt skipped
            payload: Any = {mode: results[mode].metrics if mode in results else None for mode in ("baseline", "refactored")}
        else:
            payload = next(iter(results.values())).metrics
        print(json.dumps(payload, sort_keys=False, default=str), flush=True)
    if interrupted:
        return INTERRUPTED
    return 1 if all(r.metrics["calls"] and not r.metrics["completed"] for r in results.values()) else 0


def _fault(args: argparse.Namespace, argv: list[str]) -> int:
    from experiments import fault_cli

    return int(fault_cli.main(args) or 0)


def _bench(args: argparse.Namespace, argv: list[str]) -> int:
    if args.bench_target == "media":
        from experiments import bench_media

        return int(bench_media.main(args) or 0)
    from experiments.bench_sip import TARGETS, BenchConfig, format_table, run_bench

    config = BenchConfig(
        rates=args.rates, step_seconds=args.step_seconds, hold_ms=args.hold_ms, targets=args.targets or TARGETS,
        max_seconds=args.max_seconds, stop_on_failure=not args.all_steps, callees=args.callees,
        base_port=args.base_port, workdir=args.workdir,
    )
    try:
        results = run_bench(config)
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        raise UsageError(str(error)) from None
    if args.json:
        print(json.dumps(results, sort_keys=False))
    else:
        print(format_table(results, config))
    return 1 if any(record.get("error") for record in results.values()) else 0


def _rerun(args: argparse.Namespace, argv: list[str]) -> int:
    from experiments.results import ResultsError, read_config

    try:
        config = read_config(args.dir)
    except ResultsError as error:
        raise UsageError(str(error)) from None
    again = [str(a) for a in config["argv"]]
    if not again or again[0] == "rerun":
        raise UsageError(f"{args.dir}/config.json: argv {again!r} cannot be repeated")
    if args.out is not None:
        again += ["--out", str(args.out)]
    if args.json:
        again.append("--json")
    print(f"rerun: run.py {' '.join(again)}", file=sys.stderr)
    return main(again)

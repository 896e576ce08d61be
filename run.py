#!/usr/bin/env python3
"""Command line of the IMS/NFV emulator: parses arguments and calls ``experiments/``.

    python run.py                      # the default demo (calls over a proxy chain on loopback)
    python run.py demo --calls 50 --hops 5 --json
    python run.py serve                # the IMS of topologies/default.toml, for SIPp & softphones
    python run.py bench sip --json     # SIPp load, stepped rates: one/two processes vs Kamailio
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="IMS/NFV emulator. Without a subcommand it runs the demo: user agents place SIP "
        "calls through a chain of transaction-stateful proxy actors on 127.0.0.1.",
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command")

    demo = sub.add_parser("demo", help="calls over a chain of proxies on loopback, with a summary")
    add_demo_options(demo)
    add_demo_options(parser)  # the same options work without the subcommand

    serve = sub.add_parser("serve", help="run the IMS of a topology for external clients (SIPp, softphones)")
    serve.add_argument("--topology", type=existing_file, default=None, help="topology TOML (default: topologies/default.toml)")
    serve.add_argument("--duration", type=positive_float, default=None, help="stop after this many seconds (default: until Ctrl-C)")
    serve.add_argument("--process", default=None, help="run only this placement group of the topology (the others run elsewhere)")
    serve.add_argument("--json", action="store_true", help="print the modules' final stats as one JSON object, last line")

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_target", required=True)
    add_bench_sip_options(bench_sub.add_parser(
        "sip", help="SIPp calls at stepped rates against `serve` (one and two processes) and Kamailio",
        description="SIPp's uac places calls (held --hold-ms) at stepped rates, --step-seconds per step, "
        "against each target started fresh; per step: offered cps, attempted/succeeded/failed calls, "
        "p50/p99 setup time (INVITE->200). max_cps: the highest rate with 0 failed calls and p99 < 250 ms.",
    ))
    return parser


def rate_list(text: str) -> tuple[float, ...]:
    rates = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected calls/s numbers separated by commas, got {item!r}") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"a rate must be a number > 0, got {item!r}")
        rates.append(int(value) if value.is_integer() else value)
    return tuple(rates)


def target_list(text: str) -> tuple[str, ...]:
    from experiments.bench_sip import TARGETS

    targets = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise argparse.ArgumentTypeError(f"targets are {', '.join(TARGETS)}; got {text!r}")
    return targets


def port_number(text: str) -> int:
    value = positive_int(text)
    if not 1024 <= value <= 65000:
        raise argparse.ArgumentTypeError(f"expected a port 1024..65000, got {value}")
    return value


def add_bench_sip_options(parser: argparse.ArgumentParser) -> None:
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


def add_demo_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=positive_int, default=50, help="calls to place (default 50)")
    parser.add_argument("--hops", type=positive_int, default=3, help="proxies between the two UAs (default 3)")
    parser.add_argument("--concurrency", type=positive_int, default=10, help="calls in flight at once (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the results as the last line")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from actors.logs import configure_logging

    configure_logging(args.log_level)
    if args.command == "serve":
        from actors.topology import TopologyError, load_topology
        from experiments.serve import DEFAULT_TOPOLOGY, serve

        try:
            topology = load_topology(args.topology or DEFAULT_TOPOLOGY)
        except TopologyError as error:
            print(f"run.py serve: error: {error}", file=sys.stderr)
            return 2
        if args.process is not None and args.process not in topology.processes():
            print(f"run.py serve: error: --process: no placement group {args.process!r} in {topology.source}", file=sys.stderr)
            return 2
        stats = serve(topology, duration=args.duration, process=args.process)
        if args.json:
            print(json.dumps(stats, sort_keys=True, default=str))
        return 0

    if args.command == "bench":
        return run_bench_sip(args)

    from experiments.sip_demo import print_summary, run_sip_demo

    summary = run_sip_demo(calls=args.calls, hops=args.hops, concurrency=args.concurrency)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print_summary(summary)
    return 0 if summary["failed"] == 0 else 1


def run_bench_sip(args: argparse.Namespace) -> int:
    from experiments.bench_sip import TARGETS, BenchConfig, format_table, run_bench

    config = BenchConfig(
        rates=args.rates, step_seconds=args.step_seconds, hold_ms=args.hold_ms, targets=args.targets or TARGETS,
        max_seconds=args.max_seconds, stop_on_failure=not args.all_steps, callees=args.callees,
        base_port=args.base_port, workdir=args.workdir,
    )
    try:
        results = run_bench(config)
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        print(f"run.py bench sip: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results, sort_keys=False))
    else:
        print(format_table(results, config))
    return 1 if any(record.get("error") for record in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

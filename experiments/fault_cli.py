"""``run.py fault``: the options of the fault experiments and their dispatch (a plug-in of
:mod:`experiments.cli`).

    run.py fault --plan silc-crash --mode refactored      # one mode
    run.py fault --plan silc-crash --compare --json       # both; last line {"baseline": R, "refactored": R}
    run.py fault --plan my-plan.toml --at-call 3 --calls 5 --hold 10
    run.py fault --figure 10a --rates 2,4,6,8,10          # 004 Fig. 10a
    run.py fault --figure 11 --rates 2,5,10,20            # 004 Fig. 11

A bad plan (unknown module, malformed duration, a fault the topology cannot carry, a call
trigger the run never reaches) stops before anything runs: one line naming the field, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from experiments.cli import INTERRUPTED, StopOnSigint, UsageError, add_common_options, positive_float, positive_int, record_argv

__all__ = ["add_arguments", "main"]


def _rates(text: str) -> tuple[float, ...]:
    out = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected calls/s numbers separated by commas, got {item!r}") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"a rate must be a number > 0, got {item!r}")
        out.append(value)
    return tuple(out)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from faults.plan import builtin_plans

    parser.description = (
        "Runs a fault plan against the IMS (deployed in this process, ephemeral ports) while calls with media "
        "run: a new call every load.call_interval_s, each held load.call_hold_s, load.calls of them; the fault "
        "hits when the plan says (the Nth call, or a time). Prints the timeline live, then the figures and the "
        "steady-state verdict next to the paper's (004 VIII-B: detection 2 s, failover ~0.5 s after it; "
        "baseline: every call dropped after 5 retries, hanging media, OpenStack-style recovery ~26 s). "
        "Writes config.json, samples.jsonl, summary.json, the fault timeline plot and report.html. "
        "--json keys: mode, plan, fault_at_s, detection_s, failover_s, recovery_s, calls_in_setup_at_fault, "
        "calls_in_setup_completed, calls_dropped, hanging_mrf_dialogs, charging_discrepancy_bytes, "
        "detection_trigger_s, calls_completed, calls_hanging, calls, verdict, media_loss, duration_s, "
        "interrupted, results_dir. --figure 10a|11 instead runs the detection experiments versus call rate "
        "(--json: {figure, mode, points: [{rate, detection_trigger_s, detection_s, failover_s, ...}]})."
    )
    what = parser.add_argument_group("what to run")
    what.add_argument("--plan", default=None, metavar="NAME|FILE",
                      help=f"a built-in plan ({', '.join(builtin_plans())}) or a plan TOML file")
    what.add_argument("--compare", action="store_true",
                      help='run baseline then refactored on the same plan; --json prints {"baseline": R, "refactored": R}')
    what.add_argument("--figure", choices=("10a", "11"), default=None,
                      help="instead of a plan: 004 Fig. 10a (fault -> first detection trigger vs call rate) or "
                      "Fig. 11 (detection and failover time vs call rate); one short run per --rates point")
    what.add_argument("--rates", type=_rates, default=None, metavar="CPS,...",
                      help="--figure: constant call rates, one point each (default 2,4,6,8,10)")
    what.add_argument("--repeats", type=positive_int, default=1, metavar="N",
                      help="--figure: runs per rate, each with its own seeded fault phase; the point is their mean (default 1)")
    what.add_argument("--before", type=positive_float, default=2.0, metavar="S",
                      help="--figure: seconds of calls before the crash (default 2; plus a seeded phase)")
    what.add_argument("--after", type=positive_float, default=None, metavar="S",
                      help="--figure: seconds of calls after the crash (default 0.5 for 10a, 3 for 11)")
    load = parser.add_argument_group("the plan's calls (overrides of its [load] and call trigger)")
    load.add_argument("--calls", type=positive_int, default=None, metavar="N", help="calls to place (plan: load.calls)")
    load.add_argument("--interval", type=positive_float, default=None, metavar="S",
                      help="seconds between call starts (plan: load.call_interval_s)")
    load.add_argument("--hold", type=_seconds, default=None, metavar="S",
                      help="seconds each call is held (plan: load.call_hold_s; --figure default 1)")
    load.add_argument("--at-call", type=positive_int, default=None, metavar="N",
                      help="move the plan's call-triggered faults to call N (short runs)")
    load.add_argument("--call-timeout", type=positive_float, default=16.0, metavar="S",
                      help="real seconds to wait for each final response, INVITE and BYE (default 16)")
    media = load.add_mutually_exclusive_group()
    media.add_argument("--media", dest="media", action="store_true", default=None,
                       help="UEs send and receive RTP (default for plans, when the UE pool can)")
    media.add_argument("--no-media", dest="media", action="store_false", help="signalling only (default for --figure)")
    load.add_argument("--topology-ports", action="store_true",
                      help="bind the topology's own ports (default: ephemeral ports)")
    load.add_argument("--no-progress", action="store_true", help="no live progress display")
    add_common_options(parser)
    for action in parser._actions:  # noqa: SLF001  (this subcommand's default topology differs)
        if "--topology" in action.option_strings:
            action.help = "topology TOML (default: topologies/charging.toml, the call path with PGW and PCRF)"
    parser.set_defaults(fault_options=True)


def _config(args: argparse.Namespace, figure: bool) -> Any:
    from experiments.fault import FaultConfig, default_topology

    media = args.media if args.media is not None or not figure else False
    return FaultConfig(
        plan=args.plan or "silc-crash", mode=args.mode, topology=str(args.topology or default_topology()),
        seed=args.seed, time_scale=args.time_scale, media=media, ephemeral_ports=not args.topology_ports,
        calls=args.calls, interval=args.interval, hold=args.hold, at_call=args.at_call, call_timeout=args.call_timeout,
    )


def main(args: argparse.Namespace) -> int:
    from actors.topology import TopologyError
    from experiments.progress import Progress
    from experiments.results import ResultsError
    from faults.plan import PlanError

    figure = args.figure is not None
    if figure and (args.plan or args.compare or args.at_call or args.calls or args.interval):
        raise UsageError("--figure runs its own schedule: --plan, --compare, --calls, --interval and --at-call do not apply")
    if not figure and args.plan is None:
        raise UsageError("give --plan NAME|FILE (or --figure 10a|11)")
    if not figure and (args.rates is not None or args.after is not None or args.repeats != 1):
        raise UsageError("--rates, --repeats and --after go with --figure")
    stream = sys.stderr if args.json else sys.stdout
    show = not args.no_progress

    def progress(label: str, total: float | None) -> Progress:
        return Progress(f"fault {label}", total, enabled=show, stream=stream)

    try:
        config = _config(args, figure)
        seed = config.seed if config.seed is not None else _plan_seed(config)
        record = record_argv(args, _argv(args), seed)
        with StopOnSigint() as stop:
            if figure:
                return _figure(args, config, stop, record, progress, stream)
            if args.compare:
                from experiments.fault import run_fault_compare

                results = run_fault_compare(config, out=args.out, stop=stop, argv=record,
                                            progress_factory=lambda mode, total: progress(mode, total))
            else:
                from experiments.fault import prepare, run_fault

                mode = prepare(config).topology.mode
                results = {mode: run_fault(config, out=args.out, stop=stop, argv=record, progress=progress(mode, None))}
    except (PlanError, TopologyError, ResultsError) as error:
        raise UsageError(str(error)) from None
    except KeyboardInterrupt:
        print("run.py fault: aborted (second Ctrl-C); nothing more was written", file=sys.stderr)
        return INTERRUPTED
    except RuntimeError as error:
        print(f"run.py fault: failed: {error}", file=sys.stderr)
        return 1
    _print_tables(results, stream)
    if args.json:
        payload: Any
        if args.compare:
            payload = {mode: results[mode].metrics if mode in results else None for mode in ("baseline", "refactored")}
        else:
            payload = next(iter(results.values())).metrics
        print(json.dumps(payload, default=str), flush=True)
    return INTERRUPTED if any(r.interrupted for r in results.values()) else 0


def _argv(args: argparse.Namespace) -> list[str]:
    """The command line of this run, rebuilt from the parsed options (for config.json and rerun)."""
    out = ["fault"]
    for name, value in (("--plan", args.plan), ("--figure", args.figure), ("--mode", args.mode),
                        ("--topology", args.topology), ("--seed", args.seed), ("--calls", args.calls),
                        ("--interval", args.interval), ("--hold", args.hold), ("--at-call", args.at_call),
                        ("--before", args.before if args.figure else None), ("--after", args.after)):
        if value is not None:
            out += [name, str(value)]
    if args.rates:
        out += ["--rates", ",".join(f"{r:g}" for r in args.rates)]
    if args.repeats != 1:
        out += ["--repeats", str(args.repeats)]
    if args.time_scale != 1.0:
        out += ["--time-scale", str(args.time_scale)]
    if args.call_timeout != 16.0:
        out += ["--call-timeout", str(args.call_timeout)]
    if args.media is not None:
        out.append("--media" if args.media else "--no-media")
    for flag, on in (("--compare", args.compare), ("--topology-ports", args.topology_ports),
                     ("--no-progress", args.no_progress)):
        if on:
            out.append(flag)
    return out


def _plan_seed(config: Any) -> int:
    from faults.plan import load_plan

    return load_plan(config.plan).seed


def _print_tables(results: dict[str, Any], stream: Any) -> None:
    from experiments.report import print_compare_table

    keys = ("fault_at_s", "detection_trigger_s", "detection_s", "failover_s", "recovery_s", "calls",
            "calls_completed", "calls_dropped", "calls_hanging", "calls_in_setup_at_fault", "calls_in_setup_completed",
            "hanging_mrf_dialogs", "charging_discrepancy_bytes")
    runs = {mode: {k: r.metrics.get(k) for k in keys} for mode, r in results.items()}
    for mode, r in results.items():
        runs[mode]["checks held"] = r.metrics["verdict"]["held"]
    print_compare_table(runs, title="fault: measured", stream=stream)
    _print_paper([(f"{row['figure']} ({mode})", row) for mode, r in results.items() for row in r.paper], stream)
    for mode, r in results.items():
        failed = [f"{name} (measured {c['measured']}, expected {c['expected']})"
                  for name, c in r.metrics["verdict"]["checks"].items() if c["held"] is False]
        unmeasured = [name for name, c in r.metrics["verdict"]["checks"].items() if c["held"] == "not measured"]
        print(f"verdict ({mode}): " + ("every check held" if not failed else "did not hold: " + "; ".join(failed))
              + (f"; not measured: {', '.join(unmeasured)}" if unmeasured else ""), file=stream)
    folder = next(iter(results.values())).metrics.get("compare_dir") or next(iter(results.values())).metrics.get("results_dir")
    if folder:
        print(f"report: {Path(folder) / 'report.html'}", file=stream)


def _print_paper(rows: list[tuple[str, dict[str, Any]]], stream: Any) -> None:
    if not rows:
        return
    width = [max(len(str(x)) for x in col) for col in zip(*[(f, r["quantity"], r["paper"]) for f, r in rows])]
    print("paper vs measured", file=stream)
    for figure, row in rows:
        print(f"  {figure:<{width[0]}}  {row['quantity']:<{width[1]}}  paper {row['paper']:<{width[2]}}  "
              f"measured {row['measured']}", file=stream)


def _figure(args: argparse.Namespace, config: Any, stop: Any, record: list[str], progress: Any, stream: Any) -> int:
    from experiments.fault_figures import DEFAULT_RATES, run_figure

    result = run_figure(args.figure, config, rates=args.rates or DEFAULT_RATES, before=args.before, after=args.after,
                        repeats=args.repeats,
                        out=args.out, stop=stop, argv=record, progress_factory=progress)
    print(f"004 Fig. {args.figure} ({result.metrics['mode']})", file=stream)
    for p in result.metrics["points"]:
        print(f"  {p['rate']:>6g} calls/s  trigger {_ms(p['detection_trigger_s'])}  detection {_s(p['detection_s'])}  "
              f"failover {_s(p['failover_s'])}  calls {p['calls']} (dropped {p['calls_dropped']})", file=stream)
    _print_paper([(row["figure"], row) for row in result.paper], stream)
    if result.metrics.get("results_dir"):
        print(f"report: {Path(result.metrics['results_dir']) / 'report.html'}", file=stream)
    if args.json:
        print(json.dumps(result.metrics, default=str), flush=True)
    return INTERRUPTED if result.interrupted else 0


def _ms(value: Any) -> str:
    return "never" if value is None else f"{value * 1000:.1f} ms"


def _s(value: Any) -> str:
    return "never" if value is None else f"{value:.3f} s"

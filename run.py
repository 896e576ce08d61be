#!/usr/bin/env python3
"""Command line of the IMS/NFV emulator: parses arguments and calls ``experiments/``.

    python run.py                 # the default demo: SIP calls over a proxy chain on loopback
    python run.py --calls 50 --hops 5 --json
"""

from __future__ import annotations

import argparse
import json
import sys


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="IMS/NFV emulator. With no arguments: user agents place SIP calls "
        "through a chain of transaction-stateful proxy actors on 127.0.0.1 and a summary is printed.",
    )
    parser.add_argument("--calls", type=positive_int, default=50, help="calls to place (default 50)")
    parser.add_argument("--hops", type=positive_int, default=3, help="proxies between the two UAs (default 3)")
    parser.add_argument("--concurrency", type=positive_int, default=10, help="calls in flight at once (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the results as the last line")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)

    from actors.logs import configure_logging
    from experiments.sip_demo import run_sip_demo

    configure_logging(args.log_level)
    summary = run_sip_demo(calls=args.calls, hops=args.hops, concurrency=args.concurrency)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print_summary(summary)
    return 0 if summary["failed"] == 0 else 1


def print_summary(summary: dict) -> None:
    setup = summary["setup_ms"]
    rows = [
        ("calls placed / completed / failed", f"{summary['calls']} / {summary['completed']} / {summary['failed']}"),
        ("proxy hops (each a UDP socket on loopback)", summary["hops"]),
        ("call set-up INVITE->200 p50 / p90 / p99 (ms)", f"{setup['p50']} / {setup['p90']} / {setup['p99']}"),
        ("INVITE->180 p50 (ms)", summary["ringing_ms_p50"]),
        ("calls answered by the callee", summary["answered_by_bob"]),
        ("malformed INVITE answered with", summary["malformed_answer"]),
        ("first proxy: requests in / responses in / datagrams out", "{rx_request} / {rx_response} / {tx}".format(**summary["first_proxy"])),
        ("first proxy: malformed answered / dropped", "{malformed_answered} / {malformed_dropped}".format(**summary["first_proxy"])),
        ("wall time (s)", summary["elapsed_s"]),
    ]
    width = max(len(name) for name, _ in rows)
    print("SIP over actors on loopback: alice -> " + " -> ".join(f"proxy{i + 1}" for i in range(summary["hops"])) + " -> bob")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    sys.exit(main())

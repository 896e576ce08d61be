#!/usr/bin/env python3
"""Command line of the IMS/NFV emulator: parses arguments (experiments/cli.py) and calls ``experiments/``.

    python run.py                      # the default demo
    python run.py serve                # the IMS of topologies/default.toml, for SIPp & softphones
    python run.py load --max-rate 20   # a call ramp through the IMS: metrics, plots, report.html
    python run.py load --compare --json
    python run.py fault --plan silc-crash --compare
    python run.py bench sip --json     # SIPp load, stepped rates: one/two processes vs Kamailio
    python run.py bench media --json
    python run.py rerun results/load-20260101T000000Z

Every subcommand has --help. See README "Running experiments".
"""

from __future__ import annotations

import sys

from experiments.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())

"""``silc-crash`` at a few calls a second (a Fig. 11 point: the S-CSCF Incoming Leg Control
crashes at a time, not on an INVITE), through the experiment's own driver (real sockets, the UE
pool, media). In-dialog BYEs reach the dead module through the live Session Controller while it
is detecting; the P-CSCF's detector for such a BYE started a few ms before the SC's. Only the
dead module is declared failed (once, by the Session Controller), no live module is replaced,
and no call is dropped. (Before the fix the P-CSCF declared the SC failed and replaced it:
5-6 calls of 26 dropped at 5 calls/s.)
"""

from __future__ import annotations

import threading

import pytest

from actors import Runtime
from experiments.fault import FaultConfig, Schedule, drive, prepare_run
from experiments.fault_figures import figure_plan
from experiments.progress import Progress

pytestmark = pytest.mark.timeout(120)

RATE = 5.0
FAULT_AT = 2.076  # the Fig. 11 point's seeded phase at 5 calls/s (seed 1, repeat 1)
CALLS = 26  # 2 s before, 3 s after the fault
HOLD = 1.0


def test_silc_crash_at_5_cps_declares_only_the_dead_hop_and_drops_no_call() -> None:
    config = FaultConfig(plan="silc-crash", mode="refactored", hold=HOLD)
    schedule = Schedule(tuple(round(i / RATE, 9) for i in range(CALLS)), HOLD)
    prepared = prepare_run(figure_plan(FAULT_AT, 1), schedule, config)
    with Runtime(name="test-silc-rate") as runtime:
        raw = runtime.run(drive(prepared, config, Progress("silc", None, enabled=False), threading.Event()),
                          timeout=None)
    report = raw["report"]
    r = report["results"]
    events = report["timeline"]["events"]
    declared = [(e.get("module"), e.get("failed")) for e in events if e["event"] == "detected"]
    assert declared == [("scscf_session_controller", "scscf_incoming_leg_control")], declared
    replaced = [(e.get("module"), e.get("failed")) for e in events if e["event"] == "failover_complete"]
    assert replaced == [("scscf_session_controller", "scscf_incoming_leg_control")], replaced
    assert r["calls_dropped"] == 0 and r["calls_hanging"] == 0 and r["hanging_mrf_dialogs"] == 0
    assert r["calls_completed"] == CALLS
    assert 1.9 <= r["detection_s"] < 2.5
    # the crashed module's sockets (SIP and HSS control) and the replacement's closed with the run
    assert raw["leaked_endpoints"] == []

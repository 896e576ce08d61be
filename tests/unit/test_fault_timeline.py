"""The fault-run timeline on a virtual clock: exact times, exact figures."""

from __future__ import annotations

import json

import pytest

from actors.clock import VirtualClock
from faults.timeline import (
    DETECTED,
    DETECTION_TRIGGERED,
    FAILOVER_COMPLETE,
    FAULT_INJECTED,
    RESULT_KEYS,
    Timeline,
    charging_discrepancy,
)


def silc_run() -> Timeline:
    """Calls every second; fault at 25.0 while call 25 is in setup; detection 2 s later."""
    clock = VirtualClock(start=100.0)
    t = Timeline(clock)
    t.start()
    for n in range(1, 25):
        clock.advance_to(100.0 + n)
        t.call_started(n)
        clock.advance(0.026)
        t.call_established(n)
    clock.advance_to(125.0)
    t.call_started(25)
    t.record(FAULT_INJECTED, kind="crash", instance="silc")
    clock.advance(0.004)
    t.record(DETECTION_TRIGGERED, sender="sc")
    clock.advance_to(126.0)
    t.call_started(26)
    clock.advance_to(127.0)
    t.record(DETECTED, hop="silc")
    clock.advance(0.080)
    t.record(FAILOVER_COMPLETE)
    clock.advance(0.030)
    t.call_established(25)
    t.call_established(26)
    t.call_ended(3, "dropped")
    t.call_ended(25, "completed")
    t.hanging_mrf_dialogs(0)
    t.charging({"pgw": {"ue1": 1000, "ue2": 500}, "pcrf": {"ue1": 1200, "ue3": 10}})
    return t


def test_results_are_computed_from_the_events() -> None:
    r = silc_run().results()
    assert set(RESULT_KEYS) <= r.keys()
    assert r["fault_at_s"] == 25.0
    assert r["detection_trigger_s"] == 0.004
    assert r["detection_s"] == 2.0
    assert r["failover_s"] == 0.08
    assert r["recovery_s"] == 2.11
    assert r["calls_in_setup_at_fault"] == 1  # call 25: started at the fault, not yet established
    assert r["calls_in_setup_completed"] == 1
    assert r["calls_dropped"] == 1
    assert r["hanging_mrf_dialogs"] == 0
    assert r["charging_discrepancy_bytes"] == 200 + 500 + 10


def test_no_fault_no_detection_means_nulls_not_zeros() -> None:
    t = Timeline(VirtualClock())
    t.call_started(1, at=1.0)
    r = t.results()
    assert r["fault_at_s"] is None and r["detection_s"] is None and r["failover_s"] is None
    assert r["hanging_mrf_dialogs"] is None and r["charging_discrepancy_bytes"] is None
    t.record(FAULT_INJECTED, at=2.0)
    r = t.results()
    assert r["fault_at_s"] == 2.0 and r["detection_s"] is None and r["recovery_s"] is None
    assert r["calls_in_setup_at_fault"] == 1 and r["calls_in_setup_completed"] == 0


def test_detection_before_the_fault_does_not_count_and_failover_follows_detection() -> None:
    t = Timeline(origin=0.0)
    t.record(DETECTED, at=1.0)
    t.record(FAILOVER_COMPLETE, at=1.5)
    t.record(FAULT_INJECTED, at=5.0)
    t.record(DETECTED, at=7.25)
    r = t.results()
    assert r["detection_s"] == 2.25
    assert r["failover_s"] is None


def test_baseline_without_failover_recovers_at_the_first_call_after_the_fault() -> None:
    t = Timeline(origin=0.0)
    t.call_started(1, at=1.0)
    t.record(FAULT_INJECTED, at=1.01)
    t.call_ended(1, "dropped", at=6.0)
    t.call_started(2, at=20.0)
    t.call_established(2, at=27.0)
    r = t.results()
    assert r["recovery_s"] == 25.99
    assert r["calls_in_setup_at_fault"] == 1 and r["calls_in_setup_completed"] == 0


def test_as_dict_is_json_with_times_from_the_origin() -> None:
    d = json.loads(silc_run().to_json())
    first = d["events"][0]
    assert first == {"event": "run_started", "at_s": 0.0}
    fault = next(e for e in d["events"] if e["event"] == FAULT_INJECTED)
    assert fault["at_s"] == 25.0 and fault["instance"] == "silc"
    assert d["calls"]["25"]["outcome"] == "completed"


def test_bad_input_is_refused() -> None:
    t = Timeline(origin=0.0)
    with pytest.raises(ValueError, match="outcome"):
        t.call_ended(1, "vanished", at=1.0)
    with pytest.raises(ValueError, match="no clock"):
        t.record("x")
    with pytest.raises(ValueError, match="charging"):
        t.charging({}, at=1.0)
    with pytest.raises(ValueError, match="charging"):
        t.charging({"pgw": -1}, at=1.0)


def test_charging_discrepancy_flat_and_per_subscriber() -> None:
    assert charging_discrepancy({"mrf": 5000, "pgw": 3000, "pcrf": 5000}) == 2000
    assert charging_discrepancy({"mrf": 10, "pgw": 10}) == 0
    assert charging_discrepancy({"mrf": {"a": 10, "b": 5}, "pgw": {"a": 10}}) == 5


def test_module_events_timed_by_wall_clock_land_on_the_timeline() -> None:
    clock = VirtualClock(start=50.0)
    t = Timeline(clock)
    wall0 = t._ref_wall  # noqa: SLF001  (the one joint reading of both clocks)
    t.record(FAULT_INJECTED, at=51.0)
    n = t.import_module_events([
        # logged when the hop failed, two seconds after it happened
        {"event": "detection_triggered", "at": 8.001, "wall": wall0 + 3.0, "module": "sc"},
        {"event": "hop_failed", "at": 10.0, "wall": wall0 + 3.0, "module": "sc", "failed": "silc"},
        {"event": "replacement_started", "at": 10.02, "wall": wall0 + 3.02, "module": "sc"},
        {"event": "failover_complete", "at": 10.05, "wall": wall0 + 3.05, "module": "sc"},
    ])
    assert n == 4
    r = t.results()
    assert r["detection_s"] == 2.0 and r["failover_s"] == 0.05
    detected = t.first(DETECTED)
    assert detected.details == {"module": "sc", "failed": "silc"}
    assert t.first("module_detection_triggered").at == pytest.approx(51.001)

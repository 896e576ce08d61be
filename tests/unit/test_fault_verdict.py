"""Steady-state checks and the verdict."""

from __future__ import annotations

import json

import pytest

from faults.verdict import Check, CheckError, evaluate, parse_check

GOOD = {
    "detection_s": 2.01, "failover_s": 0.05, "recovery_s": 2.1, "detection_trigger_s": 0.003,
    "calls_in_setup_at_fault": 2, "calls_in_setup_completed": 2, "calls_dropped": 0,
    "hanging_mrf_dialogs": 0, "charging_discrepancy_bytes": 0,
}
BASELINE = {
    "detection_s": None, "failover_s": None, "recovery_s": 26.0, "detection_trigger_s": 0.003,
    "calls_in_setup_at_fault": 2, "calls_in_setup_completed": 0, "calls_dropped": 24,
    "hanging_mrf_dialogs": 24, "charging_discrepancy_bytes": 123456,
}
ALL = [
    Check("no_hanging_mrf_dialogs"), Check("setup_calls_complete"), Check("no_dropped_calls"),
    Check("detection_at"), Check("failover_within"), Check("recovery_within", {"max_s": 3.0}),
    Check("charging_agrees"), Check("detection_triggered_within", {"max_s": 0.01}),
]


def test_every_check_holds_on_a_good_run() -> None:
    verdict = evaluate(ALL, GOOD)
    assert verdict.held, verdict.as_dict()
    assert verdict.failed() == []


def test_baseline_fails_and_says_which() -> None:
    verdict = evaluate(ALL, BASELINE)
    assert not verdict.held
    assert verdict.failed() == [
        "no_hanging_mrf_dialogs", "setup_calls_complete", "no_dropped_calls", "detection_at",
        "failover_within", "recovery_within", "charging_agrees",
    ]
    d = json.loads(json.dumps(verdict.as_dict()))
    detection = next(c for c in d["checks"] if c["check"] == "detection_at")
    assert detection == {"check": "detection_at", "held": False, "measured": None,
                         "expected": "2.0 s +- 0.05 s", "figure": "detection_s"}


@pytest.mark.parametrize(("detection", "held"), [(1.95, True), (2.05, True), (2.0501, False), (1.9, False)])
def test_detection_window_edges(detection: float, held: bool) -> None:
    assert evaluate([Check("detection_at")], {**GOOD, "detection_s": detection}).held is held


def test_failover_bound_is_a_parameter() -> None:
    results = {**GOOD, "failover_s": 0.5}
    assert not evaluate([Check("failover_within")], results).held
    assert evaluate([Check("failover_within", {"max_s": 0.5})], results).held


def test_declarations_are_validated_naming_the_field() -> None:
    with pytest.raises(CheckError, match=r"check\[0\]\.check: unknown check 'sunny'"):
        parse_check({"check": "sunny"}, "check[0]")
    with pytest.raises(CheckError, match=r"check\[1\]\.max_s: recovery_within needs max_s"):
        parse_check({"check": "recovery_within"}, "check[1]")
    with pytest.raises(CheckError, match=r"check\[2\]\.seconds: detection_at takes no parameter"):
        parse_check({"check": "detection_at", "seconds": 2}, "check[2]")
    with pytest.raises(CheckError, match=r"check\[3\]\.max_s: expected a number"):
        parse_check({"check": "failover_within", "max_s": "fast"}, "check[3]")
    with pytest.raises(CheckError):
        Check("nonsense")


def test_no_checks_is_vacuously_held() -> None:
    assert evaluate([], BASELINE).held

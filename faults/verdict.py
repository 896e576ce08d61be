"""Steady-state checks, stated before a fault run, and the verdict saying which of them held.

A check is declared up front (in a fault plan's ``[[check]]`` tables, or in code) and evaluated
afterwards against :meth:`faults.timeline.Timeline.results`. A check whose figure was never
measured (no detection recorded, no MRF count reported) did not hold: ``held`` is ``False`` and
``measured`` is ``None``, so a run cannot pass by not looking.

==============================  ============================================  ==================
check                           holds when                                    parameters
==============================  ============================================  ==================
``no_hanging_mrf_dialogs``      ``hanging_mrf_dialogs == 0``
``setup_calls_complete``        every call in setup at the fault completed
``no_dropped_calls``            ``calls_dropped == 0``
``detection_at``                ``|detection_s - expected_s| <= tolerance_s``  expected_s (2.0),
                                                                              tolerance_s (0.05)
``detection_triggered_within``  ``detection_trigger_s <= max_s``              max_s
``failover_within``             ``failover_s <= max_s``                       max_s (0.1)
``recovery_within``             ``recovery_s <= max_s``                       max_s
``charging_agrees``             ``charging_discrepancy_bytes <= max_bytes``   max_bytes (0)
==============================  ============================================  ==================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CHECKS", "Check", "CheckError", "CheckResult", "Verdict", "evaluate", "parse_check"]


class CheckError(ValueError):
    """A check declaration that cannot be evaluated; the message names the field."""


@dataclass(frozen=True, slots=True)
class _Rule:
    figure: str
    params: Mapping[str, float]  # name -> default (nan: required)
    holds: Callable[[Any, Mapping[str, float], Mapping[str, Any]], bool]
    expected: Callable[[Mapping[str, float]], str]


_REQUIRED = math.nan
#: Figures are rounded to the microsecond; bounds are compared with this much slack.
_EPS = 1e-9

CHECKS: dict[str, _Rule] = {
    "no_hanging_mrf_dialogs": _Rule("hanging_mrf_dialogs", {}, lambda m, p, r: m == 0, lambda p: "0"),
    "setup_calls_complete": _Rule(
        "calls_in_setup_completed", {}, lambda m, p, r: m == r["calls_in_setup_at_fault"],
        lambda p: "all calls in setup at the fault",
    ),
    "no_dropped_calls": _Rule("calls_dropped", {}, lambda m, p, r: m == 0, lambda p: "0"),
    "detection_at": _Rule(
        "detection_s", {"expected_s": 2.0, "tolerance_s": 0.05},
        lambda m, p, r: abs(m - p["expected_s"]) <= p["tolerance_s"] + _EPS,
        lambda p: f"{p['expected_s']} s +- {p['tolerance_s']} s",
    ),
    "detection_triggered_within": _Rule(
        "detection_trigger_s", {"max_s": _REQUIRED}, lambda m, p, r: m <= p["max_s"] + _EPS, lambda p: f"<= {p['max_s']} s"
    ),
    "failover_within": _Rule("failover_s", {"max_s": 0.1}, lambda m, p, r: m <= p["max_s"] + _EPS, lambda p: f"<= {p['max_s']} s"),
    "recovery_within": _Rule(
        "recovery_s", {"max_s": _REQUIRED}, lambda m, p, r: m <= p["max_s"] + _EPS, lambda p: f"<= {p['max_s']} s"
    ),
    "charging_agrees": _Rule(
        "charging_discrepancy_bytes", {"max_bytes": 0}, lambda m, p, r: m <= p["max_bytes"],
        lambda p: f"<= {p['max_bytes']:g} bytes",
    ),
}


@dataclass(frozen=True, slots=True)
class Check:
    """One steady-state check: a :data:`CHECKS` name and its parameters."""

    name: str
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parse_check({"check": self.name, **self.params}, "check")

    def evaluate(self, results: Mapping[str, Any]) -> CheckResult:
        rule = CHECKS[self.name]
        params = {**rule.params, **self.params}
        measured = results.get(rule.figure)
        held = measured is not None and bool(rule.holds(measured, params, results))
        return CheckResult(self.name, held, measured, rule.expected(params), rule.figure)


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    held: bool
    measured: Any
    expected: str
    figure: str

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.name, "held": self.held, "measured": self.measured, "expected": self.expected,
                "figure": self.figure}


@dataclass(frozen=True, slots=True)
class Verdict:
    checks: tuple[CheckResult, ...]

    @property
    def held(self) -> bool:
        """Every check held (vacuously true with no checks)."""
        return all(c.held for c in self.checks)

    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.held]

    def as_dict(self) -> dict[str, Any]:
        return {"held": self.held, "checks": [c.as_dict() for c in self.checks]}


def evaluate(checks: list[Check] | tuple[Check, ...], results: Mapping[str, Any]) -> Verdict:
    """Evaluate the declared checks against a timeline's results."""
    return Verdict(tuple(check.evaluate(results) for check in checks))


def parse_check(table: Any, path: str) -> Check:
    """A check from a TOML table ``{check = NAME, param = value...}``; errors name ``path``."""
    if not isinstance(table, Mapping):
        raise CheckError(f"{path}: expected a table, got {type(table).__name__}")
    name = table.get("check")
    if name not in CHECKS:
        raise CheckError(f"{path}.check: unknown check {name!r} (known: {', '.join(sorted(CHECKS))})")
    rule = CHECKS[name]
    params: dict[str, float] = {}
    for key, value in table.items():
        if key == "check":
            continue
        if key not in rule.params:
            allowed = ", ".join(rule.params) or "none"
            raise CheckError(f"{path}.{key}: {name} takes no parameter {key!r} (parameters: {allowed})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise CheckError(f"{path}.{key}: expected a number >= 0, got {value!r}")
        params[key] = float(value)
    missing = [k for k, d in rule.params.items() if isinstance(d, float) and math.isnan(d) and k not in params]
    if missing:
        raise CheckError(f"{path}.{missing[0]}: {name} needs {missing[0]}")
    return _make(name, params)


def _make(name: str, params: dict[str, float]) -> Check:
    # Bypasses __post_init__ (which validates through parse_check).
    check = object.__new__(Check)
    object.__setattr__(check, "name", name)
    object.__setattr__(check, "params", params)
    return check

"""Fault injection: fault kinds, TOML fault plans, the injector actor, the timeline and the verdict.

``faults`` may use ``nf_modules`` and ``actors``; nothing below it imports it. Entry points:
:func:`faults.plan.load_plan`, :class:`faults.injector.FaultInjector`,
:class:`faults.timeline.Timeline`, :func:`faults.verdict.evaluate`, and :mod:`faults.netem` for
kernel qdiscs where the machine allows them.
"""

from faults.kinds import FAULT_KINDS, Fault, make_fault
from faults.plan import FaultPlan, FaultSpec, PlanError, builtin_plans, load_plan, parse_plan, resolve
from faults.timeline import Timeline
from faults.verdict import Check, Verdict, evaluate

__all__ = [
    "FAULT_KINDS",
    "Check",
    "Fault",
    "FaultPlan",
    "FaultSpec",
    "PlanError",
    "Timeline",
    "Verdict",
    "builtin_plans",
    "evaluate",
    "load_plan",
    "make_fault",
    "parse_plan",
    "resolve",
]

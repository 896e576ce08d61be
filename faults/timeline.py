"""The timeline of a fault run: what happened when, and the figures computed from it.

Everything a fault run learns goes through :meth:`Timeline.record`: the injector records the
faults it applies and reverts, its dead-hop taps the first SIP datagram sent to a failed instance
(``detection_triggered``: the paper's "failure detection mechanism triggers", Fig. 10a), the hop
supervisors the failed hop being declared (``detected``: Timer B expiry) and the failover
(``failover_complete``), the experiment every call's progress and outcome, the MRF's hanging
dialogs and the charging taps' totals. :meth:`Timeline.results` turns the record into the
machine-readable figures of a fault run (issue 5): ``fault_at_s``, ``detection_s``,
``failover_s``, ``recovery_s``, ``calls_in_setup_at_fault``, ``calls_in_setup_completed``,
``calls_dropped``, ``hanging_mrf_dialogs``, ``charging_discrepancy_bytes``.

Time: ``at`` is in the timeline's clock (emulated seconds); ``at=None`` reads the clock. Give
every recorder the same :class:`Timeline` and let it read its own clock (actors' clocks have
different origins). Events timed elsewhere with ``time.time()`` come in through
:meth:`Timeline.record_wall` / :meth:`Timeline.import_module_events` (the modules' failover logs
carry a ``wall`` time for this). Thread-safe: taps record from whichever loop thread their
endpoint runs on.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.clock import Clock

__all__ = [
    "CALL_ENDED",
    "CALL_ESTABLISHED",
    "CALL_OUTCOMES",
    "CALL_STARTED",
    "CHARGING",
    "DETECTED",
    "DETECTION_TRIGGERED",
    "FAILOVER_COMPLETE",
    "FAULT_INJECTED",
    "FAULT_REVERTED",
    "FIRST_CALL_AFTER_FAILOVER",
    "HANGING_MRF_DIALOGS",
    "RUN_STARTED",
    "Timeline",
    "TimelineEvent",
    "charging_discrepancy",
]

RUN_STARTED = "run_started"
FAULT_INJECTED = "fault_injected"
FAULT_REVERTED = "fault_reverted"
DETECTION_TRIGGERED = "detection_triggered"
DETECTED = "detected"
FAILOVER_COMPLETE = "failover_complete"
FIRST_CALL_AFTER_FAILOVER = "first_call_after_failover"
CALL_STARTED = "call_started"
CALL_ESTABLISHED = "call_established"
CALL_ENDED = "call_ended"
HANGING_MRF_DIALOGS = "hanging_mrf_dialogs"
CHARGING = "charging"

#: A call's outcome: ran its course, was torn down by the network, or was left half-open.
CALL_OUTCOMES = ("completed", "dropped", "hanging")

#: How the modules' failover-log events (nf_modules.failover.FailoverLog) are named here. The
#: module's own "detection_triggered" (earliest forward of a request that went unanswered) is kept
#: apart from the injector's tap-observed one.
MODULE_EVENT_NAMES = {
    "hop_failed": DETECTED,
    "failover_complete": FAILOVER_COMPLETE,
    "detection_triggered": "module_detection_triggered",
}

#: The keys of :meth:`Timeline.results` that issue 5's JSON requires.
RESULT_KEYS = (
    "fault_at_s",
    "detection_s",
    "failover_s",
    "recovery_s",
    "calls_in_setup_at_fault",
    "calls_in_setup_completed",
    "calls_dropped",
    "hanging_mrf_dialogs",
    "charging_discrepancy_bytes",
)


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    event: str
    at: float
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self, origin: float = 0.0) -> dict[str, Any]:
        return {"event": self.event, "at_s": _round(self.at - origin), **_jsonable(self.details)}


@dataclass(slots=True)
class _Call:
    started: float | None = None
    established: float | None = None
    ended: float | None = None
    outcome: str | None = None


class Timeline:
    """An append-only record of a fault run. See the module docstring."""

    def __init__(self, clock: Clock | None = None, *, origin: float | None = None) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._events: list[TimelineEvent] = []
        self._calls: dict[int | str, _Call] = {}
        self.origin = origin if origin is not None else (clock.now() if clock is not None else 0.0)
        # One reading of both clocks, to place wall-clock (time.time()) events on this timeline.
        self._ref_now = clock.now() if clock is not None else self.origin
        self._ref_wall = time.time()
        self._scale = clock.time_scale if clock is not None else 1.0

    # ------------------------------------------------------------------ recording (any thread)

    def now(self) -> float:
        if self._clock is None:
            raise ValueError("this timeline has no clock: pass at= explicitly")
        return self._clock.now()

    def record(self, event: str, at: float | None = None, **details: Any) -> TimelineEvent:
        """Append ``event`` at ``at`` (default: now). Any thread."""
        if not isinstance(event, str) or not event:
            raise ValueError(f"event must be a non-empty string, got {event!r}")
        entry = TimelineEvent(event, self.now() if at is None else float(at), dict(details))
        with self._lock:
            self._events.append(entry)
            if event in (CALL_STARTED, CALL_ESTABLISHED, CALL_ENDED):
                self._note_call(entry)
        return entry

    def at_wall(self, wall: float) -> float:
        """This timeline's time at wall-clock instant ``wall`` (``time.time()`` seconds)."""
        return self._ref_now + (wall - self._ref_wall) * self._scale

    def record_wall(self, event: str, wall: float, **details: Any) -> TimelineEvent:
        """Record an event timed with ``time.time()`` elsewhere (another clock, another loop)."""
        return self.record(event, self.at_wall(wall), **details)

    def import_module_events(
        self, events: Any, names: Mapping[str, str] = MODULE_EVENT_NAMES
    ) -> int:
        """Add the modules' failover-log entries (``{"event", "at", "wall", "module", ...}``; e.g.
        ``await deployment.failover_events()``), renamed by ``names``; returns how many.

        ``at`` is the module's clock, ``wall`` the ``time.time()`` when the entry was written,
        which for some entries is later than ``at`` (a detection trigger is logged when the hop
        is declared failed). Per module, the smallest ``wall - at / time_scale`` is the offset
        between its clock and the wall clock; each entry is placed at its ``at`` through it.
        """
        entries = list(events)
        offset: dict[Any, float] = {}
        for e in entries:
            o = e["wall"] - e["at"] / self._scale
            offset[e.get("module")] = min(offset.get(e.get("module"), o), o)
        for e in entries:
            details = {k: v for k, v in e.items() if k not in ("event", "at", "wall")}
            wall = e["at"] / self._scale + offset[e.get("module")]
            self.record_wall(names.get(e["event"], e["event"]), wall, **details)
        return len(entries)

    def start(self, at: float | None = None) -> None:
        """Mark the run's start: the origin of every ``*_at_s`` figure."""
        entry = self.record(RUN_STARTED, at)
        self.origin = entry.at

    def call_started(self, call: int | str, at: float | None = None) -> None:
        self.record(CALL_STARTED, at, call=call)

    def call_established(self, call: int | str, at: float | None = None) -> None:
        self.record(CALL_ESTABLISHED, at, call=call)

    def call_ended(self, call: int | str, outcome: str, at: float | None = None, **details: Any) -> None:
        """A call's outcome: ``"completed"``, ``"dropped"`` or ``"hanging"``."""
        if outcome not in CALL_OUTCOMES:
            raise ValueError(f"outcome must be one of {CALL_OUTCOMES}, got {outcome!r}")
        self.record(CALL_ENDED, at, call=call, outcome=outcome, **details)

    def hanging_mrf_dialogs(self, count: int, at: float | None = None) -> None:
        """How many MRF dialogs are left Connected with no live call (the last count wins)."""
        self.record(HANGING_MRF_DIALOGS, at, count=int(count))

    def charging(self, totals: Mapping[str, Any], at: float | None = None) -> None:
        """Bytes counted per charging tap: ``{tap: bytes}`` or ``{tap: {subscriber: bytes}}``."""
        charging_discrepancy(totals)  # validates
        self.record(CHARGING, at, totals=_jsonable(totals))

    def _note_call(self, entry: TimelineEvent) -> None:
        call = self._calls.setdefault(entry.details["call"], _Call())
        if entry.event == CALL_STARTED:
            call.started = entry.at if call.started is None else call.started
        elif entry.event == CALL_ESTABLISHED:
            call.established = entry.at if call.established is None else call.established
        else:
            call.ended, call.outcome = entry.at, entry.details["outcome"]

    # ------------------------------------------------------------------ reading

    def events(self, event: str | None = None) -> list[TimelineEvent]:
        """Events in time order (recording order among equal times), all or of one kind."""
        with self._lock:
            events = sorted(self._events, key=lambda e: e.at)
        return [e for e in events if event is None or e.event == event]

    def first(self, event: str, *, after: float | None = None, **match: Any) -> TimelineEvent | None:
        """The earliest ``event`` at or after ``after`` whose details include ``match``."""
        for e in self.events(event):
            if after is not None and e.at < after:
                continue
            if all(e.details.get(k) == v for k, v in match.items()):
                return e
        return None

    def last(self, event: str) -> TimelineEvent | None:
        events = self.events(event)
        return events[-1] if events else None

    def calls(self) -> dict[int | str, dict[str, Any]]:
        with self._lock:
            calls = dict(self._calls)
        return {
            n: {"started": c.started, "established": c.established, "ended": c.ended, "outcome": c.outcome}
            for n, c in calls.items()
        }

    def results(self) -> dict[str, Any]:
        """The fault run's figures (seconds relative to the fault, or to the run for ``fault_at_s``)."""
        fault = self.first(FAULT_INJECTED)
        out: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
        out["detection_trigger_s"] = None
        calls = self.calls()
        out["calls_dropped"] = sum(1 for c in calls.values() if c["outcome"] == "dropped")
        out["calls_completed"] = sum(1 for c in calls.values() if c["outcome"] == "completed")
        out["calls_hanging"] = sum(1 for c in calls.values() if c["outcome"] == "hanging")
        hanging = self.last(HANGING_MRF_DIALOGS)
        out["hanging_mrf_dialogs"] = hanging.details["count"] if hanging is not None else None
        charging = self.last(CHARGING)
        if charging is not None:
            out["charging_totals"] = charging.details["totals"]
            out["charging_discrepancy_bytes"] = charging_discrepancy(charging.details["totals"])
        if fault is None:
            return out
        t = fault.at
        out["fault_at_s"] = _round(t - self.origin)
        trigger = self.first(DETECTION_TRIGGERED, after=t)
        detected = self.first(DETECTED, after=t)
        failover = self.first(FAILOVER_COMPLETE, after=detected.at) if detected is not None else None
        if trigger is not None:
            out["detection_trigger_s"] = _round(trigger.at - t)
        if detected is not None:
            out["detection_s"] = _round(detected.at - t)
        if failover is not None and detected is not None:
            out["failover_s"] = _round(failover.at - detected.at)
        back = failover.at if failover is not None else t
        explicit = self.first(FIRST_CALL_AFTER_FAILOVER, after=t)
        established = [c["established"] for c in calls.values() if c["established"] is not None and c["established"] >= back]
        candidates = [x for x in (explicit.at if explicit else None, min(established, default=None)) if x is not None]
        if candidates:
            out["recovery_s"] = _round(min(candidates) - t)
        in_setup = [
            c for c in calls.values()
            if c["started"] is not None and c["started"] <= t
            and (c["established"] is None or c["established"] > t)
            and (c["ended"] is None or c["ended"] > t)
        ]
        out["calls_in_setup_at_fault"] = len(in_setup)
        out["calls_in_setup_completed"] = sum(
            1 for c in in_setup if c["established"] is not None and c["outcome"] != "dropped"
        )
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable: events (times from the origin), calls, results."""
        events = [e.as_dict(self.origin) for e in self.events()]
        calls = {
            str(n): {k: (_round(v - self.origin) if isinstance(v, float) else v) for k, v in c.items()}
            for n, c in self.calls().items()
        }
        return {"events": events, "calls": calls, "results": self.results()}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)


def charging_discrepancy(totals: Mapping[str, Any]) -> int:
    """Bytes the charging taps disagree on: per subscriber, the largest minus the smallest count.

    ``{tap: bytes}`` compares the taps' totals; ``{tap: {subscriber: bytes}}`` sums the
    per-subscriber disagreements (a subscriber a tap never saw counts 0 there).
    """
    if not isinstance(totals, Mapping) or not totals:
        raise ValueError("charging totals must be a non-empty mapping tap -> bytes")
    values = list(totals.values())
    if all(_is_count(v) for v in values):
        return int(max(values) - min(values))
    if not all(isinstance(v, Mapping) and all(_is_count(b) for b in v.values()) for v in values):
        raise ValueError("charging totals: each tap maps to bytes, or to {subscriber: bytes}")
    subscribers = set().union(*(v.keys() for v in values))
    return int(sum(max(v.get(s, 0) for v in values) - min(v.get(s, 0) for v in values) for s in subscribers))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _round(value: float) -> float:
    return round(value, 6)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)

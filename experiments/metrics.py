"""What an experiment measures: SIP call/transaction metrics, media metrics, per-module stats.

All percentiles come from :class:`~experiments.histogram.Histogram` (exact to 0.1 % at any
count). Times are milliseconds. Plain data, filled by the experiment on one thread (the
runtime's loop for a load run); ``summary()`` gives the JSON-able dict the results folder,
the report and ``--json`` print.

- :class:`SipMetrics`: per transaction type (``INVITE``, ``BYE``, ``REGISTER``...) completion
  time; call setup INVITE->200 and INVITE->180; calls completed / failed / timed out, by final
  status; retransmissions (taken from the modules' counters, see :func:`retransmissions`).
- :class:`MediaMetrics`: per call and overall one-way latency, jitter and loss, fed with the
  UE pool's media stats dicts (:func:`normalise_media_stats` says which keys are read).
- :func:`module_metrics`: queue length, service time, messages in/out and drops per module,
  from ``ImsDeployment.stats()``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from experiments.histogram import Histogram

__all__ = [
    "MediaMetrics",
    "SipMetrics",
    "module_metrics",
    "normalise_media_stats",
    "retransmissions",
]

PERCENTILES = (50, 90, 99, 99.9)
TIMEOUT_STATUSES = (0, 408)  # no final response in time / a Timer B 408 made locally


def _pct(histogram: Histogram, keys: Iterable[float] = PERCENTILES, digits: int = 3) -> dict[str, float | None]:
    out = {k: (None if v is None else round(v, digits)) for k, v in histogram.percentiles(keys).items()}
    out["max"] = None if histogram.max is None else round(histogram.max, digits)
    return out


# ===================================================================================== SIP


@dataclass
class SipMetrics:
    """Call and transaction outcomes of a run."""

    setup: Histogram = field(default_factory=Histogram)  # INVITE -> 200, ms
    ringing: Histogram = field(default_factory=Histogram)  # INVITE -> first 18x, ms
    transactions: dict[str, Histogram] = field(default_factory=dict)  # method -> completion ms
    by_status: Counter[str] = field(default_factory=Counter)  # final INVITE status -> calls
    calls: int = 0
    completed: int = 0
    failed: int = 0
    timeouts: int = 0
    unfinished: int = 0  # still in progress when the run ended
    retransmissions: int = 0
    registration: dict[str, Any] = field(default_factory=dict)

    def transaction(self, method: str, ms: float) -> None:
        """One ``method`` transaction took ``ms`` from request to final response."""
        self.transactions.setdefault(method, Histogram()).record(max(0.0, ms))

    def record_call(self, result: Any, *, hold: float = 0.0, time_scale: float = 1.0) -> dict[str, Any]:
        """Account one finished call (a ``CallResult``); returns its sample for samples.jsonl.

        ``hold`` (emulated s) and ``time_scale`` let the BYE's time be read off the caller's
        timeline: BYE completion = time of its final response - (answer + hold in real s)."""
        self.calls += 1
        status = int(getattr(result, "status", 0) or 0)
        self.by_status[str(status)] += 1
        answered = getattr(result, "answered_after", None)
        ringing = getattr(result, "ringing_after", None)
        if ringing is not None:
            self.ringing.record(ringing * 1000)
        invite_ms = None
        for t, what in getattr(result, "timeline", ()):  # "INVITE 486" etc.: the final response
            if what.startswith("INVITE "):
                invite_ms = t * 1000
            elif what.startswith("BYE ") and answered is not None and what != "BYE from the callee":
                self.transaction("BYE", (t - answered - hold / time_scale) * 1000)
        if invite_ms is not None:
            self.transaction("INVITE", invite_ms)
        if answered is not None:
            self.setup.record(answered * 1000)
        completed = bool(getattr(result, "completed", False))
        if completed:
            self.completed += 1
        else:
            self.failed += 1
            if status in TIMEOUT_STATUSES:
                self.timeouts += 1
        return {
            "call_id": getattr(result, "call_id", None),
            "status": status,
            "bye_status": getattr(result, "bye_status", 0),
            "completed": completed,
            "setup_ms": None if answered is None else round(answered * 1000, 3),
            "ringing_ms": None if ringing is None else round(ringing * 1000, 3),
        }

    def record_registration(self, summary: Mapping[str, Any]) -> None:
        """A registration storm's outcome (``UePool.register_all``'s summary)."""
        self.registration = dict(summary)
        users, elapsed = summary.get("users", 0), summary.get("elapsed_s") or 0
        if users and elapsed:
            self.registration["rate_per_s"] = round(users / elapsed, 1)

    @property
    def success_rate(self) -> float | None:
        return self.completed / self.calls if self.calls else None

    def summary(self) -> dict[str, Any]:
        return {
            "calls": self.calls + self.unfinished,
            "completed": self.completed,
            "failed": self.failed + self.unfinished,
            "timeouts": self.timeouts,
            "unfinished": self.unfinished,
            "success_rate": None if self.success_rate is None else round(self.success_rate, 4),
            "by_status": dict(sorted(self.by_status.items())),
            "setup_ms": _pct(self.setup),
            "ringing_ms": _pct(self.ringing),
            "transactions_ms": {m: {"count": h.count, **_pct(h)} for m, h in sorted(self.transactions.items())},
            "retransmissions": self.retransmissions,
            "registration": self.registration or None,
        }

    def histograms(self) -> dict[str, Histogram]:
        out = {"setup_ms": self.setup, "ringing_ms": self.ringing}
        out.update({f"{m}_ms": h for m, h in self.transactions.items()})
        return out


# =================================================================================== media

# How a quantile mixture stands in for a call's latency distribution when the UE reports only
# its percentiles: mass between consecutive reported quantiles goes to the upper one.
_MIXTURE = ((0.50, "p50"), (0.40, "p90"), (0.09, "p99"), (0.01, "max"))


def normalise_media_stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    """One call's media stats in our keys: ``latency_ms`` {p50, p90, p99, max}, ``jitter_ms``,
    ``loss`` (fraction), ``packets``, and ``histogram`` (a ``Histogram`` dict) when given.

    Read: ``latency_ms`` as a dict, or flat ``p50``/``p90``/``p99``/``max`` (also
    ``latency_p50_ms``, ``p50_ms``, ``max_latency_ms``...); ``jitter_ms`` (or ``jitter``);
    ``loss`` (a fraction; ``loss_pct`` in percent); ``packets`` (or ``packets_received``);
    ``latency_histogram`` / ``histogram`` (a ``Histogram``, its dict, or the media engine's
    ``(low_ms, high_ms, count)`` buckets, see :meth:`Histogram.record_buckets`); ``latencies_ms``
    (raw samples)."""
    latency: dict[str, float | None] = {}
    nested = stats.get("latency_ms")
    for key in ("p50", "p90", "p99", "max"):
        value = nested.get(key) if isinstance(nested, Mapping) else None
        for name in (key, f"{key}_ms", f"latency_{key}_ms", f"{key}_latency_ms", f"latency_{key}"):
            if value is None and stats.get(name) is not None:
                value = stats[name]
        latency[key] = None if value is None else float(value)
    loss = stats.get("loss")
    if loss is None and stats.get("loss_pct") is not None:
        loss = float(stats["loss_pct"]) / 100
    out: dict[str, Any] = {
        "latency_ms": latency,
        "jitter_ms": _float(stats.get("jitter_ms", stats.get("jitter"))),
        "loss": _float(loss),
        "packets": int(stats.get("packets", stats.get("packets_received", 0)) or 0),
    }
    histogram = stats.get("latency_histogram", stats.get("histogram"))
    if isinstance(histogram, Histogram):
        out["histogram"] = histogram.to_dict()
    elif isinstance(histogram, Mapping):
        out["histogram"] = dict(histogram)
    elif isinstance(histogram, (list, tuple)):  # the engine's (low_ms, high_ms, count) buckets
        h = Histogram()
        try:
            h.record_buckets(histogram, latency["max"])
        except ValueError:
            pass  # malformed: the leg falls back to its percentiles (approximate)
        else:
            out["histogram"] = h.to_dict()
    elif isinstance(stats.get("latencies_ms"), (list, tuple)):
        h = Histogram()
        h.record_all(v for v in stats["latencies_ms"] if isinstance(v, (int, float)) and v >= 0)
        out["histogram"] = h.to_dict()
    return out


def _round3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _leg_key(stats: Mapping[str, Any], i: int) -> str:
    call_id = str(stats.get("call_id", i))
    return f"{call_id}/{stats['role']}" if stats.get("role") else call_id


def _float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class MediaMetrics:
    """Per call and overall one-way latency, jitter and loss.

    The overall latency histogram is one histogram of every packet when the UEs report
    histograms, engine buckets (within the engine's bucket width) or raw samples; otherwise each
    call's reported quantiles stand in for its packets (``approximate``)."""

    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency: Histogram = field(default_factory=Histogram)
    jitter: Histogram = field(default_factory=Histogram)
    approximate: bool = False
    packets: int = 0
    lost: float = 0.0
    overall: dict[str, Any] | None = None

    def add_call(self, call_id: str, stats: Mapping[str, Any]) -> dict[str, Any]:
        """One call's media stats (the UE pool's dict); returns the normalised sample."""
        call = normalise_media_stats(stats)
        self.calls[call_id] = call
        packets = call["packets"]
        if call.get("histogram"):
            self.latency.merge(Histogram.from_dict(call["histogram"]))
        elif packets and call["latency_ms"]["p50"] is not None:
            self.approximate = True
            remaining = packets
            for share, key in _MIXTURE:
                value = call["latency_ms"][key] if call["latency_ms"][key] is not None else call["latency_ms"]["p50"]
                n = remaining if key == "max" else min(remaining, max(0, round(packets * share)))
                if n > 0 and value is not None and value >= 0:
                    self.latency.record(value, n)
                remaining -= n
        if call["jitter_ms"] is not None:
            self.jitter.record(max(0.0, call["jitter_ms"]))
        if call["loss"] is not None and packets:
            self.packets += packets
            # packets counts what arrived: lost = received * loss / (1 - loss)
            self.lost += packets * call["loss"] / (1 - call["loss"]) if call["loss"] < 1 else 0.0
        return {"call_id": call_id, **{k: v for k, v in call.items() if k != "histogram"}}

    def by_second(self, starts: Mapping[str, float]) -> list[dict[str, Any]]:
        """Media latency per second of the schedule: the legs of the calls started in each second
        (``starts``: call id -> emulated start), as ``{"second", "legs", "p50", "p99", "max"}`` rows."""
        groups: dict[int, MediaMetrics] = {}
        for key, call in self.calls.items():
            at = starts.get(key.split("/")[0])
            if at is None:
                continue
            group = groups.setdefault(int(at), MediaMetrics())
            group.add_call(key, {**call, "histogram": call.get("histogram")} if call.get("histogram") else {
                "latency_ms": call["latency_ms"], "packets": call["packets"], "loss": call["loss"], "jitter_ms": call["jitter_ms"]})
        rows = []
        for second, group in sorted(groups.items()):
            h = group.latency
            rows.append({"second": second, "legs": len(group.calls), "p50": _round3(h.percentile(50)),
                         "p99": _round3(h.percentile(99)), "max": _round3(h.max)})
        return rows

    def add_many(self, by_call: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """``{call_id: stats}`` or a list of stats dicts with a ``call_id`` key."""
        if isinstance(by_call, Mapping):
            items: Iterable[tuple[Any, Any]] = by_call.items()
        else:
            items = ((_leg_key(s, i), s) for i, s in enumerate(by_call) if isinstance(s, Mapping))
        return [self.add_call(str(call_id), stats) for call_id, stats in items if isinstance(stats, Mapping)]

    def set_overall(self, stats: Mapping[str, Any]) -> None:
        """The UE pool's own aggregate (``get_media_stats()``): its loss and packet count replace
        the per-call sums in :meth:`summary`; its latency percentiles too, but only when it
        carries a histogram (percentiles averaged over legs are not percentiles of the whole, so
        without one the quantile mixture of the legs stands)."""
        self.overall = normalise_media_stats(stats) if stats else None
        if self.overall is not None and self.overall.get("histogram"):
            self.latency = Histogram.from_dict(self.overall["histogram"])
            self.approximate = False

    @property
    def loss(self) -> float | None:
        if self.overall is not None and self.overall["loss"] is not None:
            return self.overall["loss"]
        total = self.packets + self.lost
        return self.lost / total if total else None

    def summary(self) -> dict[str, Any] | None:
        overall = self.overall
        if not self.calls and overall is None:
            return None
        latency = _pct(self.latency, (50, 90, 99)) if self.latency.count else None
        approximate = self.approximate
        if latency is None and overall is not None and overall["latency_ms"]["p50"] is not None:
            latency = {k: None if v is None else round(v, 3) for k, v in overall["latency_ms"].items()}
            approximate = True
        return {
            "calls": len(self.calls),
            "packets": overall["packets"] if overall is not None and overall["packets"] else self.packets,
            "latency_ms": latency,
            "latency_under_50ms": round(self.latency.fraction_below(50.0), 4) if self.latency.count else None,
            "latency_under_100ms": round(self.latency.fraction_below(100.0), 4) if self.latency.count else None,
            "jitter_ms": _pct(self.jitter, (50, 99)) if self.jitter.count else None,
            "loss": None if self.loss is None else round(self.loss, 6),
            "approximate": approximate,
        }


# ================================================================================= modules


_DROP_KEYS = ("malformed_dropped", "overload_rejected", "udp_seam_dropped_in", "udp_seam_dropped_out", "udp_send_errors")


def module_metrics(stats: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per module: ``msgs_in``, ``msgs_out``, ``drops``, ``queue_length``, ``service_time_ms``
    (``None`` when the module does not report it) from ``ImsDeployment.stats()``."""
    out: dict[str, dict[str, Any]] = {}
    for name, s in stats.items():
        if not isinstance(s, Mapping):
            continue
        msgs_in = s.get("udp_datagrams_in", s.get("rx_request", 0) + s.get("rx_response", 0))
        drops = sum(int(s.get(k, 0) or 0) for k in _DROP_KEYS)
        drops += sum(int(v) for k, v in s.items() if k.endswith("_dropped") and k not in _DROP_KEYS and isinstance(v, int))
        capacity = s.get("capacity") if isinstance(s.get("capacity"), Mapping) else {}
        queue = s.get("queue_length", capacity.get("queue_length"))
        service = s.get("service_time_ms")
        admitted = s.get("admitted", capacity.get("admitted"))
        busy = s.get("busy_time", capacity.get("busy_time"))
        if service is None and admitted and busy is not None:
            service = busy / admitted * 1000
        out[name] = {
            "msgs_in": int(msgs_in or 0),
            "msgs_out": int(s.get("udp_datagrams_out", s.get("tx", 0)) or 0),
            "drops": drops,
            "queue_length": queue,
            "service_time_ms": None if service is None else round(float(service), 3),
        }
    return out


def retransmissions(stats: Mapping[str, Mapping[str, Any]]) -> int:
    """Retransmissions the modules counted (keys with ``retransmi`` or ``resent`` in them)."""
    return sum(
        int(v)
        for s in stats.values()
        if isinstance(s, Mapping)
        for k, v in s.items()
        if isinstance(v, int) and ("retransmi" in k or "resent" in k)
    )

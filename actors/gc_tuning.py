"""Garbage-collector settings for long-running emulations.

The emulator's steady state holds many acyclic, short-lived objects: every
finished SIP transaction lingers up to 64*T1 = 32 s (RFC 3261 Timers D, J, L,
M) with its parsed messages, so a busy process carries hundreds of thousands
of live objects. CPython's collections of the middle and old generations walk
all of them and, in our measurements, free nothing: a run at 100 calls/s with
CPython's default policy spaced out (thresholds 50000/20/100) still paused the
event loop 246 ms in one middle-generation collection that collected 0 objects,
and every young collection in that run collected 0 as well. Those pauses are
what p99 call set-up latency showed (a 0.5 s stall every ~10 s).

``tune_for_latency()`` therefore

* moves everything alive at start-up out of the collector's view (``gc.freeze()``);
* keeps young collections (cycles made and dropped within one young period, such
  as an exception's traceback, are still freed), every ``YOUNG_THRESHOLD``
  allocations;
* never collects the middle and old generations automatically: objects that
  survive a young collection are left to reference counting, which frees acyclic
  objects at once.

What this gives up is the collection of cycles that outlive one young period.
``collect_old()`` collects them on demand and says how many there were, so a run
can report whether the assumption held (``run.py serve`` does, at its end).
Call ``tune_for_latency()`` once the actors are up, from any thread.
"""

from __future__ import annotations

import gc
import time

__all__ = ["NEVER", "YOUNG_THRESHOLD", "collect_old", "tune_for_latency"]

YOUNG_THRESHOLD = 20_000  # allocations between young collections (CPython's default: 700)
NEVER = 2**31 - 1  # the largest threshold CPython accepts: collections that do not happen


def tune_for_latency() -> tuple[int, int, int]:
    """Freeze what start-up built, keep young collections, stop automatic older ones;
    returns the previous thresholds (``gc.set_threshold(*previous)`` restores them)."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, NEVER, NEVER)
    return previous


def collect_old() -> dict[str, float | int]:
    """A full collection of everything but the frozen start-up heap, now: how many
    unreachable objects it found (cycles reference counting could not free) and how
    long the pause was."""
    start = time.perf_counter()
    collected = gc.collect()
    return {"collected": collected, "pause_s": round(time.perf_counter() - start, 4)}

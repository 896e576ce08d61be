"""``actors.gc_tuning``: young cycles are still freed; older generations are left alone."""

from __future__ import annotations

import gc
import weakref

import pytest

from actors.gc_tuning import NEVER, YOUNG_THRESHOLD, collect_old, tune_for_latency


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def make_cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def tuned():
    previous = tune_for_latency()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*previous)


def test_thresholds_and_frozen_start_up_heap(tuned) -> None:
    assert gc.get_threshold() == (YOUNG_THRESHOLD, NEVER, NEVER)
    assert gc.get_freeze_count() > 0
    assert gc.isenabled()


def test_a_young_cycle_is_freed_by_a_young_collection(tuned) -> None:
    ref = make_cycle()
    assert ref() is not None
    gc.collect(0)
    assert ref() is None


def test_a_cycle_that_survived_to_an_older_generation_waits_for_collect_old(tuned) -> None:
    holder = [Node(), Node()]
    holder[0].other, holder[1].other = holder[1], holder[0]
    ref = weakref.ref(holder[0])
    gc.collect(0)  # survives: still referenced, promoted to the middle generation
    holder.clear()  # now unreachable, but only a middle/old collection would see it
    gc.collect(0)
    assert ref() is not None
    report = collect_old()
    assert ref() is None
    assert report["collected"] >= 2
    assert report["pause_s"] >= 0

"""SipTimers (RFC 3261 Table 4) and the DeadlineQueue behind the layer's single deadline."""

import math

import pytest

from actors.sip.timers import DeadlineQueue, SipTimers, fire_due


def test_defaults_are_rfc_3261_table_4_for_udp():
    t = SipTimers()
    assert (t.t1, t.t2, t.t4) == (0.5, 4.0, 5.0)
    assert (t.a, t.e, t.g) == (0.5, 0.5, 0.5)
    assert (t.b, t.f, t.h, t.j) == (32.0, 32.0, 32.0, 32.0)
    assert t.d == 32.0
    assert (t.i, t.k) == (5.0, 5.0)
    assert (t.l, t.m) == (32.0, 32.0)  # RFC 6026


def test_derived_values_follow_configured_base_values():
    t = SipTimers(t1=0.25, t2=2.0, t4=3.0, timer_d=40.0)
    assert (t.a, t.b, t.e, t.f, t.g, t.h, t.j, t.l, t.m) == (
        0.25, 16.0, 0.25, 16.0, 0.25, 16.0, 16.0, 16.0, 16.0)
    assert (t.d, t.i, t.k) == (40.0, 3.0, 3.0)


def test_backoff_rules():
    t = SipTimers()
    assert [t.next_a(x) for x in (0.5, 16.0)] == [1.0, 32.0]  # no cap
    assert [t.next_capped(x) for x in (0.5, 1.0, 2.0, 4.0)] == [1.0, 2.0, 4.0, 4.0]


@pytest.mark.parametrize("field", ["t1", "t2", "t4", "timer_d"])
@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "1", None, True])
def test_validation_names_the_field(field, bad):
    with pytest.raises(ValueError, match=field):
        SipTimers(**{field: bad})


def test_t2_smaller_than_t1_is_rejected():
    with pytest.raises(ValueError, match="t2"):
        SipTimers(t1=2.0, t2=1.0)


def test_frozen():
    with pytest.raises(AttributeError):
        SipTimers().t1 = 1.0  # type: ignore[misc]


def test_deadline_queue_earliest_update_and_due():
    q: DeadlineQueue[str] = DeadlineQueue()
    assert q.earliest() is None
    q.update("a", 5.0)
    q.update("b", 3.0)
    q.update("c", 4.0)
    assert q.earliest() == 3.0
    q.update("b", 6.0)  # moved later: the stale 3.0 entry must not count
    assert q.earliest() == 4.0
    q.update("c", None)  # no timer any more
    assert q.earliest() == 5.0
    assert q.due(4.9) == []
    assert q.due(6.0) == ["a", "b"]
    assert q.earliest() is None and len(q) == 0


def test_fire_due_prefers_a_due_timeout_and_ignores_early_calls():
    fired = []
    timers = {"A": 0.5, "B": 32.0}
    fire_due(timers, 0.4, frozenset({"A"}), lambda n, t: fired.append(n))
    assert fired == [] and timers == {"A": 0.5, "B": 32.0}
    fire_due(timers, 40.0, frozenset({"A"}), lambda n, t: fired.append(n))
    assert fired[0] == "B"


def test_deadline_queue_due_skips_stale_entries_at_or_before_now():
    q: DeadlineQueue[str] = DeadlineQueue()
    q.update("a", 1.0)
    q.update("a", 3.0)  # the 1.0 entry is stale and due: it must not fire "a"
    q.update("b", 2.0)
    q.update("c", 0.5)
    q.discard("c")
    assert q.due(2.5) == ["b"]
    assert q.earliest() == 3.0 and len(q) == 1
    q.update("a", 2.8)  # moved earlier again: fires once, at the earlier time
    assert q.due(2.9) == ["a"]
    assert q.due(10.0) == [] and q.earliest() is None


def test_fire_due_with_one_timer_fires_it_once_late_and_keeps_its_re_arm():
    timers = {"A": 1.0}
    fired = []

    def fire(name: str, now: float) -> None:
        fired.append((name, now))
        timers["A"] = now + 1.0  # a retransmission timer re-arms from now

    fire_due(timers, 0.9, frozenset({"A"}), fire)
    assert fired == [] and timers == {"A": 1.0}
    fire_due(timers, 5.0, frozenset({"A"}), fire)  # four intervals late: fires once
    assert fired == [("A", 5.0)] and timers == {"A": 6.0}

"""HopSupervisor on a virtual clock: Fig. 8 timings exactly, answered requests, the
coexistence with the transaction layer's own retransmissions."""

from __future__ import annotations

import pytest

from actors.clock import VirtualClock
from actors.sip.failure_detector import Failover, FailureDetectorConfig, HopFailed
from nf_modules.hop_supervisor import HopSupervisor

HOP = ("127.0.0.1", 5062)
OTHER = ("127.0.0.1", 5065)


class Harness:
    def __init__(self, config: FailureDetectorConfig = FailureDetectorConfig(),
                 retransmissions: dict | None = None) -> None:
        self.clock = VirtualClock()
        self.sent: list[tuple[float, bytes, tuple]] = []
        self.events: list[tuple[float, object]] = []
        self.answered: set = set()
        self.retransmissions = retransmissions or {}
        self.supervisor = HopSupervisor(
            self.clock, lambda data, hop: self.sent.append((self.clock.now(), data, hop)),
            lambda events: self.events.extend((self.clock.now(), e) for e in events),
            config=config, answered=lambda key: key in self.answered,
            retransmission_due=lambda key: self.retransmissions.get(key),
        )


def test_unanswered_request_is_retried_from_1_0_every_200_ms_and_fails_at_2_0() -> None:
    h = Harness()
    h.supervisor.watch("tx1", b"INVITE", HOP)
    assert h.sent == []  # the transaction layer sent it; the detector does not send it again
    h.clock.advance(5.0)
    assert [round(t, 9) for t, _, _ in h.sent] == [1.0, 1.2, 1.4, 1.6, 1.8]
    assert all(data == b"INVITE" and hop == HOP for _, data, hop in h.sent)
    kinds = [(t, type(e)) for t, e in h.events]
    assert kinds == [(2.0, HopFailed), (2.0, Failover)]
    failover = h.events[1][1]
    assert failover.forwarded_at == 0.0 and failover.key == "tx1" and failover.resends == 5
    assert h.supervisor.is_failed(HOP) and not h.supervisor.is_failed(OTHER)


def test_any_response_even_100_trying_means_alive() -> None:
    h = Harness()
    h.supervisor.watch("tx1", b"INVITE", HOP)
    h.clock.advance(0.3)
    h.answered.add("tx1")  # a 100 Trying moved the transaction out of Calling
    h.clock.advance(10.0)
    assert h.sent == [] and h.events == []
    assert h.supervisor.monitor.in_flight() == 0


def test_a_hop_answering_during_fast_retry_is_not_failed() -> None:
    h = Harness()
    h.supervisor.watch("tx1", b"INVITE", HOP)
    h.clock.advance(1.3)
    h.answered.add("tx1")
    h.clock.advance(5.0)
    assert [round(t, 9) for t, _, _ in h.sent] == [1.0, 1.2]
    assert h.events == []


def test_other_requests_to_the_failed_hop_fail_over_at_once() -> None:
    h = Harness()
    h.supervisor.watch("tx1", b"A", HOP)
    h.clock.advance(0.5)
    h.supervisor.watch("tx2", b"B", HOP)
    h.supervisor.watch("tx3", b"C", OTHER)
    h.answered.add("tx3")
    h.clock.advance(1.5)  # t = 2.0
    failovers = [e for _, e in h.events if isinstance(e, Failover)]
    assert [(f.key, f.reason) for f in failovers] == [("tx1", "timer_b"), ("tx2", "hop_failed")]
    assert failovers[1].forwarded_at == 0.5
    assert [e for _, e in h.events if isinstance(e, HopFailed)][0].at == 2.0


def test_a_fast_retry_the_transaction_retransmission_covers_is_not_sent_twice() -> None:
    # RFC 3261 Timer A: retransmissions at 0.5 and 1.5; at 1.4 the next one is 0.1 away.
    h = Harness(retransmissions={"tx1": 1.5})
    h.supervisor.watch("tx1", b"INVITE", HOP)
    h.clock.advance(1.45)
    h.retransmissions["tx1"] = 3.5  # the layer retransmitted at 1.5
    h.clock.advance(3.0)
    assert [round(t, 9) for t, _, _ in h.sent] == [1.0, 1.2, 1.6, 1.8]
    assert h.supervisor.stats["fast_retry_covered"] == 1
    assert [type(e) for _, e in h.events] == [HopFailed, Failover]


def test_timers_are_configurable() -> None:
    h = Harness(FailureDetectorConfig(timer_a=0.5, retry_interval=0.1, timer_b=0.3))
    h.supervisor.watch("tx1", b"X", HOP)
    h.clock.advance(2.0)
    assert [round(t, 9) for t, _, _ in h.sent] == [0.5, 0.6, 0.7]
    assert h.events[0][0] == pytest.approx(0.8)


def test_one_timer_armed_and_closed_supervisor_is_silent() -> None:
    h = Harness()
    for i in range(50):
        h.supervisor.watch(f"tx{i}", b"X", HOP)
        h.answered.add(f"tx{i}")
    assert h.clock.pending() == 1
    h.supervisor.watch("late", b"X", HOP)
    h.supervisor.close()
    h.clock.advance(5.0)
    assert h.sent == [] and h.events == []


def test_answered_requests_behind_the_due_one_are_dropped_at_the_same_wake_up() -> None:
    # A request every 5 ms, each answered 2 ms later: one wake-up per Timer A period, not one
    # per request, and every request counted as watched.
    h = Harness()
    wake_ups = 0
    fired = h.supervisor._fired  # noqa: SLF001

    def counting() -> None:
        nonlocal wake_ups
        wake_ups += 1
        fired()

    h.supervisor._fired = counting  # type: ignore[method-assign]  # noqa: SLF001
    for i in range(1000):
        h.supervisor.watch(i, b"X", HOP)
        h.clock.advance(0.002)
        h.answered.add(i)
        h.clock.advance(0.003)
    h.clock.advance(3.0)
    assert h.supervisor.stats["watched"] == 1000 and h.supervisor.in_flight() == 0
    assert wake_ups <= 10 and h.sent == [] and h.events == []


def test_an_unanswered_request_behind_answered_ones_keeps_its_exact_timer_a() -> None:
    h = Harness()
    h.supervisor.watch("a", b"A", HOP)
    h.clock.advance(0.3)
    h.supervisor.watch("b", b"B", OTHER)  # never answered
    h.clock.advance(0.3)
    h.supervisor.watch("c", b"C", OTHER)
    h.answered.update({"a", "c"})  # "c" is dropped early at a's Timer A; "b" must wait
    h.clock.advance(5.0)
    assert [(round(t, 9), data) for t, data, _ in h.sent] == [
        (1.3, b"B"), (1.5, b"B"), (1.7, b"B"), (1.9, b"B"), (2.1, b"B")]
    assert [(round(t, 9), type(e)) for t, e in h.events] == [(2.3, HopFailed), (2.3, Failover)]
    assert h.supervisor.stats["watched"] == 3

"""Only the dead hop is declared failed (virtual clock, exact deadlines).

(a) Any datagram from a hop after a watched request went there proves the hop alive for that
request (``heard``), at Timer A, at each fast retry and at Timer B. (b) A module whose detector
enters fast retry for a request it forwarded tells its upstream it is alive (``on_fast_retry``),
so the upstream, whose Timer A started a few ms earlier, does not declare it failed.
"""

from __future__ import annotations

from actors.clock import VirtualClock
from actors.sip.failure_detector import Failover, FailureDetectorConfig, HopFailed, HopMonitor
from nf_modules.hop_supervisor import HopSupervisor

PCSCF = ("127.0.0.1", 5060)
SC = ("127.0.0.1", 5061)
ILC = ("127.0.0.1", 5062)
LATENCY = 0.001  # one-way delivery on the emulated link
SC_DELAY = 0.003  # the SC forwards what it received this much later


class Node:
    """One module's supervisor on the shared virtual clock, with what it heard and sent."""

    def __init__(self, clock: VirtualClock, name: str, on_fast_retry=None) -> None:
        self.clock = clock
        self.name = name
        self.heard: dict[tuple, float] = {}
        self.answered: set = set()
        self.sent: list[tuple[float, bytes, tuple]] = []
        self.events: list[tuple[float, object]] = []
        self.fast_retry_entered: list[tuple[float, object]] = []
        self.on_fast_retry = on_fast_retry
        self.supervisor = HopSupervisor(
            clock, lambda data, hop: self.sent.append((clock.now(), data, hop)),
            lambda events: self.events.extend((clock.now(), e) for e in events),
            answered=lambda key: key in self.answered, heard=self.heard.get,
            on_fast_retry=self._entered,
        )

    def _entered(self, key: object) -> None:
        self.fast_retry_entered.append((self.clock.now(), key))
        if self.on_fast_retry is not None:
            self.on_fast_retry(key)

    def receive_from(self, hop: tuple, answers: object | None = None) -> None:
        """A datagram from ``hop`` arrives now (a response to ``answers`` if given)."""
        self.heard[hop] = self.clock.now()
        if answers is not None:
            self.answered.add(answers)


def _failed(node: Node) -> list[tuple[float, tuple]]:
    return [(round(t, 9), e.next_hop) for t, e in node.events if isinstance(e, HopFailed)]


def test_a_hop_heard_after_the_request_went_there_is_alive_at_timer_a() -> None:
    clock = VirtualClock()
    node = Node(clock, "pcscf")
    node.supervisor.watch("bye", b"BYE", SC)
    clock.advance(0.4)
    node.receive_from(SC)  # e.g. its 100 Trying for another call's INVITE
    clock.advance(5.0)
    assert node.sent == [] and node.events == [] and node.fast_retry_entered == []
    assert node.supervisor.stats["alive_by_traffic"] == 1
    assert node.supervisor.in_flight() == 0


def test_a_hop_heard_only_before_the_request_went_there_is_still_declared_failed() -> None:
    clock = VirtualClock()
    node = Node(clock, "pcscf")
    clock.advance(0.5)
    node.receive_from(SC)
    node.supervisor.watch("bye", b"BYE", SC)  # same instant: not *after* it was sent
    clock.advance(5.0)
    assert [round(t, 9) for t, _, _ in node.sent] == [1.5, 1.7, 1.9, 2.1, 2.3]
    assert _failed(node) == [(2.5, SC)]


def test_a_hop_heard_during_fast_retry_is_not_declared_failed_at_timer_b() -> None:
    clock = VirtualClock()
    node = Node(clock, "pcscf")
    node.supervisor.watch("bye", b"BYE", SC)
    clock.advance(1.5)
    node.receive_from(SC)
    clock.advance(5.0)
    # resent at 1.0, 1.2, 1.4; at the 1.6 slot the hop had been heard: closed as alive
    assert [round(t, 9) for t, _, _ in node.sent] == [1.0, 1.2, 1.4]
    assert node.events == [] and node.supervisor.in_flight() == 0


def test_heard_at_timer_b_itself_is_alive() -> None:
    clock = VirtualClock()
    node = Node(clock, "pcscf")
    node.supervisor.watch("bye", b"BYE", SC)
    clock.advance(1.9)
    node.receive_from(SC)
    clock.advance(1.0)
    assert node.events == []


def test_fast_retry_entry_is_reported_once_per_unanswered_request_before_its_first_resend() -> None:
    clock = VirtualClock()
    order: list[str] = []
    node = Node(clock, "sc", on_fast_retry=lambda key: order.append(f"entered {key}"))
    node.supervisor._send = lambda data, hop: order.append(f"resend {data.decode()}")  # noqa: SLF001
    node.supervisor.watch("a", b"A", ILC)
    node.supervisor.watch("b", b"B", ILC)
    node.answered.add("b")
    clock.advance(1.1)
    assert node.fast_retry_entered == [(1.0, "a")]
    assert order == ["entered a", "resend A"]
    clock.advance(5.0)
    assert node.fast_retry_entered == [(1.0, "a")]
    assert _failed(node) == [(2.0, ILC)]


def test_monitor_closes_a_due_detector_whose_hop_was_heard_after_it_was_forwarded() -> None:
    monitor = HopMonitor(config=FailureDetectorConfig())
    monitor.forward("k", b"X", SC, 0.0, send=False)
    heard = {SC: 0.7}
    monitor.handle_timer(1.0, heard=heard.get)
    assert monitor.in_flight() == 0 and monitor.events() == [] and monitor.datagrams_to_send() == []
    monitor.forward("j", b"Y", SC, 1.0, send=False)
    monitor.handle_timer(2.0, heard=heard.get)  # heard at 0.7, before it was forwarded
    assert monitor.detector("j").resends == 1
    monitor.handle_timer(3.0, heard=heard.get)
    assert [type(e) for e in monitor.events()] == [HopFailed, Failover]


def _chain(clock: VirtualClock) -> tuple[Node, Node]:
    """P-CSCF -> SC -> ILC (dead): a non-INVITE the P-CSCF forwarded to the SC, which the SC
    forwarded to the ILC. The SC answers its upstream 100 Trying when its own detector enters
    fast retry (what ``ImsModule._tell_upstream_alive`` does), delivered after ``LATENCY``."""
    pcscf = Node(clock, "pcscf")

    def tell_upstream(key: object) -> None:
        clock.call_later(LATENCY, pcscf.receive_from, SC, "bye@pcscf")

    sc = Node(clock, "sc", on_fast_retry=tell_upstream)
    return pcscf, sc


def test_only_the_dead_hop_is_declared_failed_when_the_middle_module_is_detecting() -> None:
    clock = VirtualClock()
    pcscf, sc = _chain(clock)
    pcscf.supervisor.watch("bye@pcscf", b"BYE", SC)
    clock.call_later(SC_DELAY, sc.supervisor.watch, "bye@sc", b"BYE", ILC)
    clock.advance(10.0)
    assert _failed(sc) == [(2.003, ILC)]
    assert _failed(pcscf) == [] and pcscf.events == []
    # the P-CSCF entered fast retry at 1.0 (its Timer A is first) and stopped at its next
    # deadline after the SC's 100 Trying arrived at 1.004
    assert [round(t, 9) for t, _, _ in pcscf.sent] == [1.0]
    assert sc.fast_retry_entered == [(1.003, "bye@sc")]
    assert [round(t, 9) for t, _, _ in sc.sent] == [1.003, 1.203, 1.403, 1.603, 1.803]


def test_without_the_alive_signal_the_live_middle_module_would_be_declared_failed() -> None:
    """The defect the alive signal fixes: the P-CSCF's Timer B (2.0) comes before the SC's
    (2.003), so a silent SC is declared failed although only the ILC is dead."""
    clock = VirtualClock()
    pcscf = Node(clock, "pcscf")
    sc = Node(clock, "sc")
    pcscf.supervisor.watch("bye@pcscf", b"BYE", SC)
    clock.call_later(SC_DELAY, sc.supervisor.watch, "bye@sc", b"BYE", ILC)
    clock.advance(10.0)
    assert _failed(pcscf) == [(2.0, SC)]
    assert _failed(sc) == [(2.003, ILC)]


def test_a_dead_middle_module_is_still_declared_failed_by_its_upstream() -> None:
    clock = VirtualClock()
    pcscf, _ = _chain(clock)
    pcscf.supervisor.watch("bye@pcscf", b"BYE", SC)  # the SC never receives it
    clock.advance(10.0)
    assert _failed(pcscf) == [(2.0, SC)]


def test_requests_whose_hop_was_heard_are_dropped_before_their_timer_a_all_the_same() -> None:
    clock = VirtualClock()
    node = Node(clock, "pcscf")
    node.supervisor.watch("first", b"A", SC)
    clock.advance(0.5)
    node.supervisor.watch("second", b"B", SC)
    clock.advance(0.1)
    node.receive_from(SC)  # after both were sent: both alive
    clock.advance(0.5)  # t = 1.1: the first's Timer A fired, the second's (1.5) not yet
    assert node.supervisor.in_flight() == 0
    assert node.supervisor.stats["alive_by_traffic"] == 2 and node.supervisor.stats["watched"] == 2
    clock.advance(5.0)
    assert node.sent == [] and node.events == []

"""The seams behind the fault kinds, sans-IO: exact delays, counts and composition."""

from __future__ import annotations

import pytest

from actors.impairment import LinkImpairment
from actors.transport import INBOUND, OUTBOUND, SeamStack
from faults.kinds import FAULT_KINDS, make_fault
from faults.netem import netem_args, netem_args_for
from faults.seams import DeadHopTap, ServiceTimeSeam

A = ("127.0.0.1", 5000)
B = ("127.0.0.1", 5001)


def test_slowness_is_a_queue_not_a_flat_delay() -> None:
    seam = ServiceTimeSeam(0.1, queue_limit=3)
    # A burst of four at t = 10: served one after another, the fourth does not fit.
    delays = [seam.inbound(b"x", A, 10.0) for _ in range(4)]
    assert [d[0][0] for d in delays[:3]] == pytest.approx([0.1, 0.2, 0.3])
    assert delays[3] == []
    # Once the server is idle again, one datagram waits just its own service time.
    assert seam.inbound(b"y", A, 20.0)[0][0] == pytest.approx(0.1)
    assert seam.outbound(b"z", B, 20.0) == [(0.0, b"z", B)]
    assert seam.stats()["served"] == 4 and seam.stats()["dropped"] == 1
    with pytest.raises(ValueError):
        ServiceTimeSeam(0)


def test_dead_hop_tap_reports_the_first_datagram_to_a_dead_address_once() -> None:
    seen: list[tuple[str, tuple, bytes]] = []
    tap = DeadHopTap([B], "sc", lambda name, addr, data: seen.append((name, addr, data)))
    assert tap.outbound(b"to A", A, 1.0) == [(0.0, b"to A", A)]
    assert tap.outbound(b"INVITE 1", B, 1.1) == [(0.0, b"INVITE 1", B)]
    assert tap.outbound(b"INVITE 2", B, 1.2) == [(0.0, b"INVITE 2", B)]
    assert tap.inbound(b"from B", B, 1.3) == [(0.0, b"from B", B)]
    assert seen == [("sc", B, b"INVITE 1")]
    assert tap.count == 2


def test_seam_stack_adds_delays_and_taps_see_the_wire() -> None:
    wire: list[bytes] = []
    tap = DeadHopTap([B], "t", lambda n, a, d: wire.append(d))
    stack = SeamStack([LinkImpairment(delay=0.05, peers={B}), LinkImpairment(delay=0.02)], [tap])
    assert stack.outbound(b"m", B, 0.0) == [(pytest.approx(0.07), b"m", B)]
    assert wire == [b"m"]
    assert stack.outbound(b"n", A, 0.0) == [(pytest.approx(0.02), b"n", A)]
    # A dropping layer stops the datagram before the tap.
    cut = DeadHopTap([B], "t2", lambda n, a, d: wire.append(b"cut"))
    stack2 = SeamStack([LinkImpairment(drop=1.0)], [cut])
    assert stack2.outbound(b"m", B, 0.0) == [] and cut.count == 0


def test_seam_stack_inbound_runs_from_the_socket_side() -> None:
    order: list[str] = []

    class Mark:
        def __init__(self, name: str) -> None:
            self.name = name

        def outbound(self, data, addr, now):
            order.append(f"out:{self.name}")
            return [(0.0, data, addr)]

        def inbound(self, data, addr, now):
            order.append(f"in:{self.name}")
            return [(0.0, data, addr)]

    stack = SeamStack([Mark("app"), Mark("mid")], [Mark("tap")])
    stack.outbound(b"x", A, 0.0)
    stack.inbound(b"y", A, 0.0)
    assert order == ["out:app", "out:mid", "out:tap", "in:tap", "in:mid", "in:app"]


def test_seam_stack_releases_held_datagrams_through_the_later_layers() -> None:
    reorder = LinkImpairment(reorder=1.0, reorder_max_hold=0.1)
    stack = SeamStack([reorder, LinkImpairment(delay=0.01)])
    assert stack.outbound(b"1", B, 0.0) == []
    assert stack.next_deadline() == pytest.approx(0.1)
    released = stack.poll(0.1)
    assert released == [(OUTBOUND, pytest.approx(0.01), b"1", B)]
    assert stack.next_deadline() is None
    # Inbound: the held datagram then goes through the layers nearer the app (none here).
    stack_in = SeamStack([LinkImpairment(delay=0.01), LinkImpairment(reorder=1.0, reorder_max_hold=0.1)])
    assert stack_in.inbound(b"2", A, 0.0) == []
    assert stack_in.poll(0.2) == [(INBOUND, pytest.approx(0.01), b"2", A)]


def test_every_kind_is_registered_with_its_target_scopes() -> None:
    assert set(FAULT_KINDS) == {"crash", "hang", "partition", "delay", "loss", "duplicate", "reorder",
                                "corrupt", "slowness", "overload"}
    assert FAULT_KINDS["partition"].scopes == ("link",)
    assert "link" in FAULT_KINDS["delay"].scopes and "instance" in FAULT_KINDS["delay"].scopes
    assert FAULT_KINDS["crash"].scopes == ("instance",)
    with pytest.raises(ValueError, match="exactly one target"):
        make_fault("hang")
    fault = make_fault("delay", link=("a", "b"), settings={"delay": 0.02})
    assert fault.describe() == {"kind": "delay", "link": ["a", "b"], "direction": "both", "delay": 0.02,
                                "jitter": 0.0, "distribution": "uniform"}


def test_netem_arguments_match_the_seam_settings() -> None:
    assert netem_args(delay=0.02, jitter=0.005, distribution="normal", loss=0.05) == [
        "delay", "20.000ms", "5.000ms", "distribution", "normal", "loss", "5.0000%"]
    assert netem_args(reorder=0.25) == ["delay", "10.000ms", "reorder", "25.0000%"]
    assert netem_args() == []
    assert netem_args_for(make_fault("partition", link=("a", "b"))) == ["loss", "100.0000%"]
    assert netem_args_for(make_fault("corrupt", link=("a", "b"), settings={"probability": 0.01})) == [
        "corrupt", "1.0000%"]
    with pytest.raises(ValueError, match="not a link fault"):
        netem_args_for(make_fault("crash", instance="x"))

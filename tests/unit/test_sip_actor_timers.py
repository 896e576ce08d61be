"""SipActor's one wake-up for its transaction layer: armed ``timer_slack`` after the earliest
deadline, coalescing timers due close together, never moved later. On a VirtualClock with a
recording endpoint in place of the socket (the actor is constructed, not started)."""

from __future__ import annotations

from typing import Any

import pytest

from actors import Runtime
from actors.clock import VirtualClock
from actors.sip.message import SipMessage
from actors.sip.timers import SipTimers
from actors.sip_actor import SipActor

PEER = ("127.0.0.1", 5099)


class RecordingEndpoint:
    """Stands in for the UdpEndpoint: keeps what the actor sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def send(self, data: bytes, destination: Any) -> None:
        self.sent.append((data, destination))


def invite(branch: str) -> SipMessage:
    return SipMessage.request("INVITE", "sip:bob@ims.example", [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:5098;branch=z9hG4bK{branch}"),
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@ims.example>;tag=1"),
        ("To", "<sip:bob@ims.example>"),
        ("Call-ID", f"{branch}@test"),
        ("CSeq", "1 INVITE"),
    ])


def trying_for(request: SipMessage) -> bytes:
    return bytes(request.make_response(100))


def final_for(request: SipMessage, status: int) -> bytes:
    return bytes(request.make_response(status, to_tag="2"))


async def make_actor(**kwargs: Any) -> tuple[SipActor, VirtualClock, RecordingEndpoint]:
    Runtime.attach()
    actor = SipActor("t", **kwargs)
    clock = VirtualClock()
    endpoint = RecordingEndpoint()
    actor.clock = clock
    actor.endpoint = endpoint  # type: ignore[assignment]
    actor.address = ("127.0.0.1", 5098)
    return actor, clock, endpoint


async def test_default_slack_is_t1_over_25_and_the_wake_up_comes_that_late() -> None:
    actor, clock, endpoint = await make_actor()
    assert actor.timer_slack == pytest.approx(0.02)
    actor.send_request(invite("a"), PEER)
    assert len(endpoint.sent) == 1
    assert clock.next_deadline() == pytest.approx(0.52)  # Timer A (T1) + slack
    clock.advance_to(0.519)
    assert len(endpoint.sent) == 1
    clock.advance_to(0.52)
    assert len(endpoint.sent) == 2  # the retransmission, 20 ms late
    assert clock.next_deadline() == pytest.approx(0.52 + 1.0 + 0.02)  # A doubled, from the fire


async def test_slack_scales_with_t1_and_can_be_zero() -> None:
    actor, _, _ = await make_actor(timers=SipTimers(t1=0.01, t2=0.04))
    assert actor.timer_slack == pytest.approx(0.0004)
    actor, clock, endpoint = await make_actor(timer_slack=0)
    actor.send_request(invite("a"), PEER)
    assert clock.next_deadline() == 0.5


@pytest.mark.parametrize("bad", [-0.1, float("inf"), float("nan"), "1", True])
async def test_bad_slack_is_refused_naming_the_field(bad: Any) -> None:
    with pytest.raises(ValueError, match="timer_slack"):
        await make_actor(timer_slack=bad)


async def test_timers_due_within_the_slack_fire_in_one_wake_up() -> None:
    actor, clock, endpoint = await make_actor()
    actor.send_request(invite("a"), PEER)
    clock.advance_to(0.01)
    actor.send_request(invite("b"), PEER)  # its Timer A is due at 0.51, inside a's slack
    assert clock.pending() == 1  # still the one wake-up, at 0.52
    assert clock.advance_to(0.52) == 1  # one callback ...
    assert len(endpoint.sent) == 4  # ... resent both INVITEs
    assert clock.pending() == 1


async def test_a_later_deadline_does_not_move_the_wake_up() -> None:
    actor, clock, endpoint = await make_actor()
    request = invite("a")
    actor.send_request(request, PEER)
    actor._datagram_received(trying_for(request), PEER)  # Proceeding: Timers A and B stop
    assert actor.layer.get_timer() is None
    assert clock.next_deadline() == pytest.approx(0.52)  # not cancelled ...
    assert clock.advance_to(0.52) == 1  # ... it fires early, finds nothing due,
    assert len(endpoint.sent) == 1 and clock.pending() == 0  # and arms nothing
    actor._datagram_received(final_for(request, 200), PEER)  # Accepted: Timer M, 32 s
    assert clock.next_deadline() == pytest.approx(32.54)
    actor._datagram_received(final_for(invite("b"), 200), PEER)  # a stray 2xx: nothing changes
    assert clock.pending() == 1
    clock.advance_to(32.55)
    assert len(actor.layer) == 0 and clock.pending() == 0


async def test_an_earlier_deadline_re_arms_the_wake_up() -> None:
    actor, clock, _ = await make_actor()
    request = invite("a")
    actor.send_request(request, PEER)
    actor._datagram_received(final_for(request, 200), PEER)  # Timer M at 32.0
    clock.advance_to(0.52)  # the early wake-up: now armed for Timer M at 32.02
    assert clock.next_deadline() == pytest.approx(32.02)
    actor.send_request(invite("b"), PEER)  # its Timer A at 1.02 comes first
    assert clock.next_deadline() == pytest.approx(1.04)
    assert clock.pending() == 1  # the 32.02 wake-up was cancelled, not left behind

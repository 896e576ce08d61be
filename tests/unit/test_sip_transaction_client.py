"""Client transactions, driven by a hand-held clock: exact deadlines, exact retransmissions.

Packets are "lost" by simply not delivering them; responses are delivered as parsed bytes, as
an actor would.
"""

import pytest

from actors.sip.message import SipMessage
from actors.sip.timers import SipTimers
from actors.sip.transaction import (
    ResponseReceived,
    TimedOut,
    TransactionMatchError,
    TransactionStateError,
    TransactionTerminated,
    TransportFailed,
)
from actors.sip.transaction_client import (
    InviteClientState,
    InviteClientTransaction,
    NonInviteClientState,
    NonInviteClientTransaction,
    build_cancel,
)

DEST = ("10.0.0.2", 5060)
BRANCH = "z9hG4bKclient1"


def make_request(method="INVITE", branch=BRANCH, extra_vias=(), routes=(), cseq=1):
    headers = [("Via", f"SIP/2.0/UDP 10.0.0.1:5060;branch={branch}")]
    headers += [("Via", v) for v in extra_vias]
    headers.append(("Max-Forwards", "70"))
    headers += [("Route", r) for r in routes]
    headers += [
        ("From", '"Alice" <sip:alice@ims.example>;tag=a73kszlfl'),
        ("To", "<sip:bob@ims.example>"),
        ("Call-ID", "call-1@10.0.0.1"),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", "<sip:alice@10.0.0.1:5060>"),
    ]
    return SipMessage.request(method, "sip:bob@ims.example", headers=headers)


def response_to(request, status, to_tag="b0b"):
    """What arrives from the network: encoded, then parsed."""
    resp = request.make_response(status, to_tag=to_tag if status > 100 else None)
    return SipMessage.parse(bytes(resp))


def run_timers(machine, until):
    """Step the clock to each deadline up to ``until``; return [(time, datagrams, events)]."""
    log = []
    while (t := machine.get_timer()) is not None and t <= until:
        machine.handle_timer(t)
        log.append((t, machine.datagrams_to_send(), machine.events()))
    return log


# ------------------------------------------------------------------------------------ INVITE


def test_invite_sends_at_once_and_arms_a_and_b():
    req = make_request()
    tx = InviteClientTransaction(req, DEST, 0.0)
    assert tx.datagrams_to_send() == [(bytes(req), DEST)]
    assert tx.state is InviteClientState.CALLING
    assert tx.timer_deadlines() == {"A": 0.5, "B": 32.0}
    assert tx.get_timer() == 0.5
    assert tx.events() == []


def test_invite_timer_a_doubles_without_cap_then_timer_b_times_out():
    req = make_request()
    tx = InviteClientTransaction(req, DEST, 0.0)
    first = tx.datagrams_to_send()
    log = run_timers(tx, 100.0)
    fire_times = [t for t, _, _ in log]
    assert fire_times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 32.0]
    for t, datagrams, events in log[:-1]:
        assert datagrams == first, t  # the very same bytes, to the same place
        assert events == []
    t, datagrams, events = log[-1]
    assert datagrams == []  # Timer B: no retransmission, a timeout
    assert [type(e) for e in events] == [TimedOut, TransactionTerminated]
    assert events[0].timer == "B" and events[0].transaction is tx
    assert tx.state is InviteClientState.TERMINATED and tx.get_timer() is None
    assert 1 + sum(len(d) for _, d, _ in log) == 7  # seven sends in all


def test_invite_timer_a_with_custom_t1():
    tx = InviteClientTransaction(make_request(), DEST, 10.0, timers=SipTimers(t1=0.25, t2=4.0))
    tx.datagrams_to_send()
    log = run_timers(tx, 100.0)
    assert [t for t, _, _ in log] == [10.25, 10.75, 11.75, 13.75, 17.75, 25.75, 26.0]
    assert [len(d) for _, d, _ in log] == [1, 1, 1, 1, 1, 1, 0]


def test_provisional_stops_retransmissions_and_timer_b():
    req = make_request()
    tx = InviteClientTransaction(req, DEST, 0.0)
    tx.datagrams_to_send()
    tx.handle_timer(0.5)
    assert len(tx.datagrams_to_send()) == 1
    ringing = response_to(req, 180)
    tx.receive_response(ringing, 0.6)
    assert tx.state is InviteClientState.PROCEEDING
    assert tx.get_timer() is None  # neither A nor B runs in Proceeding
    [ev] = tx.events()
    assert isinstance(ev, ResponseReceived) and ev.response is ringing
    tx.handle_timer(100.0)
    assert tx.datagrams_to_send() == [] and tx.state is InviteClientState.PROCEEDING
    tx.receive_response(response_to(req, 183), 1.0)
    assert [e.response.status for e in tx.events()] == [183]


def test_ack_for_486_is_built_byte_for_byte():
    req = make_request(
        extra_vias=["SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKupstream"],
        routes=["<sip:scscf.ims.example;lr>", "<sip:as.ims.example;lr>"])
    tx = InviteClientTransaction(req, DEST, 0.0)
    tx.datagrams_to_send()
    busy = response_to(req, 486, to_tag="314159")
    tx.receive_response(busy, 0.2)
    assert tx.state is InviteClientState.COMPLETED
    [ev] = [e for e in tx.events() if isinstance(e, ResponseReceived)]
    assert ev.response.status == 486
    [(data, dest)] = tx.datagrams_to_send()
    assert dest == DEST
    assert data == (
        b"ACK sip:bob@ims.example SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKclient1\r\n"
        b"Max-Forwards: 70\r\n"
        b"Route: <sip:scscf.ims.example;lr>\r\n"
        b"Route: <sip:as.ims.example;lr>\r\n"
        b'From: "Alice" <sip:alice@ims.example>;tag=a73kszlfl\r\n'
        b"To: <sip:bob@ims.example>;tag=314159\r\n"
        b"Call-ID: call-1@10.0.0.1\r\n"
        b"CSeq: 1 ACK\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )
    assert tx.ack is not None and bytes(tx.ack) == data


def test_retransmitted_final_response_resends_ack_but_not_to_tu():
    req = make_request()
    tx = InviteClientTransaction(req, DEST, 0.0)
    tx.datagrams_to_send()
    busy = response_to(req, 486)
    tx.receive_response(busy, 0.2)
    [(ack, _)] = tx.datagrams_to_send()
    tx.events()
    for t in (0.7, 1.7, 3.7):
        tx.receive_response(response_to(req, 486), t)
        assert tx.datagrams_to_send() == [(ack, DEST)]
        assert tx.events() == []
    assert tx.state is InviteClientState.COMPLETED


def test_timer_d_terminates_completed():
    req = make_request()
    tx = InviteClientTransaction(req, DEST, 0.0)
    tx.receive_response(response_to(req, 180), 0.1)
    tx.receive_response(response_to(req, 603), 0.7)
    assert tx.timer_deadlines() == {"D": 32.7}
    tx.events()
    tx.handle_timer(32.6)  # early: nothing
    assert tx.state is InviteClientState.COMPLETED
    tx.handle_timer(32.7)
    assert tx.state is InviteClientState.TERMINATED
    assert [type(e) for e in tx.events()] == [TransactionTerminated]


def test_timer_d_is_configurable():
    req = make_request()
    tx = InviteClientTransaction(req, DEST, 0.0, timers=SipTimers(timer_d=40.0))
    tx.receive_response(response_to(req, 486), 1.0)
    assert tx.timer_deadlines() == {"D": 41.0}


def test_2xx_goes_to_tu_without_ack_and_accepted_absorbs_until_timer_m():
    req = make_request()
    tx = InviteClientTransaction(req, DEST, 0.0)
    tx.datagrams_to_send()
    ok = response_to(req, 200)
    tx.receive_response(ok, 2.0)
    assert tx.state is InviteClientState.ACCEPTED
    assert tx.datagrams_to_send() == []  # the ACK for a 2xx is the TU's job
    assert [e.response for e in tx.events()] == [ok]
    assert tx.timer_deadlines() == {"M": 34.0}
    # RFC 6026: 2xx retransmissions still match the transaction and reach the TU
    again = response_to(req, 200)
    tx.receive_response(again, 2.5)
    assert [e.response for e in tx.events()] == [again]
    # other responses are absorbed
    tx.receive_response(response_to(req, 486), 3.0)
    assert tx.events() == [] and tx.datagrams_to_send() == []
    assert tx.ignored == 1
    tx.handle_timer(34.0)
    assert tx.state is InviteClientState.TERMINATED
    assert [type(e) for e in tx.events()] == [TransactionTerminated]


def test_late_timer_fire_retransmits_once_and_reschedules_from_now():
    req = make_request()
    tx = InviteClientTransaction(req, DEST, 0.0)
    tx.datagrams_to_send()
    tx.handle_timer(10.0)  # A was due at 0.5: the loop was busy
    assert len(tx.datagrams_to_send()) == 1  # one retransmission, not a burst of four
    assert tx.timer_deadlines() == {"A": 11.0, "B": 32.0}
    tx.handle_timer(10.5)  # early call
    assert tx.datagrams_to_send() == []
    tx.handle_timer(40.0)  # both A (11.0) and B (32.0) due: B wins, no retransmission
    assert tx.datagrams_to_send() == []
    assert [type(e) for e in tx.events()] == [TimedOut, TransactionTerminated]


def test_response_of_another_transaction_is_rejected():
    req = make_request()
    tx = InviteClientTransaction(req, DEST, 0.0)
    other = response_to(make_request(branch="z9hG4bKother"), 200)
    assert not tx.matches(other)
    with pytest.raises(TransactionMatchError):
        tx.receive_response(other, 0.1)
    cancel_resp = response_to(build_cancel(req), 200)  # same branch, CSeq method CANCEL
    assert not tx.matches(cancel_resp)


def test_make_cancel_only_in_proceeding():
    req = make_request(routes=["<sip:p.ims.example;lr>"])
    tx = InviteClientTransaction(req, DEST, 0.0)
    with pytest.raises(TransactionStateError, match="CALLING"):
        tx.make_cancel()
    tx.receive_response(response_to(req, 100), 0.1)
    cancel = tx.make_cancel()
    assert cancel.method == "CANCEL" and cancel.uri == req.uri
    assert cancel.branch == req.branch and cancel.cseq == (1, "CANCEL")
    assert cancel.get("To") == req.get("To") and cancel.get_all("Route") == req.get_all("Route")
    assert cancel.get_all("Via") == [req.get("Via")]
    tx.receive_response(response_to(req, 487), 0.2)
    with pytest.raises(TransactionStateError, match="COMPLETED"):
        tx.make_cancel()


def test_transport_error_terminates():
    tx = InviteClientTransaction(make_request(), DEST, 0.0)
    tx.transport_error(0.1)
    assert tx.state is InviteClientState.TERMINATED and tx.get_timer() is None
    assert [type(e) for e in tx.events()] == [TransportFailed, TransactionTerminated]


def test_invite_constructor_checks():
    with pytest.raises(ValueError, match="INVITE"):
        InviteClientTransaction(make_request("OPTIONS"), DEST, 0.0)
    no_branch = make_request()
    no_branch.set("Via", "SIP/2.0/UDP 10.0.0.1:5060")
    with pytest.raises(ValueError, match="branch"):
        InviteClientTransaction(no_branch, DEST, 0.0)
    with pytest.raises(TypeError):
        InviteClientTransaction(make_request(), DEST, 0.0, timers=0.5)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------- non-INVITE


def test_non_invite_timer_e_caps_at_t2_then_timer_f():
    req = make_request("OPTIONS")
    tx = NonInviteClientTransaction(req, DEST, 0.0)
    first = tx.datagrams_to_send()
    assert first == [(bytes(req), DEST)]
    assert tx.timer_deadlines() == {"E": 0.5, "F": 32.0}
    log = run_timers(tx, 100.0)
    assert [t for t, _, _ in log] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5,
                                      32.0]
    assert all(d == first for _, d, _ in log[:-1])
    assert log[-1][1] == []
    assert [type(e) for e in log[-1][2]] == [TimedOut, TransactionTerminated]
    assert log[-1][2][0].timer == "F"
    assert tx.state is NonInviteClientState.TERMINATED
    assert 1 + sum(len(d) for _, d, _ in log) == 11


def test_provisional_moves_timer_e_to_t2_intervals():
    req = make_request("REGISTER")
    tx = NonInviteClientTransaction(req, DEST, 0.0)
    tx.datagrams_to_send()
    tx.handle_timer(0.5)
    tx.datagrams_to_send()
    tx.receive_response(response_to(req, 100), 0.7)
    assert tx.state is NonInviteClientState.PROCEEDING
    assert tx.timer_deadlines() == {"E": 1.5, "F": 32.0}  # the pending E is not moved
    log = run_timers(tx, 100.0)
    assert [t for t, _, _ in log] == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5, 32.0]
    assert [len(d) for _, d, _ in log] == [1] * 8 + [0]


def test_non_invite_final_response_then_timer_k():
    req = make_request("BYE")
    tx = NonInviteClientTransaction(req, DEST, 0.0)
    tx.datagrams_to_send()
    ok = response_to(req, 200)
    tx.receive_response(ok, 0.3)
    assert tx.state is NonInviteClientState.COMPLETED
    assert [e.response for e in tx.events()] == [ok]
    assert tx.timer_deadlines() == {"K": 5.3}
    tx.receive_response(response_to(req, 200), 0.4)  # retransmission: absorbed
    assert tx.events() == [] and tx.datagrams_to_send() == []
    tx.handle_timer(5.3)
    assert tx.state is NonInviteClientState.TERMINATED
    assert [type(e) for e in tx.events()] == [TransactionTerminated]


def test_non_invite_lost_request_is_recovered_by_retransmission():
    req = make_request("MESSAGE")
    tx = NonInviteClientTransaction(req, DEST, 0.0)
    tx.datagrams_to_send()  # lost on the way
    tx.handle_timer(0.5)
    [(data, _)] = tx.datagrams_to_send()  # this one arrives
    delivered = SipMessage.parse(data)
    tx.receive_response(response_to(delivered, 202), 0.55)
    assert tx.state is NonInviteClientState.COMPLETED
    assert [e.response.status for e in tx.events()] == [202]


def test_non_invite_refuses_invite_and_ack():
    for method in ("INVITE", "ACK"):
        with pytest.raises(ValueError, match=method):
            NonInviteClientTransaction(make_request(method), DEST, 0.0)


# ------------------------------------------------------------------------------- properties

from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=100, deadline=None)
@given(t1=st.sampled_from([0.0625, 0.125, 0.25, 0.5, 1.0]),
       t2_factor=st.sampled_from([1, 2, 4, 8, 16]),
       provisional_at=st.one_of(st.none(), st.floats(0.0, 40.0)))
def test_non_invite_retransmissions_respect_t2_and_timer_f(t1, t2_factor, provisional_at):
    timers = SipTimers(t1=t1, t2=t1 * t2_factor)
    req = make_request("OPTIONS")
    tx = NonInviteClientTransaction(req, DEST, 0.0, timers=timers)
    tx.datagrams_to_send()
    sends = [0.0]
    delivered = False
    while (t := tx.get_timer()) is not None:
        if not delivered and provisional_at is not None and provisional_at < t:
            tx.receive_response(response_to(req, 100), provisional_at)
            delivered = True
            continue
        tx.handle_timer(t)
        sends += [t] * len(tx.datagrams_to_send())
    gaps = [y - x for x, y in zip(sends, sends[1:])]
    assert all(g <= timers.t2 for g in gaps)
    assert gaps[:1] == [t1] or len(sends) == 1
    assert all(s < 64 * t1 for s in sends)
    timeouts = [e for e in tx.events() if isinstance(e, TimedOut)]
    assert [e.timer for e in timeouts] == ["F"]

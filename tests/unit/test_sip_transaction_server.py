"""Server transactions, driven by a hand-held clock: exact deadlines, exact retransmissions."""

import pytest

from actors.sip.message import SipMessage
from actors.sip.timers import SipTimers
from actors.sip.transaction import (
    AckReceived,
    TimedOut,
    TransactionMatchError,
    TransactionStateError,
    TransactionTerminated,
)
from actors.sip.transaction_server import (
    InviteServerState,
    InviteServerTransaction,
    NonInviteServerState,
    NonInviteServerTransaction,
)

SRC = ("10.0.0.1", 5060)
BRANCH = "z9hG4bKserver1"


def make_request(method="INVITE", branch=BRANCH, cseq=1):
    req = SipMessage.request(method, "sip:bob@ims.example", headers=[
        ("Via", f"SIP/2.0/UDP 10.0.0.1:5060;branch={branch}"),
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@ims.example>;tag=a1"),
        ("To", "<sip:bob@ims.example>"),
        ("Call-ID", "call-2@10.0.0.1"),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", "<sip:alice@10.0.0.1>"),
    ])
    return SipMessage.parse(bytes(req))


def make_ack(invite, to_tag="b1", branch=BRANCH):
    ack = SipMessage.request("ACK", invite.uri, headers=[
        ("Via", f"SIP/2.0/UDP 10.0.0.1:5060;branch={branch}"),
        ("Max-Forwards", "70"),
        ("From", invite.get("From")),
        ("To", f"{invite.get('To')};tag={to_tag}"),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq[0]} ACK"),
    ])
    return SipMessage.parse(bytes(ack))


def run_timers(machine, until):
    log = []
    while (t := machine.get_timer()) is not None and t <= until:
        machine.handle_timer(t)
        log.append((t, machine.datagrams_to_send(), machine.events()))
    return log


# ------------------------------------------------------------------------------------ INVITE


def test_100_trying_after_200_ms_when_tu_is_silent():
    inv = make_request()
    tx = InviteServerTransaction(inv, SRC, 0.0)
    assert tx.state is InviteServerState.PROCEEDING
    assert tx.datagrams_to_send() == []
    assert tx.timer_deadlines() == {"Trying": 0.2}
    tx.handle_timer(0.19)
    assert tx.datagrams_to_send() == []
    tx.handle_timer(0.2)
    [(data, dest)] = tx.datagrams_to_send()
    assert dest == SRC
    trying = SipMessage.parse(data)
    assert (trying.status, trying.reason) == (100, "Trying")
    assert trying.to_tag is None and trying.branch == BRANCH and trying.cseq == (1, "INVITE")
    assert tx.get_timer() is None


def test_no_100_when_tu_answers_within_200_ms():
    inv = make_request()
    tx = InviteServerTransaction(inv, SRC, 0.0)
    tx.send_response(inv.make_response(180, to_tag="b1"), 0.1)
    [(data, _)] = tx.datagrams_to_send()
    assert SipMessage.parse(data).status == 180
    assert tx.get_timer() is None
    tx.handle_timer(0.2)
    assert tx.datagrams_to_send() == []


def test_trying_delay_zero_none_and_explicit():
    inv = make_request()
    now = InviteServerTransaction(inv, SRC, 0.0, trying_delay=0)
    assert [SipMessage.parse(d).status for d, _ in now.datagrams_to_send()] == [100]
    never = InviteServerTransaction(inv, SRC, 0.0, trying_delay=None)
    assert never.get_timer() is None and never.datagrams_to_send() == []
    never.send_trying(0.05)
    assert [SipMessage.parse(d).status for d, _ in never.datagrams_to_send()] == [100]
    never.send_trying(0.06)  # a provisional was sent already: nothing more
    assert never.datagrams_to_send() == []
    with pytest.raises(ValueError, match="trying_delay"):
        InviteServerTransaction(inv, SRC, 0.0, trying_delay=-0.1)


def test_invite_retransmission_resends_last_provisional():
    inv = make_request()
    tx = InviteServerTransaction(inv, SRC, 0.0, trying_delay=None)
    tx.receive_request(make_request(), 0.5)  # nothing sent yet: nothing to resend
    assert tx.datagrams_to_send() == []
    tx.send_response(inv.make_response(100), 0.6)
    tx.send_response(inv.make_response(180, to_tag="b1"), 0.7)
    [_, (ringing, _)] = tx.datagrams_to_send()
    tx.receive_request(make_request(), 1.5)
    assert tx.datagrams_to_send() == [(ringing, SRC)]
    assert tx.events() == []


def test_timer_g_retransmits_final_until_timer_h():
    inv = make_request()
    tx = InviteServerTransaction(inv, SRC, 0.0)
    busy = inv.make_response(486, to_tag="b1")
    tx.send_response(busy, 0.0)
    [(data, _)] = tx.datagrams_to_send()
    assert data == bytes(busy)
    assert tx.state is InviteServerState.COMPLETED
    assert tx.timer_deadlines() == {"G": 0.5, "H": 32.0}
    log = run_timers(tx, 100.0)
    assert [t for t, _, _ in log] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5,
                                      32.0]
    assert all(d == [(data, SRC)] for _, d, _ in log[:-1])
    t, d, events = log[-1]
    assert d == [] and [type(e) for e in events] == [TimedOut, TransactionTerminated]
    assert events[0].timer == "H"
    assert tx.state is InviteServerState.TERMINATED


def test_ack_confirms_and_timer_i_terminates():
    inv = make_request()
    tx = InviteServerTransaction(inv, SRC, 0.0)
    tx.send_response(inv.make_response(486, to_tag="b1"), 0.1)
    tx.datagrams_to_send()
    tx.handle_timer(0.6)  # G
    assert len(tx.datagrams_to_send()) == 1
    tx.receive_request(make_ack(inv), 0.8)
    assert tx.state is InviteServerState.CONFIRMED
    assert tx.timer_deadlines() == {"I": 5.8}  # G and H stopped
    tx.receive_request(make_ack(inv), 0.9)  # ACK retransmission: absorbed
    tx.receive_request(make_request(), 1.0)  # INVITE retransmission: absorbed
    assert tx.datagrams_to_send() == [] and tx.events() == []
    tx.handle_timer(5.8)
    assert tx.state is InviteServerState.TERMINATED
    assert [type(e) for e in tx.events()] == [TransactionTerminated]


def test_invite_retransmission_in_completed_resends_final():
    inv = make_request()
    tx = InviteServerTransaction(inv, SRC, 0.0)
    tx.send_response(inv.make_response(404, to_tag="b1"), 0.1)
    [(final, _)] = tx.datagrams_to_send()
    tx.receive_request(make_request(), 0.3)
    assert tx.datagrams_to_send() == [(final, SRC)]
    assert tx.timer_deadlines()["G"] == 0.6  # the request does not move Timer G


def test_2xx_accepted_absorbs_invites_passes_ack_and_ends_on_timer_l():
    inv = make_request()
    tx = InviteServerTransaction(inv, SRC, 0.0)
    ok = inv.make_response(200, to_tag="b1")
    ok.set("Contact", "<sip:bob@10.0.0.2>")
    tx.send_response(ok, 1.0)
    assert tx.state is InviteServerState.ACCEPTED
    assert tx.timer_deadlines() == {"L": 33.0}
    [(data, _)] = tx.datagrams_to_send()
    tx.receive_request(make_request(), 1.2)
    assert tx.datagrams_to_send() == []  # the TU, not the transaction, retransmits 2xx
    tx.send_response(ok, 1.5)  # TU retransmission goes through
    assert tx.datagrams_to_send() == [(data, SRC)]
    ack = make_ack(inv)
    tx.receive_request(ack, 1.6)
    [ev] = tx.events()
    assert isinstance(ev, AckReceived) and ev.request is ack and ev.transaction is tx
    tx.handle_timer(33.0)
    assert tx.state is InviteServerState.TERMINATED


def test_tu_cannot_send_after_a_final_non_2xx():
    inv = make_request()
    tx = InviteServerTransaction(inv, SRC, 0.0)
    tx.send_response(inv.make_response(486, to_tag="b1"), 0.1)
    with pytest.raises(TransactionStateError, match="COMPLETED"):
        tx.send_response(inv.make_response(200, to_tag="b1"), 0.2)
    with pytest.raises(TransactionStateError):
        tx.send_response(inv.make_response(180, to_tag="b1"), 0.2)
    with pytest.raises(TransactionStateError):
        tx.send_trying(0.2)
    assert tx.state is InviteServerState.COMPLETED


def test_response_of_another_request_is_rejected():
    inv = make_request()
    tx = InviteServerTransaction(inv, SRC, 0.0)
    other = make_request(branch="z9hG4bKother")
    with pytest.raises(TransactionMatchError):
        tx.send_response(other.make_response(200, to_tag="x"), 0.1)
    with pytest.raises(TransactionMatchError):
        tx.receive_request(other, 0.1)


def test_late_timer_g_fires_once():
    inv = make_request()
    tx = InviteServerTransaction(inv, SRC, 0.0, timers=SipTimers(t1=0.5, t2=4.0))
    tx.send_response(inv.make_response(500), 0.0)
    tx.datagrams_to_send()
    tx.handle_timer(5.0)  # G was due at 0.5
    assert len(tx.datagrams_to_send()) == 1
    assert tx.timer_deadlines() == {"G": 6.0, "H": 32.0}
    tx.handle_timer(50.0)  # G and H due: H wins
    assert tx.datagrams_to_send() == []
    assert [type(e) for e in tx.events()] == [TimedOut, TransactionTerminated]


# -------------------------------------------------------------------------------- non-INVITE


def test_non_invite_server_absorbs_then_resends_final_until_timer_j():
    req = make_request("OPTIONS")
    tx = NonInviteServerTransaction(req, SRC, 0.0)
    assert tx.state is NonInviteServerState.TRYING and tx.get_timer() is None
    tx.receive_request(make_request("OPTIONS"), 0.5)  # Trying: absorbed
    assert tx.datagrams_to_send() == []
    ok = req.make_response(200, to_tag="b1")
    tx.send_response(ok, 0.7)
    assert tx.state is NonInviteServerState.COMPLETED
    assert tx.timer_deadlines() == {"J": 32.7}
    [(final, _)] = tx.datagrams_to_send()
    assert final == bytes(ok)
    tx.receive_request(make_request("OPTIONS"), 1.5)
    assert tx.datagrams_to_send() == [(final, SRC)]
    with pytest.raises(TransactionStateError, match="COMPLETED"):
        tx.send_response(req.make_response(500), 2.0)
    tx.handle_timer(32.7)
    assert tx.state is NonInviteServerState.TERMINATED
    assert [type(e) for e in tx.events()] == [TransactionTerminated]


def test_non_invite_server_proceeding_resends_provisional():
    req = make_request("REGISTER")
    tx = NonInviteServerTransaction(req, SRC, 0.0)
    tx.send_response(req.make_response(100), 0.1)
    assert tx.state is NonInviteServerState.PROCEEDING
    [(trying, _)] = tx.datagrams_to_send()
    tx.receive_request(make_request("REGISTER"), 0.5)
    assert tx.datagrams_to_send() == [(trying, SRC)]
    tx.send_response(req.make_response(401, to_tag="b1"), 0.6)
    assert tx.state is NonInviteServerState.COMPLETED


def test_non_invite_server_refuses_invite():
    with pytest.raises(ValueError):
        NonInviteServerTransaction(make_request("INVITE"), SRC, 0.0)


def test_response_cseq_is_compared_parsed_when_the_raw_value_differs():
    inv = make_request()
    tx = InviteServerTransaction(inv, SRC, 0.0, trying_delay=None)
    spaced = inv.make_response(180, to_tag="b1")
    spaced.set("CSeq", "1  INVITE")  # another spelling of the same CSeq: still ours
    tx.send_response(spaced, 0.1)
    assert tx.state is InviteServerState.PROCEEDING
    for cseq in ("2 INVITE", "1 BYE"):
        wrong = inv.make_response(200, to_tag="b1")
        wrong.set("CSeq", cseq)
        with pytest.raises(TransactionMatchError):
            tx.send_response(wrong, 0.2)
    missing = inv.make_response(200, to_tag="b1")
    missing.remove("CSeq")
    with pytest.raises(TransactionMatchError):
        tx.send_response(missing, 0.2)
    assert tx.state is InviteServerState.PROCEEDING


def test_immediate_trying_is_the_make_response_bytes_and_last_response_is_built_on_demand():
    invite = make_request()
    tx = InviteServerTransaction(invite, SRC, 0.0, trying_delay=0)
    ((data, dest),) = tx.datagrams_to_send()
    assert dest == SRC
    assert data == bytes(invite.make_response(100, "Trying"))
    assert tx.last_response == invite.make_response(100, "Trying")
    assert tx.last_response is tx.last_response  # built once
    tx.receive_request(make_request(), 0.1)  # an INVITE retransmission: the same bytes again
    assert tx.datagrams_to_send() == [(data, SRC)]
    ringing = invite.make_response(180, to_tag="b1")
    tx.send_response(ringing, 0.2)
    assert tx.last_response is ringing


def test_last_response_is_none_before_any_response():
    tx = InviteServerTransaction(make_request(), SRC, 0.0, trying_delay=None)
    assert tx.last_response is None
    assert tx.datagrams_to_send() == []

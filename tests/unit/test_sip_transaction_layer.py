"""TransactionLayer: matching, creation, removal, the single earliest deadline, and two layers
talking over a lossy hand-delivered "network"."""

import pytest

from actors.sip.message import SipMessage
from actors.sip.transaction import (
    AckReceived,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionTerminated,
)
from actors.sip.transaction_client import (
    InviteClientState,
    InviteClientTransaction,
    NonInviteClientTransaction,
    build_cancel,
)
from actors.sip.transaction_layer import TransactionLayer
from actors.sip.transaction_server import (
    InviteServerState,
    InviteServerTransaction,
    NonInviteServerTransaction,
)

UAC = ("10.0.0.1", 5060)
UAS = ("10.0.0.2", 5060)


def make_request(method="INVITE", branch="z9hG4bKb1", sent_by="10.0.0.1:5060", cseq=1):
    return SipMessage.request(method, "sip:bob@ims.example", headers=[
        ("Via", f"SIP/2.0/UDP {sent_by};branch={branch}"),
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@ims.example>;tag=a1"),
        ("To", "<sip:bob@ims.example>"),
        ("Call-ID", "call-3@10.0.0.1"),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", "<sip:alice@10.0.0.1>"),
    ])


def wire(msg):
    return SipMessage.parse(bytes(msg))


def names(events):
    return [e.name for e in events]


def test_response_matching_by_branch_and_cseq_method():
    layer = TransactionLayer()
    inv = make_request("INVITE", branch="z9hG4bKinv")
    opt = make_request("OPTIONS", branch="z9hG4bKopt")
    tx_inv = layer.send_request(inv, UAS, 0.0)
    tx_opt = layer.send_request(opt, UAS, 0.0)
    assert isinstance(tx_inv, InviteClientTransaction)
    assert isinstance(tx_opt, NonInviteClientTransaction)
    assert [d for d, _ in layer.datagrams_to_send()] == [bytes(inv), bytes(opt)]

    layer.receive(wire(opt.make_response(200, to_tag="x")), UAS, 0.1)
    [ev] = layer.events()
    assert isinstance(ev, ResponseReceived) and ev.transaction is tx_opt
    assert tx_inv.state is InviteClientState.CALLING

    # same branch as the INVITE but CSeq method CANCEL: no CANCEL transaction runs
    cancel_ok = wire(build_cancel(inv).make_response(200, to_tag="x"))
    layer.receive(cancel_ok, UAS, 0.2)
    [ev] = layer.events()
    assert isinstance(ev, StrayResponse) and ev.response is cancel_ok and ev.source == UAS

    layer.receive(wire(inv.make_response(180, to_tag="x")), UAS, 0.3)
    [ev] = layer.events()
    assert isinstance(ev, ResponseReceived) and ev.transaction is tx_inv


def test_new_request_creates_server_transaction_and_retransmissions_are_absorbed():
    layer = TransactionLayer(trying_delay=None)
    inv = wire(make_request())
    layer.receive(inv, UAC, 0.0)
    [ev] = layer.events()
    assert isinstance(ev, RequestReceived) and ev.request is inv and ev.source == UAC
    tx = ev.transaction
    assert isinstance(tx, InviteServerTransaction) and tx.destination == UAC
    assert layer.find_server(inv) is tx
    layer.receive(wire(make_request()), UAC, 0.5)
    assert layer.events() == []  # a retransmission does not reach the TU
    assert len(layer) == 1


def test_same_branch_different_sent_by_is_another_transaction():
    layer = TransactionLayer(trying_delay=None)
    layer.receive(wire(make_request(sent_by="10.0.0.1:5060")), UAC, 0.0)
    layer.receive(wire(make_request(sent_by="10.0.0.7:5060")), ("10.0.0.7", 5060), 0.0)
    assert names(layer.events()) == ["request", "request"]
    assert len(layer) == 2


def test_cancel_gets_its_own_transaction_and_finds_the_invite():
    layer = TransactionLayer(trying_delay=None)
    inv = make_request()
    layer.receive(wire(inv), UAC, 0.0)
    [ev_inv] = layer.events()
    cancel = wire(build_cancel(inv))
    layer.receive(cancel, UAC, 1.0)
    [ev_cancel] = layer.events()
    assert isinstance(ev_cancel, RequestReceived)
    assert isinstance(ev_cancel.transaction, NonInviteServerTransaction)
    assert ev_cancel.transaction is not ev_inv.transaction
    assert layer.find_invite_for_cancel(cancel) is ev_inv.transaction
    # the TU answers both, by calling the transactions directly
    ev_cancel.transaction.send_response(cancel.make_response(200, to_tag="b1"), 1.0)
    ev_inv.transaction.send_response(wire(inv).make_response(487, to_tag="b1"), 1.0)
    assert [SipMessage.parse(d).status for d, _ in layer.datagrams_to_send()] == [200, 487]
    assert layer.get_timer() == 1.5  # Timer G of the INVITE transaction


def test_ack_for_non_2xx_matches_invite_transaction_ack_for_2xx_goes_to_tu():
    layer = TransactionLayer(trying_delay=None)
    inv = make_request()
    layer.receive(wire(inv), UAC, 0.0)
    tx = layer.events()[0].transaction
    tx.send_response(wire(inv).make_response(486, to_tag="b1"), 0.1)
    ack = make_request("ACK")  # same branch as the INVITE: the non-2xx ACK
    ack.set("To", "<sip:bob@ims.example>;tag=b1")
    layer.receive(wire(ack), UAC, 0.2)
    assert tx.state is InviteServerState.CONFIRMED
    assert layer.events() == []
    ack2 = make_request("ACK", branch="z9hG4bKnewbranch", cseq=7)
    layer.receive(wire(ack2), UAC, 0.3)
    [ev] = layer.events()
    assert isinstance(ev, AckReceived) and ev.transaction is None and ev.source == UAC


def test_terminated_transactions_are_removed_and_deadline_is_the_earliest():
    layer = TransactionLayer()
    layer.send_request(make_request("OPTIONS", branch="z9hG4bKo1"), UAS, 0.0)
    layer.send_request(make_request("INVITE", branch="z9hG4bKi1"), UAS, 0.25)
    assert layer.get_timer() == 0.5
    layer.handle_timer(0.5)  # OPTIONS's E
    assert len(layer.datagrams_to_send()) == 3
    assert layer.get_timer() == 0.75  # INVITE's A
    layer.receive(wire(make_request("OPTIONS", branch="z9hG4bKo1").make_response(200)), UAS,
                  0.6)
    assert layer.get_timer() == 0.75
    layer.handle_timer(5.6)  # K of OPTIONS and A of INVITE are due
    assert len(layer) == 1
    assert names(layer.events()) == ["response", "terminated"]
    # only the INVITE left: run it out
    while (t := layer.get_timer()) is not None:
        layer.handle_timer(t)
    assert len(layer) == 0
    evs = layer.events()
    assert names(evs) == ["timeout", "terminated"] and evs[0].timer == "B"


def test_send_request_refuses_ack_and_duplicate_branch():
    layer = TransactionLayer()
    with pytest.raises(ValueError, match="ACK"):
        layer.send_request(make_request("ACK"), UAS, 0.0)
    layer.send_request(make_request("INVITE"), UAS, 0.0)
    with pytest.raises(ValueError, match="already running"):
        layer.send_request(make_request("INVITE"), UAS, 0.1)


def test_send_stateless_goes_to_the_same_outbox_in_order():
    layer = TransactionLayer()
    layer.send_request(make_request("OPTIONS"), UAS, 0.0)
    ack = make_request("ACK", branch="z9hG4bKack")
    layer.send_stateless(ack, UAS)
    assert [SipMessage.parse(d).method for d, _ in layer.datagrams_to_send()] == [
        "OPTIONS", "ACK"]


class Net:
    """Delivers what one layer sends to the other, except what the test chooses to lose."""

    def __init__(self):
        self.uac = TransactionLayer()
        self.uas = TransactionLayer()
        self.sent = {"uac": [], "uas": []}

    def pump(self, now, lose=lambda who, msg: False):
        moved = True
        while moved:
            moved = False
            for who, src, dst, addr in (("uac", self.uac, self.uas, UAC),
                                        ("uas", self.uas, self.uac, UAS)):
                for data, _ in src.datagrams_to_send():
                    msg = SipMessage.parse(data)
                    self.sent[who].append((now, msg))
                    moved = True
                    if not lose(who, msg):
                        dst.receive(msg, addr, now)

    def next_time(self):
        times = [t for t in (self.uac.get_timer(), self.uas.get_timer()) if t is not None]
        return min(times) if times else None

    def step(self, now, lose=lambda who, msg: False):
        self.uac.handle_timer(now)
        self.uas.handle_timer(now)
        self.pump(now, lose)


def test_lossy_invite_486_exchange_end_to_end():
    net = Net()
    inv = make_request()
    net.uac.send_request(inv, UAS, 0.0)
    net.pump(0.0, lose=lambda who, m: True)  # the first INVITE is lost
    assert net.uas.events() == []
    net.step(0.5)  # Timer A: the retransmission arrives
    [req_ev] = net.uas.events()
    assert isinstance(req_ev, RequestReceived) and req_ev.request.method == "INVITE"
    server = req_ev.transaction
    net.step(0.7)  # the server's 100 Trying (200 ms after it saw the INVITE)
    assert [e.response.status for e in net.uac.events()] == [100]
    server.send_response(req_ev.request.make_response(486, to_tag="b1"), 1.0)
    # the 486 and then the ACK are lost once each
    lost = {"486": 0, "ACK": 0}

    def lose_once(who, msg):
        key = "ACK" if msg.is_request and msg.method == "ACK" else str(msg.status)
        if key in lost and lost[key] == 0:
            lost[key] += 1
            return True
        return False

    net.pump(1.0, lose_once)
    assert net.uac.events() == []
    net.step(1.5, lose_once)  # Timer G: the 486 again; the UAC ACKs, that ACK is lost
    assert [e.response.status for e in net.uac.events()] == [486]
    assert server.state is InviteServerState.COMPLETED
    net.step(2.5, lose_once)  # Timer G again: the UAC resends its ACK, which arrives
    assert server.state is InviteServerState.CONFIRMED
    acks = [(t, m) for t, m in net.sent["uac"] if m.method == "ACK"]
    assert [t for t, _ in acks] == [1.5, 2.5]
    assert bytes(acks[0][1]) == bytes(acks[1][1])
    assert net.uas.events() == []  # the non-2xx ACK never reaches the TU
    # everything winds down: server Timer I at 7.5, client Timer D at 33.5
    while (t := net.next_time()) is not None:
        net.step(t)
    assert len(net.uac) == 0 and len(net.uas) == 0
    assert names(net.uas.events()) == ["terminated"]
    assert [type(e) for e in net.uac.events()] == [TransactionTerminated]  # no TimedOut


def test_2xx_ack_is_end_to_end_and_late_2xx_is_stray():
    net = Net()
    inv = make_request()
    client = net.uac.send_request(inv, UAS, 0.0)
    net.pump(0.0)
    [req_ev] = net.uas.events()
    ok = req_ev.request.make_response(200, to_tag="b1")
    ok.set("Contact", "<sip:bob@10.0.0.2>")
    req_ev.transaction.send_response(ok, 0.1)
    net.pump(0.1)
    [resp_ev] = net.uac.events()
    assert resp_ev.response.status == 200 and client.state is InviteClientState.ACCEPTED
    # the UAC core acknowledges the 2xx itself, with a new branch, outside any transaction
    ack = make_request("ACK", branch="z9hG4bKack2xx")
    ack.set("To", resp_ev.response.get("To"))
    net.uac.send_stateless(ack, UAS)
    net.pump(0.2)
    [ack_ev] = net.uas.events()
    assert isinstance(ack_ev, AckReceived) and ack_ev.transaction is None
    # the UAS core retransmits its 2xx through the Accepted transaction; the UAC still matches it
    req_ev.transaction.send_response(ok, 0.6)
    net.pump(0.6)
    assert [e.response.status for e in net.uac.events()] == [200]
    net.step(32.1)  # Timer L (server) and Timer M (client): both gone
    assert len(net.uac) == 0 and len(net.uas) == 0
    net.uac.events(), net.uas.events()
    net.uac.receive(wire(ok), UAS, 33.0)
    [stray] = net.uac.events()
    assert isinstance(stray, StrayResponse) and stray.response.status == 200


def test_sent_by_matching_is_case_insensitive_and_fills_the_default_port():
    layer = TransactionLayer(trying_delay=None)
    layer.receive(wire(make_request("OPTIONS", branch="z9hG4bKsb", sent_by="UAC.example")),
                  UAC, 0.0)
    server = layer.events()[0].transaction
    for sent_by in ("uac.EXAMPLE", "uac.example:5060"):  # the same sent-by: a retransmission
        layer.receive(wire(make_request("OPTIONS", branch="z9hG4bKsb", sent_by=sent_by)),
                      UAC, 0.1)
        assert layer.events() == []
    assert server.key[2] == ("uac.example", 5060)
    tls = make_request("OPTIONS", branch="z9hG4bKsb")
    tls.set("Via", "SIP/2.0/TLS uac.example;branch=z9hG4bKsb")
    assert layer.find_server(wire(tls)) is None  # TLS defaults to 5061: another transaction


def test_unchanged_deadlines_are_not_queued_again_and_stale_ones_are_skipped():
    layer = TransactionLayer(trying_delay=None)
    tx = layer.send_request(make_request("INVITE", branch="z9hG4bKq1"), UAS, 0.0)
    assert layer.get_timer() == 0.5 and len(layer._heap) == 1
    ok = tx.request.make_response(180, to_tag="b1")
    layer.receive(wire(ok), UAS, 0.1)  # Proceeding: no timer at all
    layer.receive(wire(ok), UAS, 0.2)  # a retransmitted 180: nothing queued again
    assert layer.get_timer() is None and layer._heap == []
    layer.receive(wire(tx.request.make_response(200, to_tag="b1")), UAS, 1.0)
    assert layer.get_timer() == 33.0  # Timer M
    layer.receive(wire(tx.request.make_response(200, to_tag="b1")), UAS, 2.0)
    assert len(layer._heap) == 1  # the same deadline: not pushed twice
    layer.handle_timer(32.9)
    assert len(layer) == 1
    layer.handle_timer(33.0)
    assert len(layer) == 0 and layer.get_timer() is None
    assert names(layer.events()) == ["response", "response", "response", "response", "terminated"]

"""Dialogs (RFC 3261 section 12): creation on both sides, route sets, CSeq, routing, refresh."""

import pytest

from actors.sip.message import SipMessage
from actors.sip.dialog import (
    Dialog,
    DialogError,
    DialogId,
    DialogMatchError,
    DialogRequestError,
    DialogState,
    DialogStateError,
)

P1 = "<sip:p1.ims.example;lr>"
P2 = "<sip:p2.ims.example;lr>"


def wire(msg):
    return SipMessage.parse(bytes(msg))


def invite(cseq=314, record_route=()):
    headers = [
        ("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKinv1"),
        ("Max-Forwards", "70"),
    ]
    headers += [("Record-Route", rr) for rr in record_route]
    headers += [
        ("From", '"Alice" <sip:alice@ims.example>;tag=a1'),
        ("To", "<sip:bob@ims.example>"),
        ("Call-ID", "dlg-1@10.0.0.1"),
        ("CSeq", f"{cseq} INVITE"),
        ("Contact", "<sip:alice@10.0.0.1:5060>"),
    ]
    return wire(SipMessage.request("INVITE", "sip:bob@ims.example", headers=headers))


def answer(req, status, record_route=None, contact="<sip:bob@10.0.0.2:5062>", tag="b1"):
    resp = req.make_response(status, to_tag=tag)
    if record_route is not None:
        resp.set("Record-Route", record_route)
    if contact is not None:
        resp.set("Contact", contact)
    return wire(resp)


def uac_dialog(status=200, rr=f"{P2}, {P1}"):
    req = invite()
    return req, Dialog.from_uac(req, answer(req, status, rr))


def in_dialog_request(method, cseq, contact=None, to_tag="a1", from_tag="b1"):
    """A request from Bob (the UAS) to Alice (the UAC) inside the dialog."""
    headers = [
        ("Via", "SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bKbob%d" % cseq),
        ("From", f"<sip:bob@ims.example>;tag={from_tag}"),
        ("To", f'"Alice" <sip:alice@ims.example>;tag={to_tag}'),
        ("Call-ID", "dlg-1@10.0.0.1"),
        ("CSeq", f"{cseq} {method}"),
    ]
    if contact:
        headers.append(("Contact", contact))
    return wire(SipMessage.request(method, "sip:alice@10.0.0.1:5060", headers=headers))


# ------------------------------------------------------------------------------- creation


def test_uac_early_dialog_then_confirmed_recomputes_route_set():
    req = invite()
    ringing = answer(req, 180, record_route=f"{P2}, {P1}")
    d = Dialog.from_uac(req, ringing)
    assert d.state is DialogState.EARLY and d.is_uac
    assert (d.call_id, d.local_tag, d.remote_tag) == ("dlg-1@10.0.0.1", "a1", "b1")
    assert d.local_seq == 314 and d.remote_seq is None
    assert d.local_uri == "sip:alice@ims.example" and d.remote_uri == "sip:bob@ims.example"
    assert d.remote_target == "sip:bob@10.0.0.2:5062"
    assert d.route_set == [P1, P2]  # Record-Route reversed on the UAC side
    assert d.local_target == "sip:alice@10.0.0.1:5060"
    ok = answer(req, 200, record_route=P1, contact="<sip:bob@10.0.0.3:5062>")
    d.receive_response(ok)
    assert d.state is DialogState.CONFIRMED
    assert d.route_set == [P1]  # recomputed from the 2xx (RFC 3261 13.2.2.4)
    assert d.remote_target == "sip:bob@10.0.0.3:5062"


def test_uas_dialog_keeps_record_route_order_and_empty_local_seq():
    req = invite(record_route=[P2, P1])
    ok = answer(req, 200, contact="<sip:bob@10.0.0.2:5062>")
    d = Dialog.from_uas(req, ok, via="SIP/2.0/UDP 10.0.0.2:5062")
    assert d.state is DialogState.CONFIRMED and not d.is_uac
    assert (d.local_tag, d.remote_tag) == ("b1", "a1")
    assert d.route_set == [P2, P1]  # in order on the UAS side
    assert d.local_seq is None and d.remote_seq == 314
    assert d.remote_target == "sip:alice@10.0.0.1:5060"
    assert d.local_uri == "sip:bob@ims.example" and d.remote_uri == "sip:alice@ims.example"
    bye = d.create_request("BYE")
    assert bye.cseq == (1, "BYE")  # our CSeq space starts at 1
    assert bye.uri == "sip:alice@10.0.0.1:5060"
    assert bye.get_all("Route") == [P2, P1]
    assert bye.get("From") == "<sip:bob@ims.example>;tag=b1"
    assert bye.get("To") == '"Alice" <sip:alice@ims.example>;tag=a1'
    assert bye.get("Via").startswith("SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bK")


def test_creation_needs_a_tagged_1xx_or_2xx():
    req = invite()
    with pytest.raises(DialogError, match="100"):
        Dialog.from_uac(req, wire(req.make_response(100)))
    with pytest.raises(DialogError, match="486"):
        Dialog.from_uac(req, answer(req, 486))
    with pytest.raises(DialogError, match="To tag"):
        Dialog.from_uac(req, wire(req.make_response(180)))
    with pytest.raises(DialogError, match="Contact"):
        Dialog.from_uac(req, answer(req, 200, contact=None))


# -------------------------------------------------------------------------- our requests


def test_loose_routing_in_dialog_requests_and_cseq():
    req, d = uac_dialog()
    info = d.create_request("INFO", body=b"x", headers=[("Content-Type", "text/plain")])
    assert info.uri == "sip:bob@10.0.0.2:5062"  # the remote target
    assert info.get_all("Route") == [P1, P2]
    assert info.cseq == (315, "INFO")
    assert info.get("From") == '"Alice" <sip:alice@ims.example>;tag=a1'
    assert info.get("To") == "<sip:bob@ims.example>;tag=b1"
    assert info.call_id == "dlg-1@10.0.0.1" and info.max_forwards == 70
    assert info.get("Contact") is None  # INFO is not a target refresh
    assert info.get("Content-Type") == "text/plain" and info.body == b"x"
    assert info.get("Via").startswith("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK")
    reinvite = d.create_request("INVITE")
    assert reinvite.cseq == (316, "INVITE")
    assert reinvite.get("Contact") == "<sip:alice@10.0.0.1:5060>"
    assert d.local_seq == 316
    assert reinvite.branch != info.branch  # every request a new branch


def test_ack_reuses_the_invite_cseq():
    req, d = uac_dialog()
    ack = d.create_request("ACK")
    assert ack.cseq == (314, "ACK") and d.local_seq == 314
    d.create_request("UPDATE")
    d.create_request("INVITE")  # re-INVITE 316
    ack2 = d.create_request("ACK")
    assert ack2.cseq == (316, "ACK")
    assert d.create_request("BYE").cseq == (317, "BYE")


def test_strict_routing_puts_first_route_in_request_uri():
    req, d = uac_dialog(rr="<sip:p2.ims.example;lr>, <sip:p1.ims.example;method=INVITE>")
    assert d.route_set[0] == "<sip:p1.ims.example;method=INVITE>"  # no lr: a strict router
    bye = d.create_request("BYE")
    assert bye.uri == "sip:p1.ims.example"  # method= is not allowed in a Request-URI
    assert bye.get_all("Route") == ["<sip:p2.ims.example;lr>", "<sip:bob@10.0.0.2:5062>"]


def test_empty_route_set_sends_to_remote_target_without_route():
    req = invite()
    d = Dialog.from_uac(req, answer(req, 200))
    msg = d.create_request("OPTIONS")
    assert msg.uri == "sip:bob@10.0.0.2:5062" and msg.get_all("Route") == []


def test_bye_terminates_and_then_nothing_can_be_sent():
    req, d = uac_dialog()
    d.create_request("BYE")
    assert d.state is DialogState.TERMINATED
    with pytest.raises(DialogStateError, match="TERMINATED"):
        d.create_request("INFO")


def test_cancel_is_not_built_by_the_dialog():
    req, d = uac_dialog(status=180)
    with pytest.raises(DialogError, match="CANCEL"):
        d.create_request("CANCEL")


def test_callee_must_not_send_bye_on_early_dialog_but_caller_may():
    req = invite()
    uas = Dialog.from_uas(req, answer(req, 180))
    with pytest.raises(DialogStateError, match="EARLY"):
        uas.create_request("BYE")
    assert uas.state is DialogState.EARLY
    uac = Dialog.from_uac(req, answer(req, 180))
    uac.create_request("BYE")
    assert uac.state is DialogState.TERMINATED


# ---------------------------------------------------------------------- requests we receive


def test_lower_cseq_is_rejected_with_500_and_changes_nothing():
    req, d = uac_dialog()
    d.receive_request(in_dialog_request("INFO", 10))
    assert d.remote_seq == 10
    with pytest.raises(DialogRequestError) as exc:
        d.receive_request(in_dialog_request("INFO", 9))
    assert exc.value.status_hint == 500
    assert d.remote_seq == 10 and d.state is DialogState.CONFIRMED
    d.receive_request(in_dialog_request("INFO", 12))  # gaps are fine
    assert d.remote_seq == 12


def test_uas_side_checks_against_the_initial_invite_cseq():
    req = invite(cseq=314)
    d = Dialog.from_uas(req, answer(req, 200))
    alice_info = SipMessage.request("INFO", "sip:bob@10.0.0.2:5062", headers=[
        ("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx"),
        ("From", '"Alice" <sip:alice@ims.example>;tag=a1'),
        ("To", "<sip:bob@ims.example>;tag=b1"),
        ("Call-ID", "dlg-1@10.0.0.1"),
        ("CSeq", "313 INFO"),
    ])
    with pytest.raises(DialogRequestError) as exc:
        d.receive_request(wire(alice_info))
    assert exc.value.status_hint == 500
    ack = wire(alice_info)
    ack.method = "ACK"
    ack.set("CSeq", "314 ACK")
    d.receive_request(ack)  # the ACK carries the INVITE's number: in order


def test_target_refresh_updates_remote_target_other_requests_do_not():
    req, d = uac_dialog()
    d.receive_request(in_dialog_request("INFO", 1, contact="<sip:bob@10.9.9.9>"))
    assert d.remote_target == "sip:bob@10.0.0.2:5062"
    d.receive_request(in_dialog_request("INVITE", 2, contact="<sip:bob@10.0.0.5:5070>"))
    assert d.remote_target == "sip:bob@10.0.0.5:5070"
    d.receive_request(in_dialog_request("UPDATE", 3, contact="<sip:bob@10.0.0.6>"))
    assert d.remote_target == "sip:bob@10.0.0.6"
    assert d.create_request("BYE").uri == "sip:bob@10.0.0.6"


def test_2xx_to_update_refreshes_target_on_uac():
    req, d = uac_dialog()
    update = d.create_request("UPDATE")
    ok = wire(update.make_response(200))
    ok.set("Contact", "<sip:bob@10.0.0.8>")
    d.receive_response(ok)
    assert d.remote_target == "sip:bob@10.0.0.8"


def test_received_bye_terminates_then_requests_get_481():
    req, d = uac_dialog()
    d.receive_request(in_dialog_request("BYE", 5))
    assert d.state is DialogState.TERMINATED
    with pytest.raises(DialogRequestError) as exc:
        d.receive_request(in_dialog_request("INFO", 6))
    assert exc.value.status_hint == 481


def test_non_2xx_final_ends_early_dialog_and_481_ends_confirmed():
    req = invite()
    d = Dialog.from_uac(req, answer(req, 183))
    d.receive_response(answer(req, 180))
    assert d.state is DialogState.EARLY
    d.receive_response(answer(req, 486))
    assert d.state is DialogState.TERMINATED

    req2, d2 = uac_dialog()
    info = d2.create_request("INFO")
    d2.receive_response(wire(info.make_response(481)))
    assert d2.state is DialogState.TERMINATED

    req3, d3 = uac_dialog()
    reinv = d3.create_request("INVITE")
    d3.receive_response(wire(reinv.make_response(488)))  # a failed re-INVITE keeps the dialog
    assert d3.state is DialogState.CONFIRMED


def test_uas_response_sent_confirms_or_ends_the_early_dialog():
    req = invite()
    d = Dialog.from_uas(req, answer(req, 180))
    d.response_sent(answer(req, 200))
    assert d.state is DialogState.CONFIRMED
    d2 = Dialog.from_uas(req, answer(req, 180))
    d2.response_sent(answer(req, 603))
    assert d2.state is DialogState.TERMINATED


# ---------------------------------------------------------------------------- matching


def test_dialog_id_matching():
    req, d = uac_dialog()
    assert d.id == DialogId("dlg-1@10.0.0.1", "a1", "b1")
    mine = in_dialog_request("INFO", 1)
    assert DialogId.of_request_received(mine) == d.id and d.matches_request(mine)
    other = in_dialog_request("INFO", 1, from_tag="zzz")
    assert not d.matches_request(other)
    with pytest.raises(DialogMatchError):
        d.receive_request(other)
    forked = answer(req, 200, tag="b2")  # a 2xx from another fork is another dialog
    assert not d.matches_response(forked)
    with pytest.raises(DialogMatchError):
        d.receive_response(forked)
    assert d.matches_response(answer(req, 200))


def test_terminate_is_idempotent():
    req, d = uac_dialog()
    d.terminate()
    d.terminate()
    assert d.terminated

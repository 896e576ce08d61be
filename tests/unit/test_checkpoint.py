"""The requester's checkpoint table: what it learns from replies, what it replays."""

from __future__ import annotations

import pytest

from nf_modules.checkpoint import CheckpointTable

HOP = ("127.0.0.1", 5062)
OTHER = ("127.0.0.1", 5065)


def test_replies_checkpoint_the_session_state_and_clear_the_pending_request() -> None:
    table = CheckpointTable()
    table.sent("call-1", "tx1", "INVITE", b"INVITE-1", HOP, 1.0)
    assert [p.key for p in table.replay_set(HOP, lambda k: False)] == ["tx1"]
    table.replied("tx1", 180, 1.1, to_tag="t9", record_route=["<sip:a;lr>", "<sip:b;lr>"],
                  contact="<sip:bob@h:1>")
    cp = table.get("call-1")
    assert cp is not None and cp.to_tag == "t9" and cp.contact == "<sip:bob@h:1>"
    assert cp.record_route == ["<sip:a;lr>", "<sip:b;lr>"] and cp.last_status == {"INVITE": 180}
    assert "tx1" in cp.pending  # a provisional: still waiting for the final
    table.replied("tx1", 200, 1.2)
    assert table.get("call-1").pending == {} and table.get("call-1").last_status["INVITE"] == 200


def test_a_failed_invite_or_an_answered_bye_ends_the_call() -> None:
    table = CheckpointTable()
    table.sent("a", "tx1", "INVITE", b"", HOP, 0.0)
    table.replied("tx1", 486, 0.1)
    assert table.get("a") is None
    table.sent("b", "tx2", "INVITE", b"", HOP, 0.0)
    table.replied("tx2", 200, 0.1)
    table.sent("b", "tx3", "BYE", b"", HOP, 5.0)
    assert table.calls_via(HOP) == ["b"]
    table.replied("tx3", 200, 5.1)
    assert len(table) == 0


def test_replay_set_is_the_unanswered_requests_to_the_failed_hop_oldest_first() -> None:
    table = CheckpointTable()
    table.sent("a", "tx1", "INVITE", b"1", HOP, 2.0)
    table.sent("b", "tx2", "INVITE", b"2", HOP, 1.0)
    table.sent("c", "tx3", "INVITE", b"3", OTHER, 0.5)
    table.sent("d", "tx4", "BYE", b"4", HOP, 0.7)
    answered = {"tx4"}  # answered (e.g. 100 Trying) without the hook seeing it
    replay = table.replay_set(HOP, lambda k: k in answered)
    assert [p.data for p in replay] == [b"2", b"1"]
    table.forget("tx2")
    assert [p.data for p in table.replay_set(HOP, lambda k: False)] == [b"4", b"1"]


def test_table_is_bounded_and_ignores_unknown_replies() -> None:
    table = CheckpointTable(max_calls=2)
    for i in range(3):
        table.sent(f"c{i}", f"tx{i}", "INVITE", b"", HOP, float(i))
    assert table.get("c0") is None and len(table) == 2
    table.replied("nope", 200, 1.0)
    table.forget("nope")
    table.sent("", "tx9", "INVITE", b"", HOP, 0.0)  # no Call-ID: nothing to key it by
    assert len(table) == 2
    with pytest.raises(ValueError, match="max_calls"):
        CheckpointTable(max_calls=0)
    assert set(table.snapshot()) == {"c1", "c2"}


def test_transactions_outside_a_call_leave_no_checkpoint() -> None:
    table = CheckpointTable()
    table.sent("reg-1", "tx1", "REGISTER", b"", HOP, 0.0)
    table.replied("tx1", 401, 0.1)
    assert len(table) == 0


def _reply(status: int, *headers: tuple[str, str]):
    from actors.sip.message import SipMessage

    response = SipMessage.response(status)
    response.headers = list(headers)
    return response


def test_replied_with_a_message_checkpoints_the_same_as_replied_with_its_fields() -> None:
    replies = [
        _reply(180, ("To", "<sip:bob@x>;tag=t1"), ("Record-Route", "<sip:a;lr>, <sip:b;lr>"),
               ("Contact", "<sip:bob@h:1>")),
        _reply(183, ("To", "<sip:bob@x>;tag=t1"), ("Contact", "<sip:bob@h:2>")),  # no Record-Route
        _reply(200, ("To", "<sip:bob@x>"), ("Record-Route", "<sip:c;lr>")),  # no tag, no Contact
    ]
    eager, lazy = CheckpointTable(), CheckpointTable()
    for table in (eager, lazy):
        table.sent("call-1", "tx1", "INVITE", b"INVITE-1", HOP, 1.0)
    for i, response in enumerate(replies):
        eager.replied("tx1", response.status, 1.1 + i, to_tag=response.to_tag,
                      record_route=response.get_all("Record-Route"), contact=response.get("Contact"))
        lazy.replied_with("tx1", response, 1.1 + i)
    assert lazy.snapshot() == eager.snapshot()
    cp = lazy.get("call-1")
    assert (cp.to_tag, cp.record_route, cp.contact) == ("t1", ["<sip:c;lr>"], "<sip:bob@h:2>")
    assert cp.last_status == {"INVITE": 200} and cp.pending == {}


def test_replied_with_ignores_unknown_requests_and_replies_that_end_the_call() -> None:
    table = CheckpointTable()
    table.sent("b", "tx2", "INVITE", b"", HOP, 0.0)
    table.replied_with("tx2", _reply(486, ("To", "<sip:b@x>;tag=z")), 0.1)
    table.replied_with("nope", _reply(200), 0.1)
    assert table.get("b") is None and len(table) == 0
    table.sent("c", "tx3", "INVITE", b"", HOP, 0.0)
    table.replied_with("tx3", _reply(180, ("To", "<sip:b@x>;tag=early"), ("Contact", "<sip:x@h>")), 0.1)
    table.replied("tx3", 200, 0.2, to_tag="final")
    assert (table.get("c").to_tag, table.get("c").contact) == ("final", "<sip:x@h>")

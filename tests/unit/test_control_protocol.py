"""The control protocol, sans-IO: wire format, client retransmission timing, server at-most-once."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.control_protocol import (
    MAX_DATAGRAM,
    MAX_ID,
    ControlClient,
    ControlDecodeError,
    ControlEncodeError,
    ControlServer,
    ErrorReply,
    Failed,
    Reply,
    Request,
    Response,
    decode,
    encode_error,
    encode_request,
    encode_result,
)

HSS = ("127.0.0.1", 5064)
CLIENT = ("127.0.0.1", 40000)


# --------------------------------------------------------------------------- wire format


def test_request_and_replies_encode_to_the_documented_json() -> None:
    assert json.loads(encode_request(7, "auth_vector", {"impu": "ue0001"})) == {
        "v": 1,
        "id": 7,
        "op": "auth_vector",
        "args": {"impu": "ue0001"},
    }
    assert encode_result(7, {"a": [1, None]}) == b'{"v":1,"id":7,"ok":true,"result":{"a":[1,null]}}'
    assert encode_error(7, "not_found", "no such user") == (
        b'{"v":1,"id":7,"ok":false,"error":{"code":"not_found","message":"no such user"}}'
    )
    assert decode(encode_request(7, "ping")) == Request(7, "ping", {})
    assert decode(encode_result(7, [1])) == Response(7, True, [1])
    assert decode(encode_error(7, "x", "y")) == Response(7, False, code="x", message="y")


@given(
    st.integers(0, MAX_ID),
    st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
    st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)), max_size=5),
)
def test_request_round_trip(id_: int, op: str, args: dict) -> None:
    assert decode(encode_request(id_, op, args)) == Request(id_, op, args)


@pytest.mark.parametrize(
    ("data", "code", "reply_id"),
    [
        (b"\xff\xfe", "bad_json", None),
        (b"{not json", "bad_json", None),
        (b"[1, 2]", "bad_json", None),
        (b'{"v":1,"id":1,"ok":true,"result":NaN}', "bad_json", None),
        (b"[" * 50_000 + b"]" * 50_000, "oversize", None),
        (b"[" * 20_000 + b"]" * 20_000, "bad_json", None),  # too deep for the parser: not a crash
        (b'{"v":1,"op":"ping"}', "bad_request", None),
        (b'{"v":1,"id":true,"op":"ping"}', "bad_request", None),
        (b'{"v":1,"id":-1,"op":"ping"}', "bad_request", None),
        (b'{"v":1,"id":1.0,"op":"ping"}', "bad_request", None),
        (b'{"v":1,"id":9007199254740992,"op":"ping"}', "bad_request", None),
        (b'{"v":2,"id":5,"op":"ping"}', "bad_version", 5),
        (b'{"v":true,"id":5,"op":"ping"}', "bad_version", 5),
        (b'{"id":5,"op":"ping"}', "bad_version", 5),
        (b'{"v":2,"id":5,"ok":true}', "bad_version", None),  # a reply is never answered
        (b'{"v":1,"id":5,"op":"Ping"}', "bad_request", 5),
        (b'{"v":1,"id":5,"op":"handle_x; rm"}', "bad_request", 5),
        (b'{"v":1,"id":5,"op":"ping","args":[1]}', "bad_request", 5),
        (b'{"v":1,"id":5,"ok":false}', "bad_request", None),
        (b'{"v":1,"id":5}', "bad_request", None),
    ],
)
def test_decode_errors_are_precise(data: bytes, code: str, reply_id: int | None) -> None:
    with pytest.raises(ControlDecodeError) as info:
        decode(data)
    assert info.value.code == code
    assert info.value.id == reply_id
    assert isinstance(info.value, ValueError)


def test_encode_errors() -> None:
    with pytest.raises(ControlEncodeError, match="limit"):
        encode_request(1, "x", {"blob": "a" * MAX_DATAGRAM})
    with pytest.raises(ControlEncodeError, match="serialisable"):
        encode_result(1, object())
    with pytest.raises(ControlEncodeError, match="serialisable"):
        encode_result(1, float("nan"))
    with pytest.raises(ControlEncodeError, match="op must"):
        encode_request(1, "Bad-Op")
    with pytest.raises(ControlEncodeError, match="id must"):
        encode_request(-1, "x")
    with pytest.raises(ControlEncodeError, match="args must"):
        encode_request(1, "x", [1])  # type: ignore[arg-type]


@given(st.binary(max_size=300))
def test_decode_never_raises_anything_else(data: bytes) -> None:
    try:
        decode(data)
    except ControlDecodeError:
        pass


# --------------------------------------------------------------------------- client timing


def reply_to(data: bytes, result: object = "ok") -> bytes:
    return encode_result(json.loads(data)["id"], result)


def test_retransmissions_double_until_the_exact_timeout() -> None:
    client = ControlClient(timeout=2.0, retransmit=0.25, first_id=100)
    assert client.get_timer() is None
    rid = client.request("lookup", {"impu": "ue0001"}, HSS, 10.0)
    assert rid == 100
    [(first, dest)] = client.datagrams_to_send()
    assert dest == HSS and json.loads(first)["op"] == "lookup"
    sent_at = []
    expected = [10.25, 10.75, 11.75]
    for instant in expected:
        assert client.get_timer() == instant
        client.handle_timer(instant - 0.001)  # early: nothing
        assert client.datagrams_to_send() == []
        client.handle_timer(instant)
        assert client.datagrams_to_send() == [(first, HSS)]  # byte-identical copy
        sent_at.append(instant)
        assert client.events() == []
    assert client.get_timer() == 12.0  # the next copy (13.75) would be after the deadline
    client.handle_timer(12.0)
    assert client.datagrams_to_send() == []
    assert client.events() == [Failed(100, "timeout")]
    assert client.get_timer() is None and client.pending == 0
    assert client.stats == {"tx_request": 1, "retransmit": 3, "timeout": 1}
    assert client.receive(reply_to(first), HSS, 12.1) is False  # too late: stray
    assert client.stats["stray"] == 1


def test_a_late_timer_reschedules_from_when_it_fired_and_the_cap_holds() -> None:
    client = ControlClient(timeout=30.0, retransmit=1.0, retransmit_cap=4.0, first_id=1)
    client.request("ping", {}, HSS, 0.0)
    client.datagrams_to_send()
    client.handle_timer(1.5)  # fired half a second late
    assert len(client.datagrams_to_send()) == 1
    assert client.get_timer() == 3.5  # 1.5 + 2.0
    client.handle_timer(3.5)
    assert client.get_timer() == 7.5  # + 4.0
    client.handle_timer(7.5)
    assert client.get_timer() == 11.5  # capped at 4.0
    assert client.stats["retransmit"] == 3


def test_reply_matching_by_id_and_source() -> None:
    client = ControlClient(first_id=1)
    a = client.request("ping", {}, HSS, 0.0)
    b = client.request("ping", {}, HSS, 0.0, timeout=5.0)
    assert (a, b) == (1, 2)
    assert client.receive(encode_result(a, 1), ("127.0.0.1", 9999), 0.1) is False  # wrong source
    assert client.receive(encode_result(77, 1), HSS, 0.1) is False  # unknown id
    assert client.receive(b"garbage", HSS, 0.1) is False
    assert client.receive(encode_request(1, "ping"), HSS, 0.1) is False
    assert client.events() == []
    assert client.receive(encode_error(b, "not_found", "who?"), HSS, 0.2) is True
    assert client.receive(encode_result(a, {"pong": True}), HSS, 0.3) is True
    assert client.events() == [ErrorReply(2, "not_found", "who?"), Reply(1, {"pong": True})]
    assert client.receive(encode_result(a, 1), HSS, 0.4) is False  # duplicate reply
    assert client.get_timer() is None
    assert client.stats["stray"] == 3 and client.stats["dropped_bad_json"] == 1
    assert client.stats["dropped_not_reply"] == 1


def test_per_request_timeout_and_cancel() -> None:
    client = ControlClient(timeout=2.0, retransmit=0.25, first_id=1)
    client.request("a", {}, HSS, 0.0, timeout=0.1)
    assert client.get_timer() == 0.1
    client.handle_timer(0.1)
    assert client.events() == [Failed(1)]
    rid = client.request("b", {}, HSS, 1.0)
    assert client.cancel(rid) is True and client.cancel(rid) is False
    assert client.get_timer() is None
    with pytest.raises(ValueError):
        client.request("c", {}, HSS, 1.0, timeout=0)
    for dest in ("127.0.0.1:5064", ("127.0.0.1",), ("127.0.0.1", "5064"), ("127.0.0.1", 0), (1, 2)):
        with pytest.raises(ValueError, match="destination"):
            client.request("c", {}, dest, 1.0)  # type: ignore[arg-type]
    assert client.request("c", {}, ["127.0.0.1", 5064], 1.0) == 3  # refused requests used no id


def test_ids_wrap_and_skip_pending() -> None:
    client = ControlClient(first_id=MAX_ID)
    assert client.request("a", {}, HSS, 0.0) == MAX_ID
    assert client.request("a", {}, HSS, 0.0) == 0
    client2 = ControlClient(first_id=5)
    client2.request("a", {}, HSS, 0.0)
    client2._next_id = 5  # noqa: SLF001  (as after a full wrap with 5 still pending)
    assert client2.request("a", {}, HSS, 0.0) == 6
    with pytest.raises(ControlEncodeError):
        client2.request("Bad", {}, HSS, 0.0)
    assert client2.request("a", {}, HSS, 0.0) == 7  # a refused request uses no id


def test_constructor_checks() -> None:
    for kwargs in ({"timeout": 0}, {"retransmit": 0}, {"retransmit": 5.0, "retransmit_cap": 1.0}, {"first_id": -1}):
        with pytest.raises(ValueError):
            ControlClient(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ControlServer(window=0)


# --------------------------------------------------------------------------- server


def test_server_executes_once_and_answers_duplicates_from_its_cache() -> None:
    server = ControlServer(window=10.0)
    data = encode_request(3, "register", {"impu": "ue0001"})
    request = server.receive(data, CLIENT, 1.0)
    assert request == Request(3, "register", {"impu": "ue0001"})
    assert server.receive(data, CLIENT, 1.1) is None  # still executing: dropped, reply will come
    assert server.datagrams_to_send() == []
    server.respond(request, CLIENT, {"expires": 60}, 1.2)
    [(reply, dest)] = server.datagrams_to_send()
    assert dest == CLIENT and decode(reply) == Response(3, True, {"expires": 60})
    assert server.receive(data, CLIENT, 5.0) is None
    assert server.datagrams_to_send() == [(reply, CLIENT)]  # the same bytes again
    # the same id from another source is another request
    assert server.receive(data, ("127.0.0.1", 40001), 5.0) == request
    assert server.stats["rx_request"] == 2
    assert server.stats["duplicate_in_progress"] == 1 and server.stats["duplicate_answered"] == 1


def test_reply_cache_window_expires_at_the_exact_instant() -> None:
    server = ControlServer(window=10.0)
    data = encode_request(3, "x")
    request = server.receive(data, CLIENT, 1.0)
    server.respond(request, CLIENT, None, 2.0)
    server.datagrams_to_send()
    assert server.get_timer() == 12.0
    server.handle_timer(11.999)
    assert len(server) == 1
    assert server.receive(data, CLIENT, 11.999) is None  # still a duplicate
    server.handle_timer(12.0)
    assert len(server) == 0 and server.get_timer() is None
    assert server.receive(data, CLIENT, 12.0) == request  # forgotten: executes again


def test_a_stale_expiry_record_does_not_forget_a_newer_reply() -> None:
    server = ControlServer(window=1.0, max_entries=2)
    first = server.receive(encode_request(1, "x"), CLIENT, 0.0)
    server.respond(first, CLIENT, "old", 0.0)  # cached until 1.0
    server.receive(encode_request(2, "x"), CLIENT, 0.1)
    server.receive(encode_request(3, "x"), CLIENT, 0.2)  # full: id 1 is evicted
    assert server.stats["evicted"] == 1 and len(server) == 2
    again = server.receive(encode_request(1, "x"), CLIENT, 0.3)  # forgotten, so executed again
    assert again is not None
    server.respond(again, CLIENT, "new", 0.4)  # cached until 1.4
    server.datagrams_to_send()
    assert server.receive(encode_request(1, "x"), CLIENT, 1.0) is None  # purges up to 1.0 first
    [(reply, _)] = server.datagrams_to_send()
    assert decode(reply).result == "new"
    assert server.receive(encode_request(1, "x"), CLIENT, 1.4) is not None  # now it is gone


def test_server_rejects_garbage_and_answers_what_it_can() -> None:
    server = ControlServer()
    assert server.receive(b"{oops", CLIENT, 0.0) is None
    assert server.receive(b"x" * (MAX_DATAGRAM + 1), CLIENT, 0.0) is None
    assert server.receive(encode_result(1, None), CLIENT, 0.0) is None  # a reply: not for a server
    assert server.datagrams_to_send() == []
    assert server.receive(b'{"v":9,"id":4,"op":"x"}', CLIENT, 0.0) is None
    [(reply, _)] = server.datagrams_to_send()
    assert decode(reply) == Response(4, False, code="bad_version", message="version 9 is not 1")
    assert dict(server.stats) == {
        "dropped_bad_json": 1,
        "dropped_oversize": 1,
        "dropped_not_request": 1,
        "dropped_bad_version": 1,
        "error_bad_version": 1,
    }


def test_unencodable_and_oversize_results_become_errors() -> None:
    server = ControlServer()
    r1 = server.receive(encode_request(1, "x"), CLIENT, 0.0)
    server.respond(r1, CLIENT, {"bad": object()}, 0.0)
    r2 = server.receive(encode_request(2, "x"), CLIENT, 0.0)
    server.respond(r2, CLIENT, "a" * MAX_DATAGRAM, 0.0)
    r3 = server.receive(encode_request(3, "x"), CLIENT, 0.0)
    server.respond_error(r3, CLIENT, "not_found", "m" * MAX_DATAGRAM, 0.0)
    replies = [decode(d) for d, _ in server.datagrams_to_send()]
    assert [(r.id, r.ok, r.code) for r in replies] == [(1, False, "internal"), (2, False, "too_large"), (3, False, "not_found")]
    assert server.stats["encode_errors"] == 2
    assert (server.stats["error_internal"], server.stats["error_too_large"], server.stats["error_not_found"]) == (1, 1, 1)


# --------------------------------------------------------------------------- both, over a lossy "network"


def test_lost_request_and_lost_reply_execute_exactly_once() -> None:
    client = ControlClient(timeout=2.0, retransmit=0.25, first_id=1)
    server = ControlServer(window=10.0)
    executed = []
    client.request("register", {"impu": "ue0001"}, HSS, 0.0)
    client.datagrams_to_send()  # the first copy is lost
    client.handle_timer(0.25)
    [(copy, _)] = client.datagrams_to_send()
    request = server.receive(copy, CLIENT, 0.26)
    executed.append(request)
    server.respond(request, CLIENT, "done", 0.27)
    server.datagrams_to_send()  # the reply is lost
    client.handle_timer(0.75)
    [(copy2, _)] = client.datagrams_to_send()
    assert server.receive(copy2, CLIENT, 0.76) is None  # not executed again
    [(reply, _)] = server.datagrams_to_send()
    assert client.receive(reply, HSS, 0.77) is True
    assert client.events() == [Reply(1, "done")]
    assert len(executed) == 1
    assert client.get_timer() is None

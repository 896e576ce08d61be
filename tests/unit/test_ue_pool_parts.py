"""The UE pool's sans-IO parts: user lists, RTP port numbers, the digest client, registration
timing, reading a registrar's 200, Request-URI users and the SDP body."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.sip.digest import DigestChallenger, DigestError, Verdict, ha1, parse_credentials
from actors.sip.message import SipMessage
from nf_modules.sdp import audio_address, parse_streams
from nf_modules.ue_pool import (
    DigestSession,
    Registration,
    RtpPorts,
    expand_users,
    g711_sdp,
    granted_expires,
    request_user,
)

# ------------------------------------------------------------------------------------ users


def test_users_from_a_count_follow_the_hss_convention() -> None:
    assert expand_users(3) == ["ue0001", "ue0002", "ue0003"]
    assert expand_users(2, "sub{:02d}", first=9) == ["sub09", "sub10"]
    assert expand_users(0) == []
    assert expand_users(["alice", "bob"]) == ["alice", "bob"]


@pytest.mark.parametrize(
    ("users", "kwargs", "message"),
    [
        (-1, {}, "users must be >= 0"),
        (True, {}, "count or a list"),
        ("ue0001", {}, "not a single string"),
        (2, {"user_format": "ue{}{}"}, "user_format"),
        (2, {"first": -3}, "first"),
        (["a", "a"], {}, "listed twice"),
        (["a b"], {}, "cannot carry"),
        (["x@y"], {}, "cannot carry"),
        ([""], {}, "non-empty"),
        ([7], {}, "non-empty string"),
    ],
)
def test_bad_user_lists_are_refused_precisely(users: object, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        expand_users(users, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- RTP ports


def test_rtp_ports_are_even_round_robin_and_run_out() -> None:
    ports = RtpPorts(30001, 30009)  # even ports with room for RTCP: 30002 30004 30006 30008
    assert len(ports) == 4
    got = [ports.allocate() for _ in range(4)]
    assert got == [30002, 30004, 30006, 30008]
    assert ports.allocate() is None and ports.in_use == 4
    ports.release(30004)
    assert ports.allocate() == 30004
    ports.release(30002)
    ports.release(30006)
    assert ports.allocate() == 30006  # round robin: the next after the last handed out
    ports.release(None)  # no port: nothing to do


@pytest.mark.parametrize(("low", "high"), [(0, 10), (10, 70000), (40000, 40000), (40001, 40002), ("1", 9)])
def test_bad_rtp_ranges_are_refused(low: object, high: object) -> None:
    with pytest.raises(ValueError):
        RtpPorts(low, high)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 7)), max_size=60))
def test_rtp_ports_never_hand_out_a_port_twice(ops: list[tuple[bool, int]]) -> None:
    ports = RtpPorts(20000, 20015)  # 8 pairs
    held: list[int] = []
    for allocate, index in ops:
        if allocate or not held:
            port = ports.allocate()
            if port is None:
                assert len(held) == 8
                continue
            assert port % 2 == 0 and 20000 <= port < 20015 and port not in held
            held.append(port)
        else:
            ports.release(held.pop(index % len(held)))
        assert ports.in_use == len(held)


# ---------------------------------------------------------------------------- digest client


def test_the_digest_session_counts_nonce_uses_and_the_registrar_accepts_each() -> None:
    challenger = DigestChallenger("ims.example", secret=b"k" * 32)
    session = DigestSession("ue0001", "secret", random.Random(1))
    assert session.authorization("REGISTER", "sip:ims.example") is None  # nothing to answer yet
    session.challenged(challenger.challenge(10.0))
    stored = ha1("ue0001", "ims.example", "secret")
    counts = []
    for _ in range(3):
        value = session.authorization("REGISTER", "sip:ims.example")
        assert challenger.verify(value, "REGISTER", stored, 11.0) is Verdict.OK
        counts.append(parse_credentials(value).nc)
    assert counts == ["00000001", "00000002", "00000003"]
    session.challenged(challenger.challenge(12.0, stale=True))  # a new nonce starts again at 1
    assert parse_credentials(session.authorization("REGISTER", "sip:ims.example")).nc == "00000001"
    session.forget()
    assert session.authorization("REGISTER", "sip:ims.example") is None


def test_a_wrong_password_gives_a_response_the_registrar_refuses() -> None:
    challenger = DigestChallenger("ims.example", secret=b"k" * 32)
    session = DigestSession("ue0001", "wrong", random.Random(1))
    session.challenged(challenger.challenge(0.0))
    value = session.authorization("REGISTER", "sip:ims.example")
    assert challenger.verify(value, "REGISTER", ha1("ue0001", "ims.example", "secret"), 1.0) is Verdict.BAD_RESPONSE


@pytest.mark.parametrize(
    "challenge",
    ['Basic realm="x"', 'Digest realm="x"', 'Digest realm="x", nonce="n", qop="auth-int"', "Digest realm=\"x"],
)
def test_challenges_we_cannot_answer_raise(challenge: str) -> None:
    with pytest.raises(DigestError):
        DigestSession("u", "p", random.Random(0)).challenged(challenge)


# ---------------------------------------------------------------------- registration timing


def test_registration_refreshes_at_the_ratio_of_the_granted_expiry() -> None:
    reg = Registration(call_id="c")
    assert reg.registered(600, 10.0, 0.8) == 490.0
    assert reg.expires_at == 610.0 and reg.granted == 600 and reg.registrations == 1
    snap = reg.snapshot(100.0)
    assert snap["state"] == "registered" and snap["expires_in"] == 510.0 and snap["refresh_in"] == 390.0
    assert reg.snapshot(610.0)["state"] == "expired"  # nobody refreshed it: lapsed at expires_at
    assert reg.registered(2, 490.0, 0.8) == pytest.approx(491.6)
    assert reg.registrations == 2
    reg.cleared("unregistered", 200)
    assert reg.snapshot(500.0) | {"registrations": 0} == {
        "state": "unregistered", "status": 200, "granted": 0, "expires_in": None, "refresh_in": None,
        "registrations": 0, "refreshes": 0, "service_route": [],
    }
    assert [reg.next_cseq() for _ in range(3)] == [1, 2, 3]


# ------------------------------------------------------------------------- the registrar's 200


def ok_with(*contacts: str, expires: str | None = None) -> SipMessage:
    headers = [("Via", "SIP/2.0/UDP 127.0.0.1:5;branch=z9hG4bKx"), ("From", "<sip:a@b>;tag=1"),
               ("To", "<sip:a@b>;tag=2"), ("Call-ID", "c"), ("CSeq", "1 REGISTER")]
    headers += [("Contact", c) for c in contacts]
    if expires is not None:
        headers.append(("Expires", expires))
    return SipMessage.response(200, "OK", headers)


def test_granted_expiry_is_read_from_our_contact() -> None:
    ours = "sip:ue0001@127.0.0.1:5071"
    ok = ok_with("<sip:ue0001@10.0.0.9:5060>;expires=3600", "<sip:ue0001@127.0.0.1:5071>;expires=120")
    assert granted_expires(ok, ours) == 120
    assert granted_expires(ok_with("<sip:ue0001@127.0.0.1:5071>;expires=5, <sip:x@y>;expires=9"), ours) == 5
    assert granted_expires(ok_with("<sip:ue0001@127.0.0.1:5071>", expires="300"), ours) == 300
    assert granted_expires(ok_with("<sip:ue0001@127.0.0.1:5071>"), ours, 60) == 60
    assert granted_expires(ok_with("<sip:ue0001@10.0.0.9:5060>;expires=3600"), ours) is None  # not ours
    assert granted_expires(ok_with(), ours, 0) == 0  # no bindings listed at all (de-registered)
    assert granted_expires(ok_with("<sip:ue0001@127.0.0.1:5071>"), "not a uri") is None


def test_request_user_reads_the_user_part() -> None:
    assert request_user("sip:ue0001@127.0.0.1:5071;transport=udp") == "ue0001"
    assert request_user("sip:127.0.0.1:5071") is None
    assert request_user("http://x") is None
    assert request_user(None) is None


def test_the_sdp_is_g711_on_the_given_port() -> None:
    body = g711_sdp("127.0.0.1", 30002, version=3)
    assert audio_address(body) == ("127.0.0.1", 30002)
    [stream] = parse_streams(body)
    assert stream.formats == ("0", "8")
    assert b"o=- 1 3 IN IP4 127.0.0.1" in body

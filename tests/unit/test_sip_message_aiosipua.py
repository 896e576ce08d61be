"""Differential check: our codec and aiosipua read the same messages the same way.

For each valid message both parse: method, Request-URI / status and reason, Call-ID, CSeq,
From, To, every Via value (comma lists split) and the body must agree; aiosipua must also
read what our serialiser writes (after a proxy hop) the same way.
"""

from __future__ import annotations

import logging
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

aiosipua = pytest.importorskip("aiosipua")
from aiosipua import SipMessage as A  # noqa: E402

from actors.sip.headers import new_branch  # noqa: E402
from actors.sip.message import SipMessage  # noqa: E402

HERE = pathlib.Path(__file__).parent / "sip_torture"
VALID = [
    line.split()[0]
    for line in (HERE / "INDEX").read_text(encoding="utf-8").splitlines()
    if line.strip() and not line.startswith("#") and line.split()[1] == "parse"
]

IMS_INVITE = (
    b"INVITE sip:ue0002@ims.example SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK776asdhds01;rport\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnashds8;received=127.0.0.1\r\n"
    b"Max-Forwards: 69\r\nRecord-Route: <sip:127.0.0.1:5062;lr>\r\nRoute: <sip:127.0.0.1:5064;lr>\r\n"
    b'From: "UE 1" <sip:ue0001@ims.example>;tag=1928301774\r\nTo: <sip:ue0002@ims.example>\r\n'
    b"Call-ID: a84b4c76e66710@pc33.ims.example\r\nCSeq: 314159 INVITE\r\n"
    b"Contact: <sip:ue0001@127.0.0.1:5070>\r\nContent-Type: application/sdp\r\nContent-Length: 31\r\n\r\n"
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
)
OK_200 = (
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK776asdhds01, "
    b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\n"
    b"Call-ID: x@y\r\nCSeq: 1 INVITE\r\nContact: <sip:c@10.0.0.2>\r\nContent-Length: 0\r\n\r\n"
)


@pytest.fixture(autouse=True)
def _quiet_aiosipua(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="aiosipua")


def assert_same(data: bytes) -> SipMessage:
    ours = SipMessage.parse(data)
    theirs = A.parse(data)
    if ours.is_request:
        assert (theirs.method, theirs.uri) == (ours.method, ours.uri)
    else:
        assert (theirs.status_code, theirs.reason_phrase) == (ours.status, ours.reason)
    for name in ("Call-ID", "CSeq", "From", "To"):
        assert theirs.get_header(name) == ours.get(name), name
    assert theirs.get_header_values("Via") == ours.get_all("Via")
    assert theirs.cseq.seq == ours.cseq[0] and theirs.cseq.method == ours.cseq[1]
    assert theirs.body == ours.body
    return ours


@pytest.mark.parametrize("name", VALID)
def test_torture_valid_messages_read_alike(name: str) -> None:
    assert_same((HERE / f"{name}.dat").read_bytes())


@pytest.mark.parametrize("data", [IMS_INVITE, OK_200], ids=["invite", "200"])
def test_ims_messages_read_alike(data: bytes) -> None:
    assert_same(data)


@pytest.mark.parametrize("data", [IMS_INVITE, OK_200] + [(HERE / f"{n}.dat").read_bytes() for n in VALID])
def test_aiosipua_reads_our_output_alike(data: bytes) -> None:
    m = SipMessage.parse(data)
    if m.is_request:
        m.add("Record-Route", "<sip:10.9.9.9:5070;lr>", first=True)
        m.add("Via", "SIP/2.0/UDP 10.9.9.9:5070;branch=" + new_branch(), first=True)
    elif len(m.get_all("Via")) > 1:
        m.pop_first("Via")
    assert assert_same(bytes(m)) == m


_token = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~", min_size=1, max_size=12)
_host = st.from_regex(r"[a-z][a-z0-9-]{0,8}(\.[a-z][a-z0-9-]{0,8}){0,2}", fullmatch=True)


@st.composite
def valid_messages(draw) -> bytes:
    method = draw(st.sampled_from(["INVITE", "ACK", "BYE", "OPTIONS", "REGISTER", "UPDATE", "PRACK", "MESSAGE"]))
    user = draw(_token.filter(lambda t: "%" not in t))
    host = draw(_host)
    vias = [
        f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP', 'TLS']))} {draw(_host)}"
        f"{draw(st.sampled_from(['', ':5060', ':5062']))};branch=z9hG4bK{draw(_token)}"
        for _ in range(draw(st.integers(1, 4)))
    ]
    display = draw(st.one_of(st.none(), st.text("abc XYZ,;:<>@é", max_size=10)))
    frm = (f'"{display}" ' if display is not None else "") + f"<sip:{user}@{host}>;tag={draw(_token)}"
    to = f"<sip:{draw(_token.filter(lambda t: '%' not in t))}@{draw(_host)}>"
    body = draw(st.binary(max_size=64))
    lines = []
    if draw(st.booleans()):
        lines.append("Via: " + ", ".join(vias))
    else:
        lines += [f"Via: {v}" for v in vias]
    lines += [f"From: {frm}", f"To: {to}", f"Call-ID: {draw(_token)}@{host}",
              f"CSeq: {draw(st.integers(0, 2**31 - 1))} {method}", f"Max-Forwards: {draw(st.integers(0, 255))}"]
    lines += [f"X-Extra-{i}: {draw(_token)}" for i in range(draw(st.integers(0, 3)))]
    order = draw(st.permutations(lines))
    head = f"{method} sip:{user}@{host} SIP/2.0\r\n" + "\r\n".join(order) + f"\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@settings(max_examples=300, deadline=None)
@given(valid_messages())
def test_generated_messages_read_alike(data: bytes) -> None:
    ours = assert_same(data)
    assert SipMessage.parse(bytes(ours)) == ours

"""answer_malformed: a 4xx where the request can be answered, None where it cannot."""

from actors.sip.headers import SipParseError
from actors.sip.malformed import answer_malformed
from actors.sip.message import SipMessage

HEAD = (
    b"INVITE sip:bob@ims.example SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK2\r\n"
    b"f: <sip:a@ims.example>;tag=a\r\n"
    b"t: <sip:bob@ims.example>\r\n"
    b"i: abc@x\r\n"
    b"CSeq: 7 INVITE\r\n"
)


def test_answer_copies_the_mandatory_headers_including_compact_forms() -> None:
    data = HEAD + b"Content-Length: 50\r\n\r\nshort"
    answer = answer_malformed(data, SipParseError(400, "body shorter than Content-Length"))
    response = SipMessage.parse(answer)
    assert (response.status, response.reason) == (400, "body shorter than Content-Length")
    assert response.get_all("Via") == [
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1",
        "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK2",
    ]
    assert response.call_id == "abc@x" and response.cseq == (7, "INVITE")
    assert response.from_tag == "a"


def test_status_hint_is_kept() -> None:
    answer = answer_malformed(HEAD + b"\r\n", SipParseError(505, "SIP/3.0 not supported"))
    assert SipMessage.parse(answer).status == 505


def test_responses_and_requests_missing_headers_are_not_answered() -> None:
    error = SipParseError(400, "x")
    assert answer_malformed(b"SIP/2.0 200 OK\r\n" + HEAD.split(b"\r\n", 1)[1] + b"\r\n", error) is None
    without_call_id = HEAD.replace(b"i: abc@x\r\n", b"")
    assert answer_malformed(without_call_id + b"\r\n", error) is None
    assert answer_malformed(b"\x00\x01\x02", error) is None
    assert answer_malformed(b"", error) is None


def test_reason_cannot_inject_header_lines() -> None:
    answer = answer_malformed(HEAD + b"\r\n", SipParseError(400, "bad\r\nX-Injected: 1"))
    assert b"X-Injected: 1\r\n" not in answer.split(b"\r\n", 1)[1]


def test_a_copied_value_with_a_bare_cr_is_not_answered() -> None:
    data = HEAD.replace(b"i: abc@x", b"i: abc\rX-Evil: 1@x") + b"Content-Length: 9\r\n\r\n"
    assert answer_malformed(data, SipParseError(400, "x")) is None

"""SipMessage: parsing rules, bad input, editing, serialisation (actors/sip/message.py)."""

from __future__ import annotations

import sys

import pytest

from actors.sip import headers as H
from actors.sip.message import (
    MAX_MESSAGE_SIZE,
    MAX_URI_LENGTH,
    REASON_PHRASES,
    SipMessage,
    SipParseError,
    canonical_name,
)

SDP = (
    b"v=0\r\no=ue 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def invite(*, body: bytes = SDP, extra: str = "", cl: str | None = None, start: str | None = None) -> bytes:
    head = (
        (start or "INVITE sip:bob@ims.example SIP/2.0") + "\r\n"
        "Via: SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bKtop;rport\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKlow;received=10.0.0.1\r\n"
        "Max-Forwards: 70\r\n"
        "Record-Route: <sip:10.0.0.2:5062;lr>\r\n"
        "Route: <sip:10.0.0.3:5064;lr>\r\n"
        'From: "Alice" <sip:alice@ims.example>;tag=a1\r\n'
        "To: <sip:bob@ims.example>\r\n"
        "Call-ID: c1@10.0.0.1\r\n"
        "CSeq: 7 INVITE\r\n"
        "Contact: <sip:alice@10.0.0.1:5060>\r\n"
        "Content-Type: application/sdp\r\n" + extra
    )
    head += f"Content-Length: {len(body) if cl is None else cl}\r\n" if cl != "omit" else ""
    return head.encode() + b"\r\n" + body


RESPONSE = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bKtop\r\n"
    b"From: <sip:alice@ims.example>;tag=a1\r\n"
    b"To: <sip:bob@ims.example>;tag=b2\r\n"
    b"Call-ID: c1@10.0.0.1\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def reject(data: bytes, status: int = 400, **kw) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        SipMessage.parse(data, **kw)
    assert info.value.status == status, info.value.reason
    return info.value


# --- parsing what is valid --------------------------------------------------------------


def test_parse_request_fields() -> None:
    m = SipMessage.parse(invite())
    assert m.is_request
    assert (m.method, m.uri, m.status, m.reason) == ("INVITE", "sip:bob@ims.example", None, None)
    assert m.body == SDP
    assert m.call_id == "c1@10.0.0.1"
    assert m.cseq == (7, "INVITE")
    assert m.branch == "z9hG4bKtop"
    assert m.from_tag == "a1" and m.to_tag is None
    assert m.max_forwards == 70
    assert m.top_via == H.Via("UDP", "10.0.0.2", 5062, {"branch": "z9hG4bKtop", "rport": None})
    assert [n for n, _ in m.headers] == [
        "Via", "Via", "Max-Forwards", "Record-Route", "Route", "From", "To", "Call-ID", "CSeq",
        "Contact", "Content-Type", "Content-Length",
    ]


def test_parse_response_fields() -> None:
    m = SipMessage.parse(RESPONSE)
    assert not m.is_request
    assert (m.method, m.uri, m.status, m.reason) == (None, None, 180, "Ringing")
    assert m.to_tag == "b2" and m.from_tag == "a1" and m.body == b""


def test_serialise_is_byte_exact_for_canonical_input() -> None:
    for data in (invite(), RESPONSE):
        assert bytes(SipMessage.parse(data)) == data


def test_bare_lf_and_mixed_line_ends_parse_and_serialise_with_crlf() -> None:
    crlf = invite()
    head, _, body = crlf.partition(b"\r\n\r\n")
    lf = head.replace(b"\r\n", b"\n") + b"\n\n" + body
    mixed = head.replace(b"\r\n", b"\n", 3) + b"\r\n\r\n" + body
    for data in (lf, mixed):
        m = SipMessage.parse(data)
        assert m == SipMessage.parse(crlf)
        assert bytes(m) == crlf
    # an empty line written as a bare LF after CRLF lines ends the header section too
    m = SipMessage.parse(head + b"\r\n\n" + body)
    assert m.body == SDP


def test_leading_crlf_keepalives_are_skipped() -> None:
    assert SipMessage.parse(b"\r\n\r\n" + RESPONSE).status == 180
    reject(b"\r\n\r\n")
    reject(b"")


def test_header_folding_is_unfolded() -> None:
    data = invite(extra="Subject: one\r\n  two\r\n\tthree\r\nX-Empty:\r\n folded\r\n")
    m = SipMessage.parse(data)
    assert m.get("Subject") == "one two three"
    assert m.get("x-empty") == "folded"
    reject(b"INVITE sip:a@b SIP/2.0\r\n continuation-first\r\n\r\n")


def test_compact_forms_and_case_are_canonicalised() -> None:
    data = (
        b"OPTIONS sip:b@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:a@example.com>;tag=1\r\nt: sip:b@example.com\r\n"
        b"i: x@y\r\ncseq: 1 OPTIONS\r\nMAX-FORWARDS: 3\r\nm: <sip:a@h>\r\nk: 100rel\r\n"
        b"s: hi\r\nc: text/plain\r\no: presence\r\nu: refer\r\nr: <sip:x@y>\r\nx: 90\r\n"
        b"e: gzip\r\nX-Custom-Thing: 1\r\nl: 0\r\n\r\n"
    )
    m = SipMessage.parse(data)
    assert [n for n, _ in m.headers] == [
        "Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Contact", "Supported", "Subject",
        "Content-Type", "Event", "Allow-Events", "Refer-To", "Session-Expires", "Content-Encoding",
        "X-Custom-Thing", "Content-Length",
    ]
    assert m.get("i") == m.get("CALL-id") == "x@y"
    assert m.get("x-custom-thing") == m.get("X-CUSTOM-THING") == "1"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("cseq") == "CSeq" and canonical_name("P-Foo") == "P-Foo"


def test_lws_before_colon_and_around_values() -> None:
    m = SipMessage.parse(invite(extra="Subject   :   padded   \r\nX-A\t:\tb\r\n"))
    assert m.get("Subject") == "padded" and m.get("X-A") == "b"


def test_noreason_and_utf8_reason() -> None:
    m = SipMessage.parse(RESPONSE.replace(b"180 Ringing", b"100 "))
    assert (m.status, m.reason) == (100, "")
    assert bytes(m).startswith(b"SIP/2.0 100 \r\n")
    m = SipMessage.parse(RESPONSE.replace(b"180 Ringing", "200 ок".encode()))
    assert m.reason == "ок"
    assert SipMessage.parse(RESPONSE.replace(b"180 Ringing", b"180")).reason == ""


def test_version_is_case_insensitive() -> None:
    assert SipMessage.parse(invite(start="INVITE sip:bob@ims.example sip/2.0")).method == "INVITE"


def test_max_forwards_is_optional_and_leading_zeros_are_fine() -> None:
    data = invite().replace(b"Max-Forwards: 70\r\n", b"")
    assert SipMessage.parse(data).max_forwards is None
    assert SipMessage.parse(invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 0070")).max_forwards == 70


def test_content_length_missing_takes_the_rest_and_longer_body_is_truncated() -> None:
    assert SipMessage.parse(invite(cl="omit")).body == SDP
    m = SipMessage.parse(invite(cl="10"))
    assert m.body == SDP[:10]
    assert bytes(m).endswith(b"Content-Length: 10\r\n\r\n" + SDP[:10])
    assert SipMessage.parse(invite(body=b"", cl="0") + b"trailing junk").body == b""


def test_identical_duplicate_content_length_is_tolerated_once() -> None:
    data = invite(extra=f"Content-Length: {len(SDP)}\r\n")
    m = SipMessage.parse(data)
    assert m.get_all("Content-Length") == [str(len(SDP))]
    assert bytes(m).count(b"Content-Length") == 1


def test_non_utf8_header_bytes_are_kept_byte_for_byte() -> None:
    head, _, body = invite().partition(b"\r\n\r\n")
    raw = head + b"\r\nX-Raw: \xff\xfe latin-1 \xe9" + b"\r\n\r\n" + body
    m = SipMessage.parse(raw)
    assert m.get("X-Raw") == "\udcff\udcfe latin-1 \udce9"
    assert bytes(m) == raw
    utf8 = invite(extra="Subject: Grüße 大\r\n")
    assert SipMessage.parse(utf8).get("subject") == "Grüße 大"
    assert bytes(SipMessage.parse(utf8)) == utf8


def test_binary_body_with_nul_and_cr_is_untouched() -> None:
    body = bytes(range(256)) * 2 + b"\r\r\n\x00"
    assert SipMessage.parse(invite(body=body)).body == body


def test_escaped_nul_in_quoted_string_is_accepted() -> None:
    data = invite().replace(b'"Alice"', b'"A\\\x00B"')
    assert SipMessage.parse(data).get("From").startswith('"A\\\x00B"')


def test_bytearray_and_memoryview_input() -> None:
    assert SipMessage.parse(bytearray(RESPONSE)).status == 180
    assert SipMessage.parse(memoryview(RESPONSE)).status == 180
    with pytest.raises(TypeError):
        SipMessage.parse(RESPONSE.decode())  # type: ignore[arg-type]


def test_unknown_request_uri_scheme_parses_and_parse_uri_answers_416() -> None:
    m = SipMessage.parse(invite(start="INVITE nobodyKnowsThisScheme:opaque SIP/2.0"))
    with pytest.raises(SipParseError) as info:
        H.parse_uri(m.uri)
    assert info.value.status == 416


def test_tel_request_uri_parses() -> None:
    m = SipMessage.parse(invite(start="INVITE tel:+15551234;phone-context=ims.example SIP/2.0"))
    assert H.parse_uri(m.uri).user == "+15551234"


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 10, 30, 100, 200, 300, 400, 450])
def test_truncated_messages_are_rejected(cut: int) -> None:
    data = invite()
    reject(data[: len(data) - cut])


def test_truncated_inside_headers_is_rejected() -> None:
    data = invite()
    for n in (5, 40, 120, data.find(b"\r\n\r\n") + 2):
        reject(data[:n])


@pytest.mark.parametrize(
    "start",
    [
        "INVITE",
        "INVITE sip:bob@ims.example",
        "INVITE  sip:bob@ims.example SIP/2.0",
        "INVITE sip:bob@ims.example SIP/2.0 ",
        " INVITE sip:bob@ims.example SIP/2.0",
        "INVITE sip:bob@ims.example\tSIP/2.0",
        "INVITE <sip:bob@ims.example> SIP/2.0",
        "INVITE sip:bob@ims.example; lr SIP/2.0",
        "INVITE bob@ims.example SIP/2.0",
        "INVITE :bob SIP/2.0",
        "INV@TE sip:bob@ims.example SIP/2.0",
        "INVITE sip:bob@ims.example HTTP/1.1",
        "INVITE sip:bob@ims.example SIP/2",
        "INVITE sip:bob@ims.example?Route=%3Csip:x%3E SIP/2.0",
        'INVITE sip:bob"@ims.example SIP/2.0',
    ],
)
def test_bad_request_line(start: str) -> None:
    reject(invite(start=start))


@pytest.mark.parametrize("version", ["SIP/3.0", "SIP/2.1", "SIP/1.0", "sip/7.0"])
def test_unknown_version_is_505(version: str) -> None:
    reject(invite(start=f"INVITE sip:bob@ims.example {version}"), 505)
    reject(RESPONSE.replace(b"SIP/2.0 180", f"{version} 180".encode()), 505)


@pytest.mark.parametrize("code", [b"99", b"1800", b"abc", b"", b"099", b"700", b"999", b"18O", b"\xd9\xa1\xd9\xa8\xd9\xa0"])
def test_bad_status_code(code: bytes) -> None:
    reject(RESPONSE.replace(b"180 Ringing", code + b" Ringing"))


@pytest.mark.parametrize("name", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_header_is_400_naming_it(name: str) -> None:
    data = invite()
    lines = [ln for ln in data.split(b"\r\n") if not ln.startswith(name.encode() + b":")]
    err = reject(b"\r\n".join(lines))
    assert name in err.reason
    assert err.message is not None and err.message.method == "INVITE"
    lines = [ln for ln in RESPONSE.split(b"\r\n") if not ln.startswith(name.encode() + b":")]
    assert name in reject(b"\r\n".join(lines)).reason


@pytest.mark.parametrize("name", ["From", "To", "Call-ID", "CSeq", "Max-Forwards"])
def test_duplicate_single_instance_header_is_400(name: str) -> None:
    value = {"From": "<sip:x@y>;tag=2", "To": "<sip:x@y>", "Call-ID": "other", "CSeq": "7 INVITE", "Max-Forwards": "5"}
    assert name in reject(invite(extra=f"{name}: {value[name]}\r\n")).reason


@pytest.mark.parametrize(
    "cseq",
    ["7 BYE", "7", "INVITE", "x INVITE", "-1 INVITE", "2147483648 INVITE", "99999999999 INVITE", "7 INVITE extra",
     "7 INV@TE", "\u0661 INVITE"],
)
def test_bad_cseq(cseq: str) -> None:
    reject(invite().replace(b"CSeq: 7 INVITE", f"CSeq: {cseq}".encode()))


def test_cseq_method_mismatch_names_both() -> None:
    err = reject(invite().replace(b"CSeq: 7 INVITE", b"CSeq: 7 OPTIONS"))
    assert "OPTIONS" in err.reason and "INVITE" in err.reason


def test_cseq_accepts_tabs_and_leading_zeros() -> None:
    assert SipMessage.parse(invite().replace(b"CSeq: 7 INVITE", b"CSeq: 007\t INVITE")).cseq == (7, "INVITE")
    assert SipMessage.parse(invite().replace(b"CSeq: 7 INVITE", b"CSeq: 2147483647 INVITE")).cseq == (2147483647, "INVITE")


@pytest.mark.parametrize("mf", ["256", "-1", "abc", "", "1 2", "99999999999999999999"])
def test_bad_max_forwards(mf: str) -> None:
    reject(invite().replace(b"Max-Forwards: 70", f"Max-Forwards: {mf}".encode()))


@pytest.mark.parametrize("cl", ["-1", "abc", "1.5", "", "0x10", " 1 2", "+5", "\u0665"])
def test_bad_content_length(cl: str) -> None:
    reject(invite(cl=cl))


def test_content_length_larger_than_body_is_400() -> None:
    err = reject(invite(cl=str(len(SDP) + 1)))
    assert "Content-Length" in err.reason


def test_content_length_larger_than_max_size_is_413() -> None:
    reject(invite(cl="70000"), 413)
    reject(invite(cl="9" * 5000), 413)
    data = invite(cl="9999")
    reject(data, 413, max_size=len(data))


def test_conflicting_content_length_is_400() -> None:
    reject(invite(extra="Content-Length: 3\r\n"))


def test_oversize_is_513_and_max_size_is_configurable() -> None:
    big = invite(body=b"x" * (MAX_MESSAGE_SIZE + 1))
    reject(big, 513)
    assert SipMessage.parse(big, max_size=200_000).body == b"x" * (MAX_MESSAGE_SIZE + 1)
    reject(invite(), 513, max_size=100)


def test_request_uri_too_long_is_414() -> None:
    reject(invite(start=f"INVITE sip:{'a' * MAX_URI_LENGTH}@ims.example SIP/2.0"), 414)


def test_nul_bytes_in_headers_are_rejected() -> None:
    reject(invite(extra="X-Nul: a\x00b\r\n"))
    reject(invite().replace(b"Call-ID: c1", b"Call-ID: c\x001"))
    reject(b"\x00" + invite())


def test_bare_cr_in_headers_is_rejected() -> None:
    reject(invite(extra="X-Cr: a\rb\r\n"))
    reject(invite(extra="X-Cr: a\r\r\n"))


def test_header_line_without_colon_is_rejected() -> None:
    err = reject(invite(extra="NoColonHere\r\n"))
    assert "colon" in err.reason
    reject(invite(extra="Via\r\n"))


@pytest.mark.parametrize("name", ["Bad Name", "Bad@Name", "", "Näme", "X(y)"])
def test_bad_header_name_is_rejected(name: str) -> None:
    reject(invite(extra=f"{name}: v\r\n"))


@pytest.mark.parametrize(
    "value",
    [
        '"Unterminated <sip:a@b>',
        "Bell, Alexander <sip:a@b>",
        "< sip:a@b >",
        "<sip:a@b",
        "<sip:a@b>junk",
        "<sip:a@b>;;tag=1",
        "<sip:a@b>;tag=",
        "sip:a@b?x=y",
        "",
    ],
)
def test_bad_from_is_rejected(value: str) -> None:
    err = reject(invite().replace(b'"Alice" <sip:alice@ims.example>;tag=a1', value.encode()))
    assert "From" in err.reason


@pytest.mark.parametrize(
    "value",
    [
        '"Alice \\"A\\"" <sip:alice@ims.example>;tag=a1',
        "Alice Smith <sip:alice@ims.example>;tag=a1",
        "sip:alice@ims.example;tag=a1",
        "<sip:alice@ims.example;transport=udp>;tag=a1;x",
        "<isbn:2983792873>;tag=1",
        "tel:+1555;tag=1",
        '<sip:alice@ims.example>;tag=a1;p="quoted;value"',
        "Alice<sip:alice@ims.example> ; tag = a1",
    ],
)
def test_unusual_but_valid_from(value: str) -> None:
    m = SipMessage.parse(invite().replace(b'"Alice" <sip:alice@ims.example>;tag=a1', value.encode()))
    assert m.get("From") == value


@pytest.mark.parametrize(
    "via",
    [
        "SIP/2.0/UDP 10.0.0.2:5062;;branch=z9hG4bKx",
        "SIP/2.0/UDP 10.0.0.2:99999;branch=z9hG4bKx",
        "SIP/2.0/UDP",
        "SIP/2.0 10.0.0.2",
        "HTTP/1.1/UDP 10.0.0.2",
        "SIP/2.0/UDP 10.0.0.2;branch=",
        "SIP/2.0/UDP [::1;branch=z9hG4bKx",
    ],
)
def test_bad_top_via_is_rejected(via: str) -> None:
    assert "Via" in reject(invite().replace(b"SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bKtop;rport", via.encode())).reason


def test_top_via_with_other_version_is_505() -> None:
    reject(invite().replace(b"SIP/2.0/UDP 10.0.0.2:5062", b"SIP/3.0/UDP 10.0.0.2:5062"), 505)


def test_too_many_headers() -> None:
    reject(invite(extra="X-A: 1\r\n" * 300))


def test_parse_error_is_a_value_error_with_status_and_reason() -> None:
    err = reject(invite(cl="-1"))
    assert isinstance(err, ValueError)
    assert str(err).startswith("400 ")
    assert err.message is not None and err.message.call_id == "c1@10.0.0.1"
    assert reject(b"garbage\r\n\r\n").message is None


# --- editing ------------------------------------------------------------------------------


def test_get_is_case_insensitive_and_first_value_of_lists() -> None:
    m = SipMessage.parse(invite(extra="Route: <sip:r2;lr>, <sip:r3;lr>\r\n"))
    assert m.get("via") == m.get("v") == "SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bKtop;rport"
    assert m.get("Nope") is None
    m.set("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2")
    assert m.get("Via") == "SIP/2.0/UDP a;branch=z9hG4bK1" and m.branch == "z9hG4bK1"


def test_get_all_splits_comma_lists_respecting_quotes_and_brackets() -> None:
    m = SipMessage.parse(
        invite(
            extra='Contact: "Doe, John" <sip:j@h;a=1,2>;q=0.5, <sip:k@h>\r\n'
            "Route: <sip:r2;lr>,<sip:r3;lr> , <sip:r4>\r\n"
            'WWW-Authenticate: Digest realm="a", nonce="b"\r\n'
        )
    )
    assert m.get_all("Route") == ["<sip:10.0.0.3:5064;lr>", "<sip:r2;lr>", "<sip:r3;lr>", "<sip:r4>"]
    assert m.get_all("m") == ["<sip:alice@10.0.0.1:5060>", '"Doe, John" <sip:j@h;a=1,2>;q=0.5', "<sip:k@h>"]
    assert m.get_all("WWW-Authenticate") == ['Digest realm="a", nonce="b"']
    assert len(m.get_all("Via")) == 2
    assert m.get_all("Nope") == []


def test_set_replaces_all_at_first_position() -> None:
    m = SipMessage.parse(invite())
    m.set("via", "SIP/2.0/UDP x;branch=z9hG4bKnew")
    assert m.get_all("Via") == ["SIP/2.0/UDP x;branch=z9hG4bKnew"]
    assert m.headers[0] == ("Via", "SIP/2.0/UDP x;branch=z9hG4bKnew")
    m.set("Max-Forwards", 69)  # type: ignore[arg-type]
    assert m.max_forwards == 69 and m.headers[1] == ("Max-Forwards", "69")
    m.set("X-New", "1")
    assert m.headers[-1] == ("X-New", "1")
    m.set("x-new", "2")
    assert m.get_all("X-New") == ["2"]


def test_add_first_and_last() -> None:
    m = SipMessage.parse(invite())
    m.add("Record-Route", "<sip:me;lr>", first=True)
    m.add("Via", "SIP/2.0/UDP me;branch=z9hG4bKme", first=True)
    assert m.headers[0] == ("Via", "SIP/2.0/UDP me;branch=z9hG4bKme")
    assert m.get_all("Record-Route") == ["<sip:me;lr>", "<sip:10.0.0.2:5062;lr>"]
    m.add("Record-Route", "<sip:last;lr>")
    assert m.get_all("Record-Route")[-1] == "<sip:last;lr>"
    names = [n for n, _ in m.headers]
    assert names.index("Record-Route") < names.index("Route")
    m.add("Subject", "new")
    assert m.headers[-1] == ("Subject", "new")
    m.add("Path", "<sip:p;lr>", first=True)
    assert m.headers[0] == ("Path", "<sip:p;lr>")


def test_add_and_set_reject_header_injection() -> None:
    m = SipMessage.parse(invite())
    for bad in ("a\r\nX-Evil: 1", "a\nb", "a\rb", "a\x00b"):
        with pytest.raises(ValueError):
            m.add("Subject", bad)
        with pytest.raises(ValueError):
            m.set("Subject", bad)


def test_remove() -> None:
    m = SipMessage.parse(invite(extra="X-Foo: 1\r\nx-foo: 2\r\n"))
    m.remove("v")
    m.remove("X-FOO")
    assert m.get("Via") is None and m.get("x-foo") is None
    m.remove("Not-There")


def test_pop_first_splits_comma_lists() -> None:
    m = SipMessage.parse(invite().replace(b"Via: SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bKtop;rport\r\nVia: ",
                                          b"Via: SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bKtop;rport, "))
    assert len(m.get_all("Via")) == 2
    assert m.pop_first("Via") == "SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bKtop;rport"
    assert m.get_all("Via") == ["SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKlow;received=10.0.0.1"]
    assert m.branch == "z9hG4bKlow"
    assert m.pop_first("Via") is not None
    assert m.pop_first("Via") is None
    m = SipMessage.parse(invite(extra='Contact: "a, b" <sip:x>, <sip:y>\r\n'))
    assert m.pop_first("Contact") == "<sip:alice@10.0.0.1:5060>"
    assert m.pop_first("Contact") == '"a, b" <sip:x>'
    assert m.pop_first("Contact") == "<sip:y>"
    assert m.pop_first("X-None") is None
    m = SipMessage.parse(invite(extra="X-Thing: a, b\r\n"))
    assert m.pop_first("x-thing") == "a, b"  # unknown headers are not split


def test_the_proxy_hop() -> None:
    m = SipMessage.parse(invite())
    assert m.pop_first("Via") == "SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bKtop;rport"
    m.set("Max-Forwards", str(m.max_forwards - 1))
    m.add("Record-Route", "<sip:10.0.0.9:5070;lr>", first=True)
    branch = H.new_branch()
    m.add("Via", f"SIP/2.0/UDP 10.0.0.9:5070;branch={branch}", first=True)
    out = SipMessage.parse(bytes(m))
    assert out == m
    assert out.branch == branch and out.max_forwards == 69
    assert out.get_all("Record-Route") == ["<sip:10.0.0.9:5070;lr>", "<sip:10.0.0.2:5062;lr>"]
    assert out.get_all("Via")[1].endswith("branch=z9hG4bKlow;received=10.0.0.1")
    assert out.body == SDP


def test_serialisation_always_writes_a_correct_content_length() -> None:
    m = SipMessage.parse(invite())
    m.body = b"new body"
    assert b"\r\nContent-Length: 8\r\n\r\nnew body" in bytes(m)
    m.remove("Content-Length")
    assert bytes(m).endswith(b"Content-Length: 8\r\n\r\nnew body")
    m.headers.insert(0, ("Content-Length", "999"))
    m.headers.append(("Content-Length", "8"))
    out = bytes(m)
    assert out.count(b"Content-Length") == 1 and SipMessage.parse(out).body == b"new body"
    assert SipMessage.parse(out).headers[0] == ("Content-Length", "8")
    r = SipMessage.response(200)
    assert bytes(r) == b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_copy_is_independent() -> None:
    m = SipMessage.parse(invite())
    c = m.copy()
    assert c == m and c is not m and c.headers is not m.headers
    c.pop_first("Via")
    assert c != m and len(m.get_all("Via")) == 2


def _fresh(m: SipMessage) -> tuple:
    """The derived values computed from scratch (a new message, no caches)."""
    f = SipMessage(m.method, m.uri, m.status, m.reason, list(m.headers), m.body)
    return (f.cseq, f.branch, f.call_id, f.from_tag, f.to_tag)


def _derived(m: SipMessage) -> tuple:
    return (m.cseq, m.branch, m.call_id, m.from_tag, m.to_tag)


def test_cached_derived_values_follow_every_edit() -> None:
    m = SipMessage.parse(invite())
    assert _derived(m) == ((7, "INVITE"), "z9hG4bKtop", "c1@10.0.0.1", "a1", None)
    edits = [
        lambda: m.set("CSeq", "8 INVITE"),
        lambda: m.pop_first("Via"),
        lambda: m.add("Via", "SIP/2.0/UDP me;branch=z9hG4bKme", first=True),
        lambda: m.set("To", "<sip:bob@ims.example>;tag=t9"),
        lambda: m.remove("From"),
        lambda: m.add("From", "<sip:carol@x>;tag=c3"),
        lambda: m.set("call-id", "other@x"),
        lambda: m.add("CSeq", "1 BYE", first=True),  # a second CSeq above the first
        lambda: m.remove("CSeq"),
        lambda: m.decrement_max_forwards(),
        # direct edits of the list: replace, insert above, delete, reassign
        lambda: m.headers.__setitem__(0, ("Via", "SIP/2.0/UDP d;branch=z9hG4bKdirect")),
        lambda: m.headers.insert(0, ("Via", "SIP/2.0/UDP e;branch=z9hG4bKabove, SIP/2.0/UDP f")),
        lambda: m.headers.__delitem__(0),
        lambda: setattr(m, "headers", [h for h in m.headers if h[0] != "To"]),
        lambda: m.headers.append(("To", "<sip:dave@x>;tag=d4")),
    ]
    for edit in edits:
        _derived(m)  # fill the caches, then edit
        edit()
        assert _derived(m) == _fresh(m)
    assert _derived(m) == (None, "z9hG4bKdirect", "other@x", "c3", "d4")


def test_copy_and_make_response_keep_derived_values_right() -> None:
    m = SipMessage.parse(invite())
    before = _derived(m)
    c = m.copy()
    assert _derived(c) == before
    c.pop_first("Via")
    c.set("CSeq", "9 INVITE")
    assert _derived(c) == _fresh(c) and _derived(m) == before == _fresh(m)
    r = m.make_response(180, to_tag="b2")
    assert _derived(r) == ((7, "INVITE"), "z9hG4bKtop", "c1@10.0.0.1", "a1", "b2")
    assert [n for n, _ in r.headers] == ["Via", "Via", "From", "To", "Call-ID", "CSeq"]


def test_equality_ignores_content_length_only() -> None:
    a = SipMessage.parse(invite())
    b = SipMessage.parse(invite(cl="omit"))
    assert a == b
    assert a != SipMessage.parse(invite(extra="X: 1\r\n"))
    assert a != "not a message"
    with pytest.raises(TypeError):
        hash(a)


def test_request_and_response_constructors() -> None:
    r = SipMessage.request(
        "OPTIONS",
        "sip:bob@ims.example",
        [("v", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("f", "<sip:a@h>;tag=1"), ("t", "<sip:bob@ims.example>"),
         ("call-id", "x"), ("cseq", "1 OPTIONS"), ("max-forwards", "70")],
        b"hi",
    )
    assert [n for n, _ in r.headers] == ["Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards"]
    assert SipMessage.parse(bytes(r)) == r
    assert repr(r).startswith("<SipMessage 'OPTIONS sip:bob@ims.example SIP/2.0'")
    for status, phrase in ((100, "Trying"), (180, "Ringing"), (200, "OK"), (404, "Not Found"),
                           (481, "Call/Transaction Does Not Exist"), (503, "Service Unavailable")):
        assert SipMessage.response(status).reason == phrase == REASON_PHRASES[status]
    assert SipMessage.response(299).reason == ""
    assert SipMessage.response(200, "Fine").reason == "Fine"
    with pytest.raises(ValueError):
        SipMessage.response(99)
    with pytest.raises(ValueError):
        SipMessage.response(200, "a\r\nb")
    with pytest.raises(ValueError):
        SipMessage.request("BAD METHOD", "sip:a@b")
    with pytest.raises(ValueError):
        SipMessage.request("INVITE", "sip:a b")
    with pytest.raises(ValueError):
        SipMessage.request("INVITE", "sip:a@b", [("X", "a\r\nb")])


def test_make_response_copies_rfc3261_8_2_6_headers() -> None:
    req = SipMessage.parse(invite())
    resp = req.make_response(180, to_tag="b9")
    assert (resp.status, resp.reason, resp.body) == (180, "Ringing", b"")
    assert resp.get_all("Via") == req.get_all("Via")
    assert resp.get("From") == req.get("From")
    assert resp.get("To") == "<sip:bob@ims.example>;tag=b9" and resp.to_tag == "b9"
    assert (resp.call_id, resp.cseq) == (req.call_id, req.cseq)
    assert resp.get("Record-Route") is None and resp.get("Contact") is None
    assert [n for n, _ in resp.headers] == ["Via", "Via", "From", "To", "Call-ID", "CSeq"]
    # a To that already has a tag keeps it
    ok = SipMessage.parse(bytes(resp)).make_response(200, "Fine", to_tag="other")
    assert ok.to_tag == "b9" and ok.reason == "Fine"
    assert SipMessage.parse(bytes(req.make_response(100))) == req.make_response(100)


def test_tags_in_quoted_display_names_and_params() -> None:
    m = SipMessage.parse(invite().replace(b'"Alice" <sip:alice@ims.example>;tag=a1',
                                          b'"tag=fake;x" <sip:alice@ims.example>;Tag=real'))
    assert m.from_tag == "real"
    m = SipMessage.parse(invite().replace(b"To: <sip:bob@ims.example>", b"To: sip:bob@ims.example;tag=t"))
    assert m.to_tag == "t"


def test_branch_parsing_tolerates_lws_and_case() -> None:
    m = SipMessage.parse(invite().replace(b";branch=z9hG4bKtop;rport", b" ; rport ; BRANCH = z9hG4bKtop"))
    assert m.branch == "z9hG4bKtop"


def test_codec_does_not_import_asyncio() -> None:
    """The codec modules import no asyncio (the ``actors`` package itself may)."""
    import pathlib
    import subprocess

    root = pathlib.Path(__file__).parents[2]
    code = (
        "import sys, types\n"
        "for name, path in (('actors', 'actors'), ('actors.sip', 'actors/sip')):\n"
        "    mod = types.ModuleType(name); mod.__path__ = [path]; sys.modules[name] = mod\n"
        "import actors.sip.message, actors.sip.headers\n"
        "assert 'asyncio' not in sys.modules, 'asyncio imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(root))


def test_decrement_max_forwards() -> None:
    m = SipMessage.parse(invite())
    assert m.decrement_max_forwards() == 69 and m.max_forwards == 69
    assert [n for n, _ in m.headers].count("Max-Forwards") == 1
    m.set("Max-Forwards", "1")
    assert m.decrement_max_forwards() == 0
    with pytest.raises(SipParseError) as info:
        m.decrement_max_forwards()
    assert info.value.status == 483 and info.value.message is m
    m.remove("Max-Forwards")
    assert m.decrement_max_forwards() == 70 and m.max_forwards == 70
    m.set("Max-Forwards", "x")
    with pytest.raises(SipParseError):
        m.decrement_max_forwards()


def test_has_and_contains() -> None:
    m = SipMessage.parse(invite(extra="X-Foo: 1\r\n"))
    assert m.has("v") and "Record-Route" in m and "x-foo" in m and "X-Bar" not in m


@pytest.mark.parametrize(
    "extra",
    [
        "X: a\r\n" + " b\r\n" * 15000,  # many continuation lines
        "Route: " + "," * 55000 + "\r\n",  # many empty list elements
        'Route: ""' + "," * 55000 + "\r\n",
        "Contact: " + '"a",' * 13000 + "\r\n",
        "Contact: <sip:a>" + ';a="b"' * 8000 + "\r\n",
        "X: " + "\\\x00" * 25000 + "\r\n",
    ],
    ids=["folds", "commas", "quoted-commas", "quotes", "quoted-params", "escaped-nuls"],
)
def test_pathological_datagrams_cost_linear_time(extra: str) -> None:
    import time

    data = invite(body=b"", extra=extra)
    assert len(data) <= MAX_MESSAGE_SIZE
    t0 = time.perf_counter()
    try:
        m = SipMessage.parse(data)
    except SipParseError:
        return
    m.get_all("Route"), m.get_all("Contact"), m.get("Route"), m.pop_first("Route"), m.pop_first("Contact")
    bytes(m)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("status,reason", [(100, "Trying"), (180, None), (486, "Busy Here"), (200, "")])
def test_response_bytes_are_those_of_make_response(status: int, reason: str | None) -> None:
    req = SipMessage.parse(invite())
    assert req.response_bytes(status, reason) == bytes(req.make_response(status, reason))
    assert SipMessage(method="OPTIONS", uri="sip:x").response_bytes(100) == bytes(
        SipMessage(method="OPTIONS", uri="sip:x").make_response(100))
    with pytest.raises(ValueError):
        req.response_bytes(700)
    with pytest.raises(ValueError):
        req.response_bytes(100, "a\r\nb")

"""Structured header values: URIs, name-addrs, Via, parameters, identifiers (actors/sip/headers.py)."""

from __future__ import annotations

import pytest

from actors.sip import headers as H
from actors.sip.headers import (
    MAGIC_COOKIE,
    NameAddr,
    SipParseError,
    SipUri,
    Via,
    new_branch,
    new_call_id,
    new_tag,
    parse_name_addr,
    parse_params,
    parse_uri,
    parse_via,
    split_header_values,
)
from actors.sip.message import SipParseError as MessageSipParseError


def bad(fn, text: str, status: int = 400) -> None:
    with pytest.raises(SipParseError) as info:
        fn(text)
    assert info.value.status == status, info.value.reason


def test_one_error_class() -> None:
    assert SipParseError is MessageSipParseError
    assert issubclass(SipParseError, ValueError)
    e = SipParseError(416, "nope")
    assert (e.status, e.reason, e.message, str(e)) == (416, "nope", None, "416 nope")
    import pickle

    assert pickle.loads(pickle.dumps(e)).status == 416


# --- URIs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@ims.example",
        "sip:ims.example",
        "sips:alice@ims.example:5061",
        "sip:alice:secret@10.0.0.1:5060;transport=udp;lr",
        "sip:alice@[2001:db8::1]:5060;maddr=[2001:db8::2]",
        "sip:[::1]",
        "sip:+15551234;phone-context=ims.example@ims.example;user=phone",
        "sip:alice@ims.example?subject=project%20x&priority=urgent",
        "sip:alice@ims.example;lr?Route=%3Csip:x%3E&flag",
        "sip:sips%3Auser%40example.com@example.net",
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
        "tel:+1-201-555-0123",
        "tel:7042;phone-context=example.com",
        "SIP:Alice@IMS.example",
    ],
)
def test_uri_round_trips(text: str) -> None:
    assert str(parse_uri(text)) == text


def test_uri_fields() -> None:
    u = parse_uri("sip:alice:pw@10.0.0.1:5060;transport=udp;lr?h=v&x")
    assert u == SipUri("sip", "alice", "pw", "10.0.0.1", 5060, {"transport": "udp", "lr": None}, {"h": "v", "x": None})
    assert u.param("TRANSPORT") == "udp" and u.has_param("lr") and not u.has_param("maddr")
    assert u.host_port == "10.0.0.1:5060"
    u = parse_uri("sip:ims.example")
    assert (u.user, u.password, u.port, u.params, u.headers, u.host_port) == (None, None, None, {}, {}, "ims.example")
    u = parse_uri("sip:user;par=u%40example.net@example.com")
    assert (u.user, u.host) == ("user;par=u%40example.net", "example.com")
    t = parse_uri("tel:+15551234;phone-context=ims.example")
    assert (t.scheme, t.user, t.host, t.params) == ("tel", "+15551234", "", {"phone-context": "ims.example"})


@pytest.mark.parametrize(
    "text",
    ["", "sip", "sip:", "alice@example.com", "sip:alice@", "sip:alice@host:port", "sip:alice@host:70000",
     "sip:alice@ho st", "sip:al ice@host", "sip:@host", "sip:alice@host;", "sip:alice@host;=x",
     "sip:alice@host;a=", "sip:alice@[::1", "sip:alice@[zz]", "sip:alice@[::1]x", "sip:alice@host?",
     "sip:a<b@host", "1sip:a@b", "tel:", "tel:12 34", "sip:alice@host:", "sip:alice@host:123456"],
)
def test_bad_uri(text: str) -> None:
    bad(parse_uri, text)


@pytest.mark.parametrize("text", ["http://example.com", "mailto:a@b", "isbn:2983792873", "soap.beep://192.0.2.103:3002"])
def test_unsupported_scheme_is_416(text: str) -> None:
    bad(parse_uri, text, 416)


# --- name-addr -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '"Alice" <sip:alice@ims.example>;tag=1928301774',
        "<sip:alice@ims.example>",
        '"" <sip:alice@ims.example>',
        '"Doe, John \\"JD\\"" <sip:jd@ims.example;transport=udp>;tag=x;expires=60',
        '<sip:alice@ims.example>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";q=0.7',
        "<tel:+15551234>;tag=t",
    ],
)
def test_name_addr_round_trips(text: str) -> None:
    assert str(parse_name_addr(text)) == text


def test_name_addr_forms() -> None:
    a = parse_name_addr('"Alice" <sip:alice@ims.example>;tag=1')
    assert a == NameAddr("Alice", parse_uri("sip:alice@ims.example"), {"tag": "1"})
    assert a.tag == "1" and a.param("TAG") == "1"
    bare = parse_name_addr("sip:alice@ims.example;tag=1")
    assert bare.display is None and bare.uri == a.uri and bare.tag == "1"
    assert str(bare) == "<sip:alice@ims.example>;tag=1"
    tokens = parse_name_addr("Alice   Smith<sip:a@b>")
    assert tokens.display == "Alice Smith" and str(tokens) == '"Alice Smith" <sip:a@b>'
    lws = parse_name_addr('"J Rosenberg \\\\\\""  <sip:jdrosen@example.com> ; tag = 98asjd8')
    assert lws.display == 'J Rosenberg \\"' and lws.tag == "98asjd8"
    assert a.with_params(tag="2").tag == "2" and a.tag == "1"
    uri_params = parse_name_addr("<sip:a@b;lr>;x")
    assert uri_params.uri.params == {"lr": None} and uri_params.params == {"x": None}


@pytest.mark.parametrize(
    "text",
    ['"Unterminated <sip:a@b>', "Bell, Alexander <sip:a@b>", "< sip:a@b >", "<sip:a@b", "<sip:a@b>junk",
     "<sip:a@b>;", "<sip:a@b>;;tag=1", "<sip:a@b>;tag=", "sip:a@b?x=y", "sip:a@b,c", "", "   ",
     '"a" sip:a@b', "<>", "<sip:a@b>;tag=a b", '<sip:a@b>;p="x'],
)
def test_bad_name_addr(text: str) -> None:
    bad(parse_name_addr, text)
    bad(H.check_name_addr, text)


def test_check_name_addr_accepts_any_scheme() -> None:
    for text in ("isbn:2983792873", "<http://www.example.com>;tag=3", "<name:John_Smith>"):
        H.check_name_addr(text)
        bad(parse_name_addr, text, 416)


# --- Via --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds;rport",
        "SIP/2.0/TCP host.example.com",
        "SIP/2.0/UDP [2001:db8::9:1]:5060;branch=z9hG4bKx;received=2001:db8::9:255",
        "SIP/2.0/TLS h;branch=z9hG4bKx;received=10.0.0.1;rport=5062",
        "SIP/2.0/WSS abc.invalid;branch=z9hG4bKx",
    ],
)
def test_via_round_trips(text: str) -> None:
    assert str(parse_via(text)) == text


def test_via_fields_and_lws() -> None:
    v = parse_via("SIP  /   2.0 /UDP    192.0.2.2 : 5070  ;rport;  branch = z9hG4bKx")
    assert v == Via("UDP", "192.0.2.2", 5070, {"rport": None, "branch": "z9hG4bKx"})
    assert v.branch == "z9hG4bKx" and v.rport is None and v.received is None and v.sent_by == ("192.0.2.2", 5070)
    assert parse_via("sip/2.0/udp h;BRANCH=z9hG4bK1").branch == "z9hG4bK1"
    w = v.with_params(received="10.0.0.9", rport="5070")
    assert str(w) == "SIP/2.0/UDP 192.0.2.2:5070;rport=5070;branch=z9hG4bKx;received=10.0.0.9"


@pytest.mark.parametrize(
    "text",
    ["", "SIP/2.0", "SIP/2.0/UDP", "SIP/2.0/UDP ", "HTTP/2.0/UDP h", "SIP/2.0/UD@P h", "SIP/2.0/UDP h;;branch=x",
     "SIP/2.0/UDP h:99999", "SIP/2.0/UDP h;branch=", "SIP/2.0/UDP h i", "SIP/2.0/UDP 192.0.2.15;;,;,,"],
)
def test_bad_via(text: str) -> None:
    bad(parse_via, text)


def test_via_other_version_is_505() -> None:
    bad(parse_via, "SIP/3.0/UDP h", 505)


# --- parameters and lists ------------------------------------------------------------------------


def test_parse_params() -> None:
    assert parse_params("") == {}
    assert parse_params(";lr") == {"lr": None}
    assert parse_params("tag=1;lr;q=0.5") == {"tag": "1", "lr": None, "q": "0.5"}
    assert parse_params(' ; a = "x;y" ; b') == {"a": '"x;y"', "b": None}
    assert H.format_params({"a": "1", "lr": None}) == ";a=1;lr"
    for text in (";", "a;;b", "=x", "a=", 'a="x', "a b=c", "a=b c"):
        bad(parse_params, text)


def test_split_header_values() -> None:
    assert split_header_values("a, b,c ,, d") == ["a", "b", "c", "d"]
    assert split_header_values('"x, y" <sip:a,b@h>;p=1, <sip:c>') == ['"x, y" <sip:a,b@h>;p=1', "<sip:c>"]
    assert split_header_values('"esc \\" , still" <sip:a>, b') == ['"esc \\" , still" <sip:a>', "b"]
    assert split_header_values("") == [] and split_header_values("  one  ") == ["one"]
    bad(split_header_values, "<sip:a, b")
    bad(split_header_values, '"open, b')


def test_quote_helpers() -> None:
    assert H.quote_string('a "b" \\c') == '"a \\"b\\" \\\\c"'
    assert H.unquote_string(H.quote_string('a "b" \\c')) == 'a "b" \\c'


# --- identifiers ----------------------------------------------------------------------------------


def test_identifiers_are_fresh_tokens() -> None:
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000
    for b in branches:
        assert b.startswith(MAGIC_COOKIE) and MAGIC_COOKIE == "z9hG4bK"
        assert H.is_token(b) and len(b) > len(MAGIC_COOKIE) + 8
    tags = {new_tag() for _ in range(1000)}
    assert len(tags) == 1000 and all(H.is_token(t) for t in tags)
    cid = new_call_id("10.0.0.1")
    assert cid.endswith("@10.0.0.1") and " " not in cid and new_call_id() != new_call_id()
    assert "@" not in new_call_id()


def test_dataclasses_are_frozen() -> None:
    v = parse_via("SIP/2.0/UDP h;branch=z9hG4bK1")
    with pytest.raises(AttributeError):
        v.host = "x"  # type: ignore[misc]

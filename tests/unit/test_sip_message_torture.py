"""RFC 4475 torture messages (tests/unit/sip_torture/INDEX says which parse and which not)."""

from __future__ import annotations

import pathlib

import pytest

from actors.sip import headers as H
from actors.sip.message import SipMessage, SipParseError

HERE = pathlib.Path(__file__).parent / "sip_torture"


def _index() -> list[tuple[str, str, str]]:
    rows = []
    for line in (HERE / "INDEX").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, codec, status = line.split()[:3]
            rows.append((name, codec, status))
    return rows


INDEX = _index()
VALID = [name for name, codec, _ in INDEX if codec == "parse"]
INVALID = [(name, int(status)) for name, codec, status in INDEX if codec == "reject"]


def load(name: str) -> bytes:
    return (HERE / f"{name}.dat").read_bytes()


def test_index_covers_every_file_and_the_named_cases() -> None:
    files = {p.stem for p in HERE.glob("*.dat")}
    assert files == {name for name, _, _ in INDEX}
    for name in ("wsinv intmeth esc01 escnull esc02 lwsdisp longreq dblreq semiuri transports mpart01 "
                 "unreason noreason").split():
        assert name in VALID
    for name in ("badinv01 clerr scalar02 ncl quotbal ltgtruri lwsruri lwsstart trws escruri baddn "
                 "badvers mismatch01 insuf").split():
        assert name in dict(INVALID)
    for name in ("bcast", "bext01"):  # semantically invalid: the codec parses, the application refuses
        assert name in VALID


@pytest.mark.parametrize("name", VALID)
def test_valid_message_parses_and_round_trips(name: str) -> None:
    m = SipMessage.parse(load(name))
    again = SipMessage.parse(bytes(m))
    assert again == m
    assert bytes(again) == bytes(m)
    assert m.call_id and m.cseq is not None and m.get("Via") is not None


@pytest.mark.parametrize(("name", "status"), INVALID)
def test_invalid_message_is_rejected(name: str, status: int) -> None:
    with pytest.raises(SipParseError) as info:
        SipMessage.parse(load(name))
    assert info.value.status == status, info.value.reason


def test_wsinv_details() -> None:
    m = SipMessage.parse(load("wsinv"))
    assert m.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert m.max_forwards == 68 and m.cseq == (9, "INVITE")
    assert m.get("To") == "sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n"
    assert m.to_tag == "1918181833n" and m.from_tag == "98asjd8"
    assert H.parse_name_addr(m.get("From")).display == 'J Rosenberg \\"'
    assert m.get("Subject") == ""
    assert m.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    vias = [H.parse_via(v) for v in m.get_all("Via")]
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    contact = H.parse_name_addr(m.get("Contact"))
    assert contact.display == 'Quoted string ""' and contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert len(m.body) == 150


def test_intmeth_details() -> None:
    m = SipMessage.parse(load("intmeth"))
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    uri = H.parse_uri(m.uri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)" and uri.host == "example.com"
    assert H.parse_name_addr(m.get("To")).display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    frm = H.parse_name_addr(m.get("From"))
    assert frm.display == "token1~` token2'+_ token3*%!.-" and frm.tag == "_token~1'+`*%!-."
    assert frm.params["fromParam''~+*_!.-%"] == '"работающий"'
    assert m.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_dblreq_keeps_only_the_first_request() -> None:
    m = SipMessage.parse(load("dblreq"))
    assert m.method == "REGISTER" and m.body == b""


def test_longreq_has_34_vias_in_order() -> None:
    m = SipMessage.parse(load("longreq"))
    vias = m.get_all("Via")
    assert len(vias) == 34
    assert H.parse_via(vias[0]).host == "sip33.example.com"
    assert H.parse_via(vias[-1]).received == "192.0.2.5"


def test_mpart01_binary_body_is_kept() -> None:
    raw = load("mpart01")
    m = SipMessage.parse(raw)
    assert m.body == raw[raw.index(b"\r\n\r\n") + 4 :] and b"\x00" in m.body and b"\r\r\n" in m.body


def test_escapes_are_kept_as_written() -> None:
    m = SipMessage.parse(load("esc01"))
    assert H.parse_uri(m.uri).user == "sips%3Auser%40example.com"
    contact = H.parse_name_addr(m.get("Contact"))
    assert contact.uri.params == {"%6C%72": None, "n%61me": "v%61lue%25%34%31"}
    m = SipMessage.parse(load("esc02"))
    assert m.method == "RE%47IST%45R" and len(m.get_all("Contact")) == 2 and m.get("C%6Fntact")
    m = SipMessage.parse(load("escnull"))
    assert [str(H.parse_name_addr(c).uri) for c in m.get_all("Contact")] == [
        "sip:%00@host5.example.com", "sip:%00%00@host5.example.com",
    ]


def test_semiuri_user_part_with_semicolon() -> None:
    m = SipMessage.parse(load("semiuri"))
    uri = H.parse_uri(m.uri)
    assert (uri.user, uri.host, uri.params) == ("user;par=u%40example.net", "example.com", {})
    assert len(m.get_all("Accept")) == 6


def test_transports_and_reasons() -> None:
    m = SipMessage.parse(load("transports"))
    assert [H.parse_via(v).transport for v in m.get_all("Via")] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert m.call_id == "transports.kijh4akdnaqjkwendsasfdj"
    assert SipMessage.parse(load("unreason")).reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert SipMessage.parse(load("noreason")).reason == ""


def test_application_level_answers_the_codec_enables() -> None:
    # unknown Request-URI schemes: parse_uri() answers 416
    for name in ("unkscm", "novelsc"):
        with pytest.raises(SipParseError) as info:
            H.parse_uri(SipMessage.parse(load(name)).uri)
        assert info.value.status == 416
    # Contact with ?headers outside <>: parse_name_addr() answers 400
    with pytest.raises(SipParseError) as info:
        H.parse_name_addr(SipMessage.parse(load("regbadct")).get("Contact"))
    assert info.value.status == 400
    # zeromf: Max-Forwards 0 -> a proxy answers 483
    m = SipMessage.parse(load("zeromf"))
    assert m.max_forwards == 0
    with pytest.raises(SipParseError) as info:
        m.decrement_max_forwards()
    assert info.value.status == 483
    # bext01: the extensions a proxy/UAS would refuse with 420
    m = SipMessage.parse(load("bext01"))
    assert m.get_all("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert m.get_all("Proxy-Require") == ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
    # bcast: the second Via's sent-by is the broadcast address (the transport drops it)
    m = SipMessage.parse(load("bcast"))
    assert H.parse_via(m.get_all("Via")[1]).host == "255.255.255.255"
    # unksm2: unknown schemes are structurally fine in To/From/Contact
    m = SipMessage.parse(load("unksm2"))
    assert m.get("To") == "isbn:2983792873"
    with pytest.raises(SipParseError):
        H.parse_name_addr(m.get("To"))


def test_invalid_requests_carry_the_partial_message_for_an_answer() -> None:
    for name in ("badinv01", "clerr", "ncl", "mismatch01", "insuf", "scalar02"):
        with pytest.raises(SipParseError) as info:
            SipMessage.parse(load(name))
        assert info.value.message is not None and info.value.message.method is not None

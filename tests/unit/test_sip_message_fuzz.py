"""Property tests: the codec raises only SipParseError, and what it accepts round-trips.

Inputs are mutations of valid messages (the RFC 4475 valid set plus typical IMS traffic):
byte flips, truncation, insertion, deletion, duplication and swapping of lines, line-end
rewrites.  For every input, either ``SipMessage.parse`` raises ``SipParseError`` or
``bytes(parse(x))`` parses again to an equal message whose bytes are a fixed point.
"""

from __future__ import annotations

import pathlib

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from actors.sip import headers as H
from actors.sip.message import SipMessage, SipParseError

HERE = pathlib.Path(__file__).parent / "sip_torture"

SEEDS: list[bytes] = [p.read_bytes() for p in sorted(HERE.glob("*.dat"))]
SEEDS += [
    b"INVITE sip:ue0002@ims.example SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK776asdhds01;rport\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnashds8;received=127.0.0.1\r\n"
    b"Max-Forwards: 69\r\nRecord-Route: <sip:127.0.0.1:5062;lr>\r\nRoute: <sip:127.0.0.1:5064;lr>\r\n"
    b'From: "UE 1" <sip:ue0001@ims.example>;tag=1928301774\r\nTo: <sip:ue0002@ims.example>\r\n'
    b"Call-ID: a84b4c76e66710@pc33.ims.example\r\nCSeq: 314159 INVITE\r\n"
    b"Contact: <sip:ue0001@127.0.0.1:5070>\r\nContent-Type: application/sdp\r\nContent-Length: 31\r\n\r\n"
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK776asdhds01, SIP/2.0/UDP [::1]:5060"
    b";branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n",
]


def check(data: bytes) -> None:
    try:
        m = SipMessage.parse(data)
    except SipParseError as e:
        assert 400 <= e.status <= 599 and isinstance(e.reason, str)
        return
    # what parse() accepted through its fast paths, the full structural checks accept too
    H.check_name_addr(m.get("From"))
    H.check_name_addr(m.get("To"))
    H.parse_via(m.get("Via"))
    if m.is_request:
        H.check_uri_shape(m.uri)
    out = bytes(m)
    again = SipMessage.parse(out)
    assert again == m
    assert bytes(again) == out
    # the lazy accessors never raise anything but SipParseError either
    for fn in (lambda: m.top_via, lambda: m.branch, lambda: m.from_tag, lambda: m.to_tag, lambda: m.cseq,
               lambda: m.max_forwards, lambda: m.get_all("Via"), lambda: m.get_all("Contact"),
               lambda: m.get_all("Route"), lambda: m.make_response(400), lambda: H.parse_uri(m.uri or "sip:x"),
               lambda: H.parse_name_addr(m.get("From") or ""), lambda: H.parse_name_addr(m.get("To") or ""),
               lambda: [H.parse_via(v) for v in m.get_all("Via")],
               lambda: [H.parse_name_addr(v) for v in m.get_all("Contact") if v != "*"]):
        try:
            fn()
        except SipParseError:
            pass
    c = m.copy()  # a proxy hop on whatever was accepted: must not crash (may become invalid)
    c.pop_first("Via")
    c.add("Via", "SIP/2.0/UDP 10.9.9.9:5060;branch=" + H.new_branch(), first=True)
    if c.max_forwards:
        c.set("Max-Forwards", str(c.max_forwards - 1))
    try:
        assert SipMessage.parse(bytes(c)) == c
    except SipParseError:
        pass


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "dup_line", "swap_lines",
                                   "drop_line", "lf", "special"]))
        n = len(data)
        if op == "flip" and n:
            i = draw(st.integers(0, n - 1))
            data[i] = draw(st.integers(0, 255))
        elif op == "truncate" and n:
            del data[draw(st.integers(0, n - 1)):]
        elif op == "insert":
            i = draw(st.integers(0, n))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and n:
            i = draw(st.integers(0, n - 1))
            del data[i : i + draw(st.integers(1, 8))]
        elif op in ("dup_line", "swap_lines", "drop_line"):
            lines = _lines(bytes(data))
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            if op == "dup_line":
                lines.insert(j, lines[i])
            elif op == "swap_lines":
                lines[i], lines[j] = lines[j], lines[i]
            else:
                del lines[i]
            data = bytearray(b"\r\n".join(lines))
        elif op == "lf":
            data = bytearray(bytes(data).replace(b"\r\n", b"\n", draw(st.integers(1, 20))))
        elif op == "special" and n:
            i = draw(st.integers(0, n))
            data[i:i] = draw(st.sampled_from([b"\x00", b"\r", b"\n", b" ", b"\t", b",", b";", b'"', b"<", b">",
                                              b"\\", b":", b"\r\n ", b"\r\n\r\n", b"\xff", b"\xc3\xa9", b"%00"]))
    return bytes(data)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
@example(b"")
@example(b"\r\n")
@example(b"SIP/2.0 200 OK\r\n\r\n")
@example(b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n")
def test_mutations_parse_or_raise_sip_parse_error(data: bytes) -> None:
    check(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    check(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SEEDS), st.data())
def test_every_prefix_of_a_valid_message(seed: bytes, data) -> None:
    check(seed[: data.draw(st.integers(0, len(seed)))])


def test_seeds_themselves() -> None:
    for seed in SEEDS:
        check(seed)


_SIP_CHARS = 'aZ09.-_!%*+`\'~ \t"<>;:=,@/?[]\\&$()é\x00\x07'


@settings(max_examples=2000, deadline=None)
@given(st.text(_SIP_CHARS, max_size=40), st.sampled_from(["", '"A" ', "Bob ", "<", "sip:"]),
       st.sampled_from(["", ">", ">;tag=1", ";tag=x"]))
def test_fast_paths_never_accept_what_the_full_checks_reject(middle: str, pre: str, post: str) -> None:
    from actors.sip import message as M

    for v in (middle, pre + middle + post, f"{pre}<sip:{middle}>{post}", f"<sip:a@b>;{middle}"):
        if M._NAME_ADDR_FAST(v) is not None:
            H.check_name_addr(v)
        via = f"SIP/2.0/UDP {middle}"
        if M._VIA_FAST(via) is not None:
            H.parse_via(via)
        line = f"INVITE {v} SIP/2.0"
        if M._REQUEST_LINE_FAST(line) is not None:
            M._check_request_uri(v)

"""The proxy's per-hop fast paths give what the general code they replace gives."""

from __future__ import annotations

import hashlib

import pytest

from actors.sip.message import SipMessage
from nf_modules.ims_module import _forward_branch, _forward_branch_of, _routing_hash
from nf_modules.sip_proxy import _decrement_max_forwards, top_route

BASE = [
    ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport"),
    ("From", "<sip:alice@ims.example>;tag=f1"),
    ("To", "<sip:bob@ims.example>"),
    ("Call-ID", "c1@h"),
    ("CSeq", "1 INVITE"),
]


def message(*extra: tuple[str, str], base: list[tuple[str, str]] = BASE) -> SipMessage:
    return SipMessage("INVITE", "sip:bob@ims.example", headers=[*base, *extra])


def reference_routing_hash(request: SipMessage) -> str:
    """The routing hash as first written (five accessor calls)."""
    material = "|".join([
        request.uri or "", ",".join(request.get_all("Route")), request.from_tag or "",
        request.to_tag or "", request.call_id or "", str(request.cseq[0] if request.cseq else ""),
    ])
    return hashlib.blake2s(material.encode("utf-8", "surrogateescape"), digest_size=6).hexdigest()


ROUTES = [
    [],
    [("Route", "<sip:127.0.0.1:5062;lr>")],
    [("Route", "<sip:a;lr>"), ("Route", "<sip:b;lr>")],
    [("Route", "<sip:a;lr>, <sip:b;lr>"), ("Route", "<sip:c;lr>")],
    [("Route", "  <sip:a;lr> \t"), ("Route", "")],
    [("Route", ""), ("Route", "<sip:b;lr>")],
    [("Route", ", <sip:b;lr>")],
    [("Route", '"x, y" <sip:q;lr>')],
]


@pytest.mark.parametrize("routes", ROUTES)
@pytest.mark.parametrize("cseq", ["1 INVITE", "007 BYE", "0 ACK", "12  INVITE", "x INVITE", None])
def test_routing_hash_is_unchanged(routes: list[tuple[str, str]], cseq: str | None) -> None:
    base = [h for h in BASE if h[0] != "CSeq"] + ([("CSeq", cseq)] if cseq is not None else [])
    request = message(*routes, ("To", "<sip:x@y>;tag=second"), base=base)
    assert _routing_hash(request) == reference_routing_hash(request)
    assert top_route(request) == (request.get_all("Route") or [None])[0]


def test_forward_branch_is_unchanged() -> None:
    assert _forward_branch("z9hG4bKabc", "127.0.0.1", 5062, "INVITE") == \
        _forward_branch_of("z9hG4bKabc", "127.0.0.1:5062", "INVITE")
    material = b"z9hG4bKabc|127.0.0.1:5062|INVITE"
    assert _forward_branch_of("z9hG4bKabc", "127.0.0.1:5062", "INVITE") == \
        "z9hG4bK" + hashlib.blake2s(material, digest_size=9).hexdigest()
    assert _forward_branch_of("old-style", "h:1", "BYE") != _forward_branch_of("old-style", "h:1", "BYE")


@pytest.mark.parametrize("max_forwards", [
    [("Max-Forwards", "70")], [("Max-Forwards", "1")], [("Max-Forwards", "0")], [],
    [("Max-Forwards", "abc")], [("Max-Forwards", "9" * 21)],
    [("Max-Forwards", "5"), ("Contact", "<sip:a@b>"), ("Max-Forwards", "9")],
])
def test_max_forwards_step_is_the_set_of_the_decremented_value(max_forwards: list[tuple[str, str]]) -> None:
    request = message(*max_forwards, ("Content-Length", "0"))
    expected = request.copy()
    value = expected.max_forwards
    expected.set("Max-Forwards", str((value if value is not None else 70) - 1))
    _decrement_max_forwards(request)
    assert request.headers == expected.headers

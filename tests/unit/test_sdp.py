"""SDP reading and rewriting for the AS Media Policy and the MRFC (exact bytes)."""

from __future__ import annotations

import pytest
from aiosipua import parse_sdp
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.sip.message import SipMessage
from nf_modules.sdp import (
    SdpError,
    audio_address,
    is_sdp,
    mrf_answer,
    mrf_sides,
    parse_streams,
    rewrite_audio,
)
from nf_modules.user_agent import sdp_offer

UE_A = (
    b"v=0\r\n"
    b"o=- 1 1 IN IP4 10.0.0.1\r\n"
    b"s=vims\r\n"
    b"c=IN IP4 10.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
)


def test_rewrite_changes_only_c_and_the_audio_port() -> None:
    assert rewrite_audio(UE_A, "127.0.0.1", 30002) == (
        b"v=0\r\n"
        b"o=- 1 1 IN IP4 10.0.0.1\r\n"
        b"s=vims\r\n"
        b"c=IN IP4 127.0.0.1\r\n"
        b"t=0 0\r\n"
        b"m=audio 30002 RTP/AVP 0 8\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:8 PCMA/8000\r\n"
    )


def test_rewrite_media_level_connection_rtcp_other_streams_and_bare_lf() -> None:
    body = (
        b"v=0\n"
        b"o=alice 2890844526 2890844527 IN IP4 host.example\n"
        b"s= \n"
        b"i=a session with everything\n"
        b"t=0 0\n"
        b"a=sendrecv\n"
        b"m=audio 49170/2 RTP/AVP 0 96\n"
        b"c=IN IP4 192.0.2.10/127\n"
        b"a=rtpmap:96 telephone-event/8000\n"
        b"a=rtcp:53020\n"
        b"a=ptime:20\n"
        b"m=video 51372 RTP/AVP 31\n"
        b"c=IN IP4 192.0.2.11\n"
        b"a=rtpmap:31 H261/90000\n"
    )
    assert rewrite_audio(body, "::1", 31000) == (
        b"v=0\n"
        b"o=alice 2890844526 2890844527 IN IP4 host.example\n"
        b"s= \n"
        b"i=a session with everything\n"
        b"t=0 0\n"
        b"a=sendrecv\n"
        b"m=audio 31000 RTP/AVP 0 96\n"
        b"c=IN IP6 ::1\n"
        b"a=rtpmap:96 telephone-event/8000\n"
        b"a=ptime:20\n"
        b"m=video 0 RTP/AVP 31\n"
        b"c=IN IP4 192.0.2.11\n"
        b"a=rtpmap:31 H261/90000\n"
    )


def test_rewrite_skips_a_disabled_audio_stream_and_keeps_odd_bytes() -> None:
    body = (
        "v=0\r\no=- 7 7 IN IP4 10.0.0.2\r\ns=caf\u00e9\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
        "m=audio 0 RTP/AVP 0\r\nm=audio 42000 RTP/AVP 8\r\na=x-\xff\r\n"
    ).encode("utf-8", "surrogateescape") + b"a=raw:\xfe\xfd\r\n"
    out = rewrite_audio(body, "127.0.0.1", 30000)
    assert out == body.replace(b"c=IN IP4 10.0.0.2", b"c=IN IP4 127.0.0.1").replace(
        b"m=audio 42000", b"m=audio 30000"
    )
    assert audio_address(out) == ("127.0.0.1", 30000)


def test_audio_address_prefers_the_media_level_connection() -> None:
    body = UE_A.replace(b"a=rtpmap:0", b"c=IN IP4 10.9.9.9\r\na=rtpmap:0")
    assert audio_address(UE_A) == ("10.0.0.1", 40000)
    assert audio_address(body) == ("10.9.9.9", 40000)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"o=- 1 1 IN IP4 h\r\nv=0\r\n", "starts with v=0"),
        (b"v=0\r\nthis is not sdp\r\n", "line 2"),
        (b"v=0\r\ns=x\r\nt=0 0\r\n", "no active audio stream"),
        (b"v=0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", "no connection address"),
        (b"v=0\r\nc=IN IP4 h\r\nm=audio 99999 RTP/AVP 0\r\n", "bad port"),
        (b"v=0\r\nc=IN IP4 h\r\nm=audio x RTP/AVP 0\r\n", "bad port"),
        (b"v=0\r\nc=IN IP4 h\r\nm=audio 4000 RTP/AVP\r\n", "m= is not"),
        (b"v=0\r\nc=IN IP4\r\nm=audio 4000 RTP/AVP 0\r\n", "c= is not"),
        (b"v=0\r\nc=IN IP4 h;rm\r\nm=audio 4000 RTP/AVP 0\r\n", "bad connection address"),
        (b"v=0\r\nc=IN IP4 a\r\nc=IN IP4 b\r\nm=audio 4000 RTP/AVP 0\r\n", "more than one"),
        (b"v=0\r\nc=IN IP4 h\r\nm=video 4000 RTP/AVP 31\r\n", "no active audio stream"),
    ],
)
def test_bad_sdp_is_a_precise_error(body: bytes, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        audio_address(body)
    with pytest.raises(SdpError, match=message):
        rewrite_audio(body, "127.0.0.1", 30000)


def test_rewrite_rejects_bad_targets() -> None:
    with pytest.raises(ValueError, match="bad port"):
        rewrite_audio(UE_A, "127.0.0.1", 0)
    with pytest.raises(ValueError, match="bad host"):
        rewrite_audio(UE_A, "127.0.0.1\r\nm=audio", 4000)
    with pytest.raises(TypeError):
        rewrite_audio("v=0", "127.0.0.1", 4000)  # type: ignore[arg-type]


def test_mrf_answer_exact_bytes_and_sides() -> None:
    answer = mrf_answer("127.0.0.1", 30000, 30001, offer=UE_A, version=5)
    assert answer == (
        b"v=0\r\n"
        b"o=mrf 5 5 IN IP4 127.0.0.1\r\n"
        b"s=mrf\r\n"
        b"c=IN IP4 127.0.0.1\r\n"
        b"t=0 0\r\n"
        b"m=audio 30000 RTP/AVP 0 8\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:8 PCMA/8000\r\n"
        b"a=label:A\r\n"
        b"m=audio 30001 RTP/AVP 0 8\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:8 PCMA/8000\r\n"
        b"a=label:B\r\n"
    )
    assert mrf_sides(answer) == {"A": ("127.0.0.1", 30000), "B": ("127.0.0.1", 30001)}
    # the labels decide, not the order
    swapped = answer.replace(b"label:A", b"label:X").replace(b"label:B", b"label:A").replace(b"label:X", b"label:B")
    assert mrf_sides(swapped) == {"A": ("127.0.0.1", 30001), "B": ("127.0.0.1", 30000)}
    dynamic = mrf_answer("127.0.0.1", 4000, 4002, offer=UE_A.replace(b"0 8\r\n", b"96\r\na=fmtp:96 x=1\r\n"))
    assert b"m=audio 4000 RTP/AVP 96\r\n" in dynamic and b"a=fmtp:96 x=1\r\n" in dynamic
    assert b"rtpmap:96" not in dynamic and b"rtpmap:0 PCMU" in dynamic  # only the offer's own lines


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (UE_A, "no audio stream labelled A or B"),
        (mrf_answer("h", 1, 2).replace(b"label:B", b"label:A"), "two audio streams labelled A"),
        (mrf_answer("h", 1, 2).replace(b"m=audio 2 ", b"m=audio 0 "), "stream B has no address"),
    ],
)
def test_mrf_sides_errors(body: bytes, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        mrf_sides(body)


def test_is_sdp_looks_at_content_type_and_body() -> None:
    def message(content_type: str | None, body: bytes) -> SipMessage:
        headers = [("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("From", "<sip:a@h>;tag=1"), ("To", "<sip:b@h>"),
                   ("Call-ID", "c"), ("CSeq", "1 INVITE")]
        if content_type:
            headers.append(("Content-Type", content_type))
        return SipMessage.request("INVITE", "sip:b@h", headers, body)

    assert is_sdp(message("application/sdp", UE_A))
    assert is_sdp(message("Application/SDP; charset=utf-8", UE_A))
    assert not is_sdp(message("application/sdp", b""))
    assert not is_sdp(message("text/plain", UE_A))
    assert not is_sdp(message(None, UE_A))


# -- agreement with aiosipua's parser on the same bodies -----------------------------------

hosts = st.one_of(
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.sampled_from(["::1", "2001:db8::7", "media.example"]),
)
ports = st.integers(1, 65535)


@settings(max_examples=200, deadline=None)
@given(host=hosts, port=ports, new_host=hosts, new_port=ports, media_level=st.booleans())
def test_readings_agree_with_aiosipua(host: str, port: int, new_host: str, new_port: int, media_level: bool) -> None:
    body = sdp_offer(host, port)
    if media_level:
        body = body.replace(b"a=rtpmap:0", f"c=IN IP4 {host}\r\na=rtpmap:0".encode())
    theirs = parse_sdp(body.decode())
    assert audio_address(body) == theirs.rtp_address == (host, port)
    rewritten = rewrite_audio(body, new_host, new_port)
    assert audio_address(rewritten) == parse_sdp(rewritten.decode()).rtp_address == (new_host, new_port)
    # everything but c= and m= is untouched
    keep = [ln for ln in body.split(b"\r\n") if not ln.startswith((b"c=", b"m="))]
    assert [ln for ln in rewritten.split(b"\r\n") if not ln.startswith((b"c=", b"m="))] == keep
    answer = mrf_answer(new_host, port, new_port, offer=body)
    parsed = parse_sdp(answer.decode())
    assert [(m.port, m.attributes["label"]) for m in parsed.media] == [(port, ["A"]), (new_port, ["B"])]
    assert [s.formats for s in parse_streams(answer)] == [tuple(m.formats) for m in parsed.media]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_sdp_error_or_reads(data: bytes) -> None:
    for probe in (data, b"v=0\r\n" + data):
        try:
            audio_address(probe)
            rewrite_audio(probe, "127.0.0.1", 4000)
        except SdpError:
            pass

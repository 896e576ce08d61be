"""The UE media's sans-IO parts: WAV files (G.711 <-> 16-bit PCM), the tone source, RTCP
receiver reports (built here, read back by aiortc as the reference, RFC 3550 A.3 fractions)."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from aiortc.rtp import RtcpPacket, RtcpRrPacket, RtcpSdesPacket

from nf_modules.mediacore import lin16_to_ulaw
from nf_modules.rtcp import ReceptionState, ReportBlock, RtcpError, build_receiver_report, parse_receiver_reports
from nf_modules.wav import WavError, WavRecorder, pcm16_samples, read_ulaw, write_ulaw
from tests.unit.test_ue_media_tone import dominant_frequency

RATE = 8000


def _sine(freq: float, n: int, amplitude: float = 0.5) -> list[int]:
    return [round(amplitude * 32767 * math.sin(2 * math.pi * freq * i / RATE)) for i in range(n)]


def _write_pcm(path: Path, samples: list[int], *, rate: int = RATE, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))


# ----------------------------------------------------------------------------------- WAV


def test_wav_round_trip_keeps_the_tone(tmp_path: Path) -> None:
    source = tmp_path / "tone.wav"
    _write_pcm(source, _sine(440, RATE))
    ulaw = read_ulaw(source)
    assert len(ulaw) == RATE
    assert ulaw == lin16_to_ulaw(struct.pack(f"={RATE}h", *_sine(440, RATE)))
    out = write_ulaw(tmp_path / "out.wav", ulaw)
    rate, samples = pcm16_samples(out)
    assert rate == RATE and len(samples) == RATE
    assert dominant_frequency(samples, rate) == pytest.approx(440, abs=5)
    # G.711 keeps a sine within a few percent of the original
    original = _sine(440, RATE)
    assert max(abs(a - b) for a, b in zip(samples, original)) < 0.05 * 32767


def test_recorder_appends_and_counts_frames(tmp_path: Path) -> None:
    chunk = lin16_to_ulaw(struct.pack("=160h", *_sine(1000, 160)))
    with WavRecorder(tmp_path / "r.wav") as recorder:
        for _ in range(50):
            recorder.append(chunk)
        recorder.append(b"")
    assert recorder.frames == 8000
    rate, samples = pcm16_samples(tmp_path / "r.wav")
    assert len(samples) == 8000 and dominant_frequency(samples, rate) == pytest.approx(1000, abs=5)
    with pytest.raises(ValueError, match="closed"):
        recorder.append(chunk)
    recorder.close()  # idempotent


def test_read_refuses_files_a_ue_cannot_send(tmp_path: Path) -> None:
    stereo = tmp_path / "stereo.wav"
    _write_pcm(stereo, [0] * 20, channels=2)
    with pytest.raises(WavError, match="mono"):
        read_ulaw(stereo)
    wideband = tmp_path / "16k.wav"
    _write_pcm(wideband, [0] * 20, rate=16000)
    with pytest.raises(WavError, match="16000 Hz"):
        read_ulaw(wideband)
    empty = tmp_path / "empty.wav"
    _write_pcm(empty, [])
    with pytest.raises(WavError, match="no audio"):
        read_ulaw(empty)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav file at all")
    with pytest.raises(WavError, match="not a PCM WAV"):
        read_ulaw(junk)



# ---------------------------------------------------------------------------------- RTCP


def test_receiver_report_is_read_by_aiortc() -> None:
    block = ReportBlock(ssrc=0x11223344, fraction_lost=64, cumulative_lost=7, highest_seq=70001, jitter=123)
    data = build_receiver_report(0xCAFEBABE, [block], "ue0001@127.0.0.1")
    packets = RtcpPacket.parse(data)
    assert [type(p) for p in packets] == [RtcpRrPacket, RtcpSdesPacket]
    rr, sdes = packets
    assert rr.ssrc == 0xCAFEBABE and len(rr.reports) == 1
    report = rr.reports[0]
    assert (report.ssrc, report.fraction_lost, report.packets_lost, report.highest_sequence, report.jitter) == (
        0x11223344, 64, 7, 70001, 123,
    )
    assert (report.lsr, report.dlsr) == (0, 0)
    assert sdes.chunks[0].ssrc == 0xCAFEBABE and sdes.chunks[0].items == [(1, b"ue0001@127.0.0.1")]
    assert parse_receiver_reports(data) == [(0xCAFEBABE, block)]


def test_report_with_no_blocks_and_negative_loss_round_trip() -> None:
    empty = build_receiver_report(1, [], "x")
    assert RtcpPacket.parse(empty)[0].reports == []
    assert parse_receiver_reports(empty) == []
    block = ReportBlock(ssrc=5, fraction_lost=0, cumulative_lost=-3, highest_seq=9, jitter=0)
    assert parse_receiver_reports(build_receiver_report(2, [block], "y")) == [(2, block)]
    assert RtcpPacket.parse(build_receiver_report(2, [block], "y"))[0].reports[0].packets_lost == -3


def test_fraction_lost_follows_rfc3550_a3() -> None:
    state = ReceptionState()
    first = state.report(9, received=90, lost=10, highest_seq=100, jitter=4)
    assert (first.fraction_lost, first.cumulative_lost) == (25, 10)  # 10/100 * 256 = 25.6
    second = state.report(9, received=190, lost=10, highest_seq=200, jitter=4)
    assert second.fraction_lost == 0  # no loss in this interval
    third = state.report(9, received=240, lost=60, highest_seq=300, jitter=4)
    assert third.fraction_lost == 128  # 50 of 100
    idle = state.report(9, received=240, lost=60, highest_seq=300, jitter=4)
    assert idle.fraction_lost == 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (b"\x81\xc9\x00", "too short"),
        (b"\x41\xc9\x00\x01\x00\x00\x00\x01", "version"),
        (b"\x81\xc9\x00\x09\x00\x00\x00\x01", "past the end"),
        (b"\x81\xc9\x00\x01\x00\x00\x00\x01", "too short for 1"),
        (b"\xa0\xc9\x00\x01\x00\x00\x00\x09", "padding"),
        (b"\x80\xc9\x00\x01\x00\x00\x00\x01\x00\x00", "trailing"),
    ],
)
def test_malformed_rtcp_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(RtcpError, match=reason):
        parse_receiver_reports(data)


def test_bad_report_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="31"):
        build_receiver_report(1, [ReportBlock(1, 0, 0, 0, 0)] * 32, "x")
    with pytest.raises(ValueError, match="CNAME"):
        build_receiver_report(1, [], "")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_any_datagram_parses_or_is_refused_as_rtcp(data: bytes) -> None:
    try:
        reports = parse_receiver_reports(data)
    except RtcpError:
        return
    for reporter, block in reports:
        assert 0 <= reporter < 2**32 and 0 <= block.fraction_lost < 256
        assert -(2**23) <= block.cumulative_lost < 2**23


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(-(2**23), 2**23 - 1),
                          st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=31))
def test_reports_round_trip_through_aiortc(values: list[tuple[int, int, int, int, int]]) -> None:
    blocks = [ReportBlock(*v) for v in values]
    data = build_receiver_report(7, blocks, "ue@h")
    assert parse_receiver_reports(data) == [(7, b) for b in blocks]
    rr = RtcpPacket.parse(data)[0]
    assert [(r.ssrc, r.fraction_lost, r.packets_lost, r.highest_sequence, r.jitter) for r in rr.reports] == values

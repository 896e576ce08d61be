"""The UE media's plain parts: the tone, the configuration, the peer's SDP address, the
aggregate across legs (the engine and its sockets are the integration tests' business)."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import pytest

from nf_modules.mediacore import ulaw_to_lin16
from nf_modules.ue_media import MediaConfig, MediaResult, aggregate, media_config, peer_media_address, tone_ulaw
from nf_modules.ue_pool import g711_sdp
from nf_modules.user_agent import sdp_offer
from tests.unit.test_ue_media_tone import dominant_frequency


def _samples(ulaw: bytes) -> list[int]:
    raw = ulaw_to_lin16(ulaw)
    return list(struct.unpack(f"={len(raw) // 2}h", raw))


@pytest.mark.parametrize("freq", [440, 1000])
def test_tone_is_whole_packets_of_the_frequency_and_loops_cleanly(freq: int) -> None:
    ulaw = tone_ulaw(freq)
    assert len(ulaw) == 8000 and len(ulaw) % 160 == 0
    samples = _samples(ulaw)
    assert dominant_frequency(samples, 8000) == pytest.approx(freq, abs=5)
    looped = _samples(ulaw + ulaw)
    steps = [abs(b - a) for a, b in zip(looped, looped[1:])]
    assert steps[7999] <= max(steps[:7999])  # no click where the loop joins
    assert 0.45 * 32767 < max(samples) < 0.55 * 32767


def test_tone_refuses_what_g711_cannot_carry() -> None:
    for bad in (0, -1, 4000, 5000):
        with pytest.raises(ValueError, match="media_tone_hz"):
            tone_ulaw(bad)
    with pytest.raises(ValueError, match="20 ms"):
        tone_ulaw(440, seconds=0.01)
    with pytest.raises(ValueError, match="amplitude"):
        tone_ulaw(440, amplitude=2)


def test_media_argument_forms(tmp_path: Path) -> None:
    assert media_config(False) is None and media_config(None) is None
    assert media_config(True) == MediaConfig()
    config = MediaConfig(tone_hz=1000)
    assert media_config(config) is config
    assert media_config({"tone_hz": 300, "rtcp_interval": 1}) == MediaConfig(tone_hz=300, rtcp_interval=1)
    with pytest.raises(ValueError, match="unknown field.*tone"):
        media_config({"tone": 300})
    with pytest.raises(ValueError, match="media must be"):
        media_config("yes")  # type: ignore[arg-type]


def test_bad_configuration_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="media_tone_hz"):
        MediaConfig(tone_hz=True)
    with pytest.raises(ValueError, match="media_wav"):
        MediaConfig(wav=str(tmp_path / "missing.wav"))
    with pytest.raises(ValueError, match="media_record_dir"):
        MediaConfig(record_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="rtcp_interval"):
        MediaConfig(rtcp_interval=0)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF but not really")
    with pytest.raises(ValueError, match="media_wav: .*not a PCM WAV"):
        MediaConfig(wav=str(junk))


def test_payload_from_a_wav_file_is_cut_to_whole_packets(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x10" * 500)
    assert len(MediaConfig(wav=str(path)).payload()) == 480
    short = tmp_path / "short.wav"
    with wave.open(str(short), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x10" * 100)
    with pytest.raises(ValueError, match="shorter than one 20 ms packet"):
        MediaConfig(wav=str(short)).payload()
    assert MediaConfig().payload() == tone_ulaw(440)


def test_peer_media_address_reads_both_ue_sdp_bodies() -> None:
    assert peer_media_address(g711_sdp("127.0.0.1", 30002)) == ("127.0.0.1", 30002)
    assert peer_media_address(sdp_offer("10.0.0.7", 41000)) == ("10.0.0.7", 41000)
    assert peer_media_address(b"") is None and peer_media_address(None) is None
    assert peer_media_address(b"v=0\r\nm=audio 0 RTP/AVP 0\r\n") is None
    assert peer_media_address(b"garbage") is None


def _result(received: int, lost: int, p50: float, p99: float, mx: float, jitter: float = 1.0) -> MediaResult:
    return MediaResult(
        call_id="c", user="u", role="uac", local_port=1, remote=("h", 2), packets_sent=received,
        packets_received=received, bytes_received=received * 172, lost=lost,
        loss=lost / (received + lost) if received + lost else 0.0, jitter_ms=jitter,
        latency_ms={"p50": p50, "p90": p50, "p99": p99, "max": mx}, rr_sent=1, rr_received=2,
        peer_fraction_lost=None, duration_s=1.0,
    )


def test_aggregate_weights_by_packets_and_keeps_the_worst_max() -> None:
    out = aggregate([_result(100, 0, 1.0, 2.0, 3.0), _result(300, 100, 3.0, 6.0, 9.0, jitter=5.0), _result(0, 0, 0, 0, 0)])
    assert out["legs"] == 3 and out["packets_received"] == 400 and out["lost"] == 100
    assert out["loss"] == pytest.approx(100 / 500)
    assert out["latency_ms"]["p50"] == pytest.approx(2.5) and out["latency_ms"]["p99"] == pytest.approx(5.0)
    assert out["latency_ms"]["max"] == 9.0 and out["jitter_ms"] == pytest.approx(4.0)
    assert (out["rr_sent"], out["rr_received"]) == (3, 6)
    empty = aggregate([])
    assert empty["legs"] == 0 and empty["loss"] == 0.0 and empty["latency_ms"]["max"] == 0.0


def test_result_as_dict_is_json_ready() -> None:
    out = _result(10, 0, 1, 2, 3).as_dict()
    assert out["remote"] == ["h", 2] and out["latency_ms"]["p99"] == 2

"""UE media: the RTP a UE sends and receives for its calls, on the media engine.

Every call leg of a UE with media on gets one UDP socket for RTP (bound to port 0 on an even
port, so the kernel picks a free one; the port goes into the SDP) and one for RTCP on the port
above it (RFC 3550 section 11). The engine (:class:`~nf_modules.mediacore.engine.MediaEngine`,
one per UE actor, its packet loop on its own thread) does the packet work:

* a **sink flow** per leg receives on the RTP socket from the moment the port is offered: it
  keeps the packet counts, RFC 3550 jitter, loss from sequence gaps and the one-way latency
  histogram of the send-time stamps, and records the payload when the leg writes a WAV file;
* a **generator** per leg, started when the call is established (2xx/ACK), sends G.711 mu-law
  from the same socket to the media address of the peer's SDP (through the IMS, the MRFP's port):
  20 ms packets of 160 bytes, 50 a second, each with the send-time stamp extension; the audio
  is a tone or a WAV file, looped.

At BYE the generator stops first (before the BYE goes out or the 200 to it), a last receiver
report goes out, the flow's statistics become the leg's :class:`MediaResult`, and the sockets are
closed. While the call is up, a receiver report (RR + SDES CNAME, :mod:`nf_modules.rtcp`) goes to
the peer's RTP port + 1 every ``rtcp_interval`` emulated seconds (randomised 0.5-1.5 times, RFC
3550 6.3.1); RTCP from the peer is read and counted.

Threads and loops: :class:`UeMedia` lives on the UE actor's loop. Its methods, the RTCP timers
(on the actor's clock) and the readers of the RTCP sockets and of the engine's metadata fd run
there; only the engine's own thread touches packets.
"""

from __future__ import annotations

import math
import random
import socket
import struct
from collections import Counter
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors.clock import Clock
from nf_modules.mediacore import lin16_to_ulaw
from nf_modules.rtcp import ReceptionState, ReportBlock, RtcpError, build_receiver_report, parse_receiver_reports
from nf_modules.sdp import SdpError, audio_address
from nf_modules.wav import SAMPLE_RATE, WavRecorder, read_ulaw

if TYPE_CHECKING:
    from nf_modules.mediacore.engine import FlowStats

__all__ = [
    "LATENCY_KEYS",
    "MediaConfig",
    "MediaResult",
    "UeMedia",
    "aggregate",
    "media_config",
    "peer_media_address",
    "tone_ulaw",
]

PTIME_MS = 20
PAYLOAD_TYPE_PCMU = 0
LATENCY_KEYS = ("p50", "p90", "p99", "max")
_BIND_ATTEMPTS = 64
_RTCP_READS = 64  # datagrams read per RTCP reader callback


def tone_ulaw(freq_hz: float = 440.0, seconds: float = 1.0, amplitude: float = 0.5) -> bytes:
    """``seconds`` of a sine at ``freq_hz``, G.711 mu-law at 8 kHz. With a whole number of
    hertz and seconds the end joins the start, so the generator can loop it without a click."""
    if not 0 < freq_hz < SAMPLE_RATE / 2:
        raise ValueError(f"media_tone_hz must be in (0, {SAMPLE_RATE // 2}) Hz, got {freq_hz!r}")
    if not 0 < amplitude <= 1:
        raise ValueError(f"tone amplitude must be in (0, 1], got {amplitude!r}")
    n = round(seconds * SAMPLE_RATE)
    if n < PTIME_MS * 8:
        raise ValueError(f"a tone needs at least {PTIME_MS} ms, got {seconds!r} s")
    n -= n % (PTIME_MS * 8)  # whole packets
    peak = amplitude * 32767
    step = 2 * math.pi * freq_hz / SAMPLE_RATE
    return lin16_to_ulaw(struct.pack(f"={n}h", *(round(peak * math.sin(step * i)) for i in range(n))))


@dataclass(frozen=True)
class MediaConfig:
    """What a UE sends and how it reports.

    ``tone_hz``: the tone sent when no ``wav`` is given; ``wav``: a 16-bit 8 kHz mono WAV file
    to send instead (looped); ``record_dir``: where a leg that receives a call writes
    ``<user>-<call-id>.wav`` (``None``: no recording); ``record_calls_out``: record the caller's
    legs too; ``rtcp_interval``: emulated seconds between receiver reports; ``native``: the C
    engine (False: its pure-Python twin); ``host``: the address the RTP sockets bind to and
    the SDP gives (``None``: the UE's SIP address).
    The RTP itself always runs in real time (50 packets a second), whatever the actor's
    ``time_scale``."""

    tone_hz: float = 440.0
    wav: str | None = None
    record_dir: str | None = None
    record_calls_out: bool = False
    rtcp_interval: float = 5.0
    native: bool = True
    host: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.tone_hz, bool) or not isinstance(self.tone_hz, (int, float)) or not 0 < self.tone_hz < SAMPLE_RATE / 2:
            raise ValueError(f"media_tone_hz must be a number in (0, {SAMPLE_RATE // 2}), got {self.tone_hz!r}")
        if self.wav is not None and not Path(self.wav).is_file():
            raise ValueError(f"media_wav: no such file {self.wav!r}")
        if self.record_dir is not None and not Path(self.record_dir).is_dir():
            raise ValueError(f"media_record_dir: no such directory {self.record_dir!r}")
        interval = self.rtcp_interval
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
            raise ValueError(f"rtcp_interval must be a number > 0, got {interval!r}")
        if self.wav is not None:
            self.payload()  # a file the UE cannot send fails here, at configuration time

    def payload(self) -> bytes:
        """The mu-law audio the generators loop."""
        if self.wav is not None:
            try:
                audio = read_ulaw(self.wav)
            except ValueError as error:
                raise ValueError(f"media_wav: {error}") from None
            whole = len(audio) - len(audio) % (PTIME_MS * 8)
            if whole == 0:
                raise ValueError(f"media_wav {self.wav!r} is shorter than one {PTIME_MS} ms packet")
            return audio[:whole]
        return tone_ulaw(self.tone_hz)


def media_config(value: bool | MediaConfig | dict[str, Any] | None) -> MediaConfig | None:
    """A UE's ``media`` argument: ``False``/``None`` (no media), ``True`` (the defaults), a
    :class:`MediaConfig`, or a dict of its fields (a TOML table). ``ValueError`` names a bad one."""
    if value is None or value is False:
        return None
    if value is True:
        return MediaConfig()
    if isinstance(value, MediaConfig):
        return value
    if isinstance(value, dict):
        unknown = set(value) - set(MediaConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"media: unknown field(s) {', '.join(sorted(unknown))}")
        return MediaConfig(**value)
    raise ValueError(f"media must be a bool, a MediaConfig or a table of its fields, got {value!r}")


@dataclass(frozen=True)
class MediaResult:
    """The media of one call leg, as its UE saw it. Latencies and jitter in ms; ``loss`` is the
    fraction of the packets expected (received + lost from sequence gaps) that never came;
    ``peer_fraction_lost``: the loss the peer reported in its last RR (``None``: no RR came).
    ``latency_histogram``: the flow's latency histogram as ``(low_ms, high_ms, count)`` buckets
    (:attr:`~nf_modules.mediacore.engine.FlowStats.latency_buckets`), so that legs merge into
    the exact distribution of all their packets (percentiles of legs do not)."""

    call_id: str
    user: str
    role: str
    local_port: int
    remote: tuple[str, int] | None
    packets_sent: int
    packets_received: int
    bytes_received: int
    lost: int
    loss: float
    jitter_ms: float
    latency_ms: dict[str, float]
    rr_sent: int
    rr_received: int
    peer_fraction_lost: float | None
    duration_s: float
    wav_path: str | None = None
    latency_histogram: tuple[tuple[float, float, int], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["remote"] = list(self.remote) if self.remote else None
        return out


@dataclass(eq=False)
class _Leg:
    key: Hashable
    call_id: str
    user: str
    role: str
    rtp: socket.socket
    rtcp: socket.socket
    port: int
    ssrc: int
    flow_id: int
    gen_id: int
    opened_at: float
    recorder: WavRecorder | None = None
    remote: tuple[str, int] | None = None
    sending: bool = False
    sent: int = 0
    rr_sent: int = 0
    rr_received: int = 0
    peer_fraction_lost: float | None = None
    reception: ReceptionState = field(default_factory=ReceptionState)
    timer: Any = None


def peer_media_address(body: bytes | None) -> tuple[str, int] | None:
    """Where the sender of an SDP body receives its audio; ``None`` when there is no usable
    body (no SDP, no active audio stream)."""
    if not body:
        return None
    try:
        return audio_address(body)
    except SdpError:
        return None


def _bind_pair(host: str) -> tuple[socket.socket, socket.socket]:
    """An RTP socket on an even port picked by the kernel and an RTCP socket on the port above."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(_BIND_ATTEMPTS):
        rtp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            rtp.bind((host, 0))
            port = rtp.getsockname()[1]
            if port % 2 == 0 and port < 65535:
                rtcp = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    rtcp.bind((host, port + 1))
                except OSError:
                    rtcp.close()
                else:
                    rtp.setblocking(False)
                    rtcp.setblocking(False)
                    return rtp, rtcp
        except OSError:
            rtp.close()
            raise
        rtp.close()
    raise OSError(f"no even/odd RTP/RTCP port pair free on {host} after {_BIND_ATTEMPTS} tries")


def _latency(stats: FlowStats) -> dict[str, float]:
    """The flow's latency percentiles in ms (0.0 when no stamped packet arrived)."""
    out = {}
    for key in LATENCY_KEYS:
        value = float(getattr(stats, key))
        out[key] = 0.0 if math.isnan(value) else value
    return out


class UeMedia:
    """The media plane of one UE actor (a ``UePool`` or a ``UserAgent``): one engine, the legs.

    ``open(key, ...)`` binds a leg's sockets and starts its sink flow (returns the RTP port for
    the SDP); ``connect(key, remote)`` starts sending; ``stop_sending(key)`` stops the generator;
    ``close(key)`` ends the leg and returns its :class:`MediaResult`. ``results`` keeps the
    finished legs that were connected (their call was established) for :meth:`stats`."""

    def __init__(
        self, name: str, config: MediaConfig, clock: Clock, loop: Any, rng: random.Random, log: Any = None,
        *, default_host: str = "127.0.0.1",
    ) -> None:
        """``default_host``: where RTP binds when the config names no ``host`` (the UE's SIP
        address). The engine's packet thread starts here."""
        self.name = name
        self.config = config
        self.host = config.host or default_host
        self.clock = clock
        self.loop = loop
        self.rng = rng
        self.log = log
        self.payload = config.payload()
        self.counters: Counter[str] = Counter()
        self.results: list[MediaResult] = []
        self.legs: dict[Hashable, _Leg] = {}
        self._next_id = 1
        from nf_modules.mediacore.engine import Instruction, MediaEngine  # only UEs with media load it

        self._sink = Instruction(action="sink")
        self.engine = MediaEngine(native=config.native, metadata_interval=1.0)
        self.engine.start()
        loop.add_reader(self.engine.fileno(), self._drain_metadata)
        self._closed = False

    # -- legs ------------------------------------------------------------------------------

    def open(self, key: Hashable, call_id: str, user: str, role: str, *, record: bool | None = None) -> int:
        """Bind a leg's RTP/RTCP sockets and start receiving; the RTP port (``OSError`` when no
        port pair can be bound). ``record``: write a WAV file (default: the config's rule)."""
        if key in self.legs:
            return self.legs[key].port
        if record is None:
            record = self.config.record_dir is not None and (role == "uas" or self.config.record_calls_out)
        recorder = None
        if record:
            directory = Path(self.config.record_dir or ".")
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in call_id)[:80]
            recorder = WavRecorder(directory / f"{user}-{safe}-{role}.wav")
        try:
            rtp, rtcp = _bind_pair(self.host)
        except OSError:
            if recorder is not None:
                recorder.close()
            raise
        port = rtp.getsockname()[1]
        ident = self._next_id
        self._next_id += 1
        leg = _Leg(key, call_id, user, role, rtp, rtcp, port, self.rng.getrandbits(32), ident, ident, self.clock.now(), recorder)
        try:
            self.engine.add_flow(leg.flow_id, rtp, self._sink, record=recorder is not None)
        except Exception:
            rtp.close()
            rtcp.close()
            if recorder is not None:
                recorder.close()
            raise
        self.loop.add_reader(rtcp.fileno(), self._read_rtcp, leg)
        self.legs[key] = leg
        self.counters["legs_opened"] += 1
        return port

    def connect(self, key: Hashable, remote: tuple[str, int] | None) -> bool:
        """The call is established: send to ``remote`` (the peer's SDP audio address) and start
        the receiver reports. False (counted) when there is no such leg or no address."""
        leg = self.legs.get(key)
        if leg is None:
            self.counters["connect_unknown_leg"] += 1
            return False
        if leg.sending:
            if remote != leg.remote:
                self.counters["remote_change_ignored"] += 1
            return True
        if remote is None:
            self.counters["no_remote_address"] += 1
            return False
        try:
            self.engine.add_generator(
                leg.gen_id, leg.rtp, remote, payload=self.payload, payload_type=PAYLOAD_TYPE_PCMU,
                ssrc=leg.ssrc, ptime_ms=PTIME_MS, stamp=True,
            )
        except (ValueError, OSError) as error:  # e.g. an SDP address that is no numeric IP
            self.counters["bad_remote_address"] += 1
            if self.log is not None:
                self.log.info("ue_media_bad_remote", call_id=leg.call_id, remote=remote, error=str(error))
            return False
        leg.remote = remote
        leg.sending = True
        self.counters["legs_connected"] += 1
        self._arm_report(leg)
        return True

    def stop_sending(self, key: Hashable) -> None:
        """Stop the leg's generator (before the BYE, or the 200 to it)."""
        leg = self.legs.get(key)
        if leg is not None:
            self._stop_generator(leg)

    def _stop_generator(self, leg: _Leg) -> None:
        if leg.sending:
            leg.sent += int(self.engine.remove_generator(leg.gen_id).get("sent", 0))
            leg.sending = False

    def live(self) -> dict[str, dict[str, int]]:
        """The legs in progress, keyed ``"<role>:<call id>"``: packets and bytes received so far,
        packets sent so far (the generator's count)."""
        out = {}
        for leg in self.legs.values():
            stats = self.engine.flow_stats(leg.flow_id)
            sent = leg.sent + (int(self.engine.generator_stats(leg.gen_id).get("sent", 0)) if leg.sending else 0)
            out[f"{leg.role}:{leg.call_id}"] = {"packets_received": stats.packets, "bytes_received": stats.bytes,
                                                "packets_sent": sent}
        return out

    def close(self, key: Hashable) -> MediaResult | None:
        """End the leg: stop sending, send the last receiver report, collect the flow's
        statistics, finish the WAV file, close the sockets. ``None`` for an unknown leg."""
        leg = self.legs.pop(key, None)
        if leg is None:
            return None
        self._stop_generator(leg)
        if leg.timer is not None:
            leg.timer.cancel()
            leg.timer = None
        stats = self.engine.flow_stats(leg.flow_id)
        if leg.remote is not None:
            self._send_report(leg, stats)
        self._take_recording(leg)
        stats = self.engine.remove_flow(leg.flow_id)
        self._read_rtcp(leg)  # a report that came meanwhile
        self.loop.remove_reader(leg.rtcp.fileno())
        leg.rtp.close()
        leg.rtcp.close()
        wav_path = None
        if leg.recorder is not None:
            leg.recorder.close()
            wav_path = str(leg.recorder.path)
        expected = stats.packets + max(0, stats.lost)
        result = MediaResult(
            call_id=leg.call_id, user=leg.user, role=leg.role, local_port=leg.port, remote=leg.remote,
            packets_sent=leg.sent, packets_received=stats.packets, bytes_received=stats.bytes,
            lost=stats.lost, loss=(max(0, stats.lost) / expected) if expected else 0.0,
            jitter_ms=float(stats.jitter_ms), latency_ms=_latency(stats),
            rr_sent=leg.rr_sent, rr_received=leg.rr_received, peer_fraction_lost=leg.peer_fraction_lost,
            duration_s=self.clock.now() - leg.opened_at, wav_path=wav_path,
            latency_histogram=stats.latency_buckets,
        )
        if leg.remote is not None:  # a leg whose call never got established is no media sample
            self.results.append(result)
        self.counters["legs_closed"] += 1
        return result

    def close_all(self) -> None:
        """Close every leg and the engine (the actor is stopping); idempotent."""
        for key in list(self.legs):
            try:
                self.close(key)
            except Exception:  # noqa: BLE001  (stopping: close the rest regardless)
                self.counters["close_errors"] += 1
        if not self._closed:
            self._closed = True
            self.loop.remove_reader(self.engine.fileno())
            self.engine.close()

    # -- RTCP ------------------------------------------------------------------------------

    def _arm_report(self, leg: _Leg) -> None:
        delay = self.config.rtcp_interval * self.rng.uniform(0.5, 1.5)
        leg.timer = self.clock.call_later(delay, self._report_due, leg)

    def _report_due(self, leg: _Leg) -> None:
        """Clock callback (actor's loop): a receiver report is due."""
        leg.timer = None
        if self.legs.get(leg.key) is not leg:
            return
        try:
            self._send_report(leg, self.engine.flow_stats(leg.flow_id))
            self._take_recording(leg)
        except Exception as error:  # noqa: BLE001  (a bad report must not stop the reports)
            self.counters["report_errors"] += 1
            if self.log is not None:
                self.log.error("ue_rtcp_report_failed", call_id=leg.call_id, error=repr(error))
        self._arm_report(leg)

    def _send_report(self, leg: _Leg, stats: FlowStats) -> None:
        blocks: list[ReportBlock] = []
        if stats.packets:
            blocks.append(leg.reception.report(
                stats.ssrc, stats.packets, stats.lost, stats.highest_seq, round(stats.jitter_ms * SAMPLE_RATE / 1000),
            ))
        assert leg.remote is not None
        packet = build_receiver_report(leg.ssrc, blocks, f"{leg.user}@{self.host}")
        try:
            leg.rtcp.sendto(packet, (leg.remote[0], leg.remote[1] + 1))
        except OSError:
            self.counters["rtcp_send_errors"] += 1
            return
        leg.rr_sent += 1
        self.counters["rtcp_rr_sent"] += 1

    def _read_rtcp(self, leg: _Leg) -> None:
        """Reader callback (actor's loop): RTCP arrived on a leg's RTCP socket."""
        for _ in range(_RTCP_READS):
            try:
                data = leg.rtcp.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.counters["rtcp_recv_errors"] += 1
                return
            try:
                reports = parse_receiver_reports(data)
            except RtcpError:
                self.counters["rtcp_malformed"] += 1
                continue
            self.counters["rtcp_received"] += 1
            leg.rr_received += 1
            for _reporter, block in reports:
                if block.ssrc == leg.ssrc:
                    leg.peer_fraction_lost = block.fraction_lost / 256

    # -- engine ----------------------------------------------------------------------------

    def _take_recording(self, leg: _Leg) -> None:
        """Move what the engine recorded for the leg into its WAV file (the engine keeps a
        bounded amount: this runs with every receiver report and at the end)."""
        if leg.recorder is not None:
            leg.recorder.append(self.engine.take_recording(leg.flow_id))

    def _drain_metadata(self) -> None:
        """Reader callback (actor's loop): the engine has metadata records; the UE keeps only
        their count (its figures come from the flow statistics at the end of the call)."""
        self.counters["metadata_records"] += len(self.engine.drain_metadata())

    # -- queries ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The aggregate of the finished legs (:func:`aggregate`) plus the live counters."""
        out = aggregate(self.results)
        out["active_legs"] = len(self.legs)
        out["counters"] = dict(self.counters)
        out["engine"] = dict(self.engine.stats())
        return out


def aggregate(results: list[MediaResult]) -> dict[str, Any]:
    """Across legs: totals, the overall loss fraction, and the packet-weighted latency
    percentiles and jitter (``max``: the largest of any leg)."""
    received = sum(r.packets_received for r in results)
    lost = sum(max(0, r.lost) for r in results)
    weights = [(r.packets_received, r) for r in results if r.packets_received]
    total = sum(w for w, _ in weights)
    latency = {key: 0.0 for key in LATENCY_KEYS}
    jitter = 0.0
    if total:
        for key in ("p50", "p90", "p99"):
            latency[key] = sum(w * r.latency_ms[key] for w, r in weights) / total
        latency["max"] = max(r.latency_ms["max"] for _, r in weights)
        jitter = sum(w * r.jitter_ms for w, r in weights) / total
    return {
        "legs": len(results),
        "packets_sent": sum(r.packets_sent for r in results),
        "packets_received": received,
        "lost": lost,
        "loss": lost / (received + lost) if received + lost else 0.0,
        "latency_ms": latency,
        "jitter_ms": jitter,
        "rr_sent": sum(r.rr_sent for r in results),
        "rr_received": sum(r.rr_received for r in results),
    }

"""A bounded storm of bad SIP at a ChainProxy; afterwards SIPp's calls through it all succeed.

The storm: ``STORM`` datagrams made by a seeded random mutation of valid SIP messages (bit flips,
truncation, lost/duplicated/swapped lines, garbage and non-UTF-8 values, bad Content-Length,
CSeq, Max-Forwards and start lines, bare CR/LF line ends, oversize messages, Via stacks beyond
the header limit), then the RFC 4475 torture messages of ``tests/unit/sip_torture/`` to the
first proxy and to the inner one. Every ``PROBE_EVERY`` datagrams a valid OPTIONS crosses the
chain to the UA and back: its 200 shows the proxies processed everything before it (loopback
keeps one socket's datagrams in order) and are still serving.

Torture messages name hosts like ``192.0.2.15``, ``example.com`` or ``127.0.0.1:5080``; a test
seam on each proxy drops (and counts) any datagram to an address outside the test's own port
block on 127.0.0.1, so nothing leaves the box, no name is resolved and no other local service
is hit.
"""

from __future__ import annotations

import random
import socket
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from experiments.sip_demo import ChainProxy
from nf_modules.user_agent import UserAgent
from tests.interop.conftest import (
    HOST,
    Capture,
    Node,
    PortBlock,
    Sipp,
    assert_every_call_has,
    assert_sent_cleanly,
    start_node,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

SEED = 4475
STORM = 300
PROBE_EVERY = 50
CALLS = 20
TORTURE = Path(__file__).resolve().parents[1] / "unit" / "sip_torture"


class OnlyToBlock:
    """A transport seam that lets datagrams out only to 127.0.0.1 ports of the test's block."""

    def __init__(self, ports: PortBlock) -> None:
        self.first, self.last = ports.first, ports.last
        self.dropped: Counter[str] = Counter()

    def outbound(self, data: bytes, addr: Any, now: float) -> list[tuple[float, bytes, Any]]:
        if addr[0] == HOST and self.first <= addr[1] <= self.last:
            return [(0.0, data, addr)]
        self.dropped[f"{addr[0]}:{addr[1]}"] += 1
        return []

    def inbound(self, data: bytes, addr: Any, now: float) -> list[tuple[float, bytes, Any]]:
        return [(0.0, data, addr)]


# -- valid messages to mutate ------------------------------------------------------------------


def valid_messages(sender: int, proxy: int, ua: int, n: int) -> list[bytes]:
    """Valid requests and responses, unique per ``n``, whose answers come back to ``sender``."""
    via = f"Via: SIP/2.0/UDP {HOST}:{sender};branch=z9hG4bKstorm{n}x;rport"
    common = f"From: <sip:storm@{HOST}:{sender}>;tag=s{n}\r\nCall-ID: storm-{n}@{HOST}\r\nMax-Forwards: 70\r\n"
    sdp = f"v=0\r\no=- {n} 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"

    def request(method: str, uri: str, to: str, extra: str = "", body: str = "") -> bytes:
        return (
            f"{method} {uri} SIP/2.0\r\n{via}\r\n{common}To: {to}\r\nCSeq: {n + 1} {method}\r\n"
            f"Contact: <sip:storm@{HOST}:{sender}>\r\n{extra}Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()

    def response(status: str, method: str) -> bytes:
        return (
            f"SIP/2.0 {status}\r\nVia: SIP/2.0/UDP {HOST}:{proxy};branch=z9hG4bKgone{n}\r\n{via}\r\n"
            f"{common}To: <sip:service@{HOST}>;tag=r{n}\r\nCSeq: {n + 1} {method}\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    initial_to = f"<sip:service@{HOST}:{proxy}>"
    in_dialog_uri = f"sip:service@{HOST}:{ua}"
    return [
        request("INVITE", f"sip:service@{HOST}:{proxy}", initial_to, "Content-Type: application/sdp\r\n", sdp),
        request("OPTIONS", f"sip:service@{HOST}:{proxy}", initial_to, "Accept: application/sdp\r\n"),
        request("REGISTER", f"sip:{HOST}:{proxy}", initial_to, "Expires: 3600\r\n"),
        request("BYE", in_dialog_uri, f"{initial_to};tag=r{n}"),
        request("ACK", in_dialog_uri, f"{initial_to};tag=r{n}"),
        request("CANCEL", f"sip:service@{HOST}:{proxy}", initial_to),
        response("200 OK", "INVITE"),
        response("180 Ringing", "INVITE"),
    ]


# -- mutations -------------------------------------------------------------------------------------


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")


def _join(lines: list[bytes]) -> bytes:
    return b"\r\n".join(lines)


def _header_index(lines: list[bytes], rng: random.Random) -> int:
    """A header line's index (1 .. before the blank line), or 0 when there is none."""
    end = lines.index(b"") if b"" in lines else len(lines)
    return rng.randrange(1, end) if end > 1 else 0


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data or b"?")
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(1, len(data))] if len(data) > 1 else data


def drop_line(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    del lines[_header_index(lines, rng) if rng.random() < 0.9 else 0]
    return _join(lines)


def duplicate_line(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    i = _header_index(lines, rng)
    lines.insert(i, lines[i])
    return _join(lines)


def swap_lines(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))  # split() never returns []
    lines[i], lines[j] = lines[j], lines[i]
    return _join(lines)


def insert_garbage(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.randbytes(rng.randint(1, 40)) + data[at:]


def garbage_value(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    i = _header_index(lines, rng)
    name = lines[i].split(b":", 1)[0]
    value = rng.choice([rng.randbytes(rng.randint(0, 30)), b"\xff\xfe\xc3(", b"\x00", b"<sip:", b'"unclosed', b";;;,,,"])
    lines[i] = name + b": " + value
    return _join(lines)


def _set_header(data: bytes, name: bytes, value: bytes) -> bytes:
    lines = _lines(data)
    for i, line in enumerate(lines):
        if line.lower().startswith(name.lower() + b":"):
            lines[i] = name + b": " + value
            return _join(lines)
    return data


def bad_content_length(data: bytes, rng: random.Random) -> bytes:
    value = rng.choice([b"-1", b"abc", b"99999999999", b"70000", b"", str(rng.randint(1, 5000)).encode()])
    return _set_header(data, b"Content-Length", value)


def bad_cseq(data: bytes, rng: random.Random) -> bytes:
    value = rng.choice([b"x INVITE", b"4294967296 INVITE", b"1", b"1 FOO", b"-5 BYE", b""])
    return _set_header(data, b"CSeq", value)


def bad_max_forwards(data: bytes, rng: random.Random) -> bytes:
    return _set_header(data, b"Max-Forwards", rng.choice([b"0", b"256", b"-1", b"abc", b"1"]))


def bad_start_line(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    lines[0] = rng.choice(
        [b"INVITE sip:a@b SIP/3.0", b"invite sip:a@b SIP/2.0", b"INVITE  sip:a@b SIP/2.0", b"INVITE sip:a b@c SIP/2.0",
         b"INVITE SIP/2.0", b"SIP/2.0 99999999999 Big", b"SIP/2.0 OK", b"HTTP/1.1 200 OK", b"INVITE <sip:a@b> SIP/2.0",
         b"", rng.randbytes(20)]
    )  # fmt: skip
    return _join(lines)


def bare_line_ends(data: bytes, rng: random.Random) -> bytes:
    return data.replace(b"\r\n", rng.choice([b"\n", b"\r", b"\r\r\n"]))


def oversize(data: bytes, rng: random.Random) -> bytes:
    head, _, body = data.partition(b"\r\n\r\n")
    return head + b"\r\nX-Pad: " + b"a" * rng.randint(60000, 65000) + b"\r\n\r\n" + body


def via_stack(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    via = next((line for line in lines if line.startswith(b"Via:")), b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKv")
    return _join([lines[0]] + [via] * rng.randint(250, 400) + lines[1:])


MUTATIONS = [
    flip_bytes, truncate, drop_line, duplicate_line, swap_lines, insert_garbage, garbage_value,
    bad_content_length, bad_cseq, bad_max_forwards, bad_start_line, bare_line_ends, oversize, via_stack,
]  # fmt: skip


def storm(rng: random.Random, count: int, sender: int, proxy: int, ua: int) -> list[bytes]:
    out = []
    for n in range(count):
        data = rng.choice(valid_messages(sender, proxy, ua, n))
        for mutate in rng.sample(MUTATIONS, rng.choice([1, 1, 2, 3])):
            data = mutate(data, rng)
        out.append(data[:65000])
    return out


def torture_messages() -> list[tuple[str, bytes]]:
    if not TORTURE.is_dir():
        return []
    return [(path.stem, path.read_bytes()[:65000]) for path in sorted(TORTURE.glob("*.dat"))]


# -- the raw peer ------------------------------------------------------------------------------------


class RawPeer:
    """A blocking UDP socket on the test's thread: fire datagrams, wait for a probe's answer."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, port))
        self.port = port
        self.received = Counter[str]()

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.sock.sendto(data, to)

    def probe(self, to: tuple[str, int], n: int, timeout: float = 10.0) -> str:
        """Send a valid OPTIONS via ``to`` (resent every 0.5 s, as Timer E would) and return its
        final status line, or fail. Resending covers a probe the kernel dropped because the
        proxy's receive buffer was still full of the storm."""
        call_id = f"probe-{n}@{HOST}"
        options = (
            f"OPTIONS sip:service@{HOST}:{to[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{self.port};branch=z9hG4bKprobe{n};rport\r\nMax-Forwards: 70\r\n"
            f"From: <sip:probe@{HOST}>;tag=p{n}\r\nTo: <sip:service@{HOST}>\r\nCall-ID: {call_id}\r\n"
            f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        deadline = time.monotonic() + timeout
        resend = 0.0
        while (now := time.monotonic()) < deadline:
            if now >= resend:
                self.send(options, to)
                resend = now + 0.5
            self.sock.settimeout(max(0.001, min(resend, deadline) - now))
            try:
                data, _ = self.sock.recvfrom(70000)
            except TimeoutError:
                continue
            except ConnectionRefusedError:  # ICMP from an earlier datagram
                continue
            first = data.split(b"\r\n", 1)[0].decode(errors="replace")
            self.received[first[:40]] += 1
            if f"Call-ID: {call_id}".encode() in data and first.startswith("SIP/2.0 ") and not first.startswith("SIP/2.0 1"):
                return first
        pytest.fail(f"probe {n} via {to} got no final answer within {timeout} s (received {dict(self.received)})")

    def close(self) -> None:
        self.sock.close()


def start_guarded_chain(runtime, ports: PortBlock, target: tuple[str, int]) -> tuple[list[Node], list[OnlyToBlock]]:
    seams = [OnlyToBlock(ports), OnlyToBlock(ports)]
    second = start_node(runtime, ChainProxy, "proxy2", target, bind=ports.address(), seam=seams[1])
    first = start_node(runtime, ChainProxy, "proxy1", second.address, bind=ports.address(), seam=seams[0])
    return [first, second], seams


@dataclass
class Storm:
    ua: Node
    chain: list[Node]
    seams: list[OnlyToBlock]
    sent: int
    answers: Counter[str]


def run_storm(runtime, ports: PortBlock) -> Storm:
    """UA behind two guarded proxies; the storm at the first, torture messages at both."""
    ua = start_node(runtime, UserAgent, "callee", "service", bind=ports.address())
    chain, seams = start_guarded_chain(runtime, ports, ua.address)
    peer = RawPeer(ports.take())
    sent = 0
    try:
        datagrams = storm(random.Random(SEED), STORM, peer.port, chain[0].port, ua.port)
        for i, data in enumerate(datagrams, 1):
            peer.send(data, chain[0].address)
            sent += 1
            if i % PROBE_EVERY == 0:
                assert peer.probe(chain[0].address, i) == "SIP/2.0 200 OK"
        for target in chain:  # the first proxy and the inner one
            for _name, data in torture_messages():
                peer.send(data, target.address)
                sent += 1
            assert peer.probe(target.address, target.port) == "SIP/2.0 200 OK"
    finally:
        peer.close()
    return Storm(ua, chain, seams, sent, peer.received)


def test_storm_then_calls_still_succeed(runtime, ports: PortBlock, sipp: Sipp, tshark_capture: Capture) -> None:
    run = run_storm(runtime, ports)
    nodes = [run.ua, *run.chain]

    assert all(node.alive for node in nodes)
    first = run.chain[0].stats()
    assert first["malformed_answered"] > 0 and first["malformed_dropped"] > 0, first
    assert sum(seam.dropped.total() for seam in run.seams) > 0  # the torture messages' foreign hosts

    result = sipp.run("uac_route_set", run.chain[0].address, calls=CALLS, rate=20)

    assert result.ok and result.successful == CALLS and result.failed == 0, result.report()
    assert all(node.alive for node in nodes)
    decoded = tshark_capture.decode(nodes)
    assert_every_call_has(decoded, sipp.runs[0].port, CALLS, ("INVITE", "ACK", "BYE"))
    calls = set(decoded.by_call(sipp.runs[0].port))
    # What the proxies relay of the storm is the storm's business (tshark rightly flags some
    # RFC 4475 messages); the calls and probes, end to end, must be clean.
    assert_sent_cleanly(decoded, nodes, where=lambda p: p.call_id in calls or (p.call_id or "").startswith("probe-"))


def test_answers_to_malformed_requests_are_well_formed(runtime, ports: PortBlock, tshark_capture: Capture) -> None:
    run = run_storm(runtime, ports)
    decoded = tshark_capture.decode()
    ours = [n.port for n in (run.ua, *run.chain)]
    answers = [p for p in decoded.sip(*ours) if (p.status or 0) >= 400 and (p.call_id or "").startswith("storm-")]
    assert len(answers) > 50, decoded.labels(*ours)
    bad = [p for p in answers if p.problems]
    assert not bad, f"{len(bad)} of our {len(answers)} error answers to the storm are malformed:\n" + decoded.report(bad)


def test_storm_raises_no_hook_errors(runtime, ports: PortBlock) -> None:
    with structlog.testing.capture_logs() as logs:
        run = run_storm(runtime, ports)
        counts = {node.name: node.stats().get("hook_errors", 0) for node in (run.ua, *run.chain)}
    failures = [f"{e.get('instance')}: {e.get('hook_event')}: {e.get('error')}" for e in logs if e["event"] == "sip_hook_failed"]
    assert not any(counts.values()), f"hook errors {counts}:\n" + "\n".join(sorted(set(failures)))

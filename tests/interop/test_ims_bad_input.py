"""Bad input at the whole emulated IMS (issue 3, "Bad input"): nothing kills a module, every
answerable malformed request gets its precise 4xx/5xx, and SIPp's calls still complete afterwards.

The IMS is every module of ``topologies/default.toml`` on ports of the test's block (``start_ims``).
A raw UDP peer on the block sends:

* the RFC 4475 torture messages of ``tests/unit/sip_torture/`` to the P-CSCF and to inner modules
  (the S-CSCF's Incoming Leg Control, the AS's Media Policy): each request the codec rejects is
  answered with the status the INDEX names, the three that cannot be answered (two responses, one
  request without From/To/Call-ID) are counted as dropped;
* requests of unknown methods (405 from a module addressed itself, 405 from the callee's UE) and
  for unknown users (404);
* a seeded storm of randomly mutated IMS requests and responses (``MUTATIONS`` of
  ``test_malformed_storm.py``), with a probe every ``PROBE_EVERY`` datagrams: an OPTIONS that
  crosses P-CSCF, S-CSCF, AS, S-CSCF, P-CSCF to an emulated UE and must come back 200.

Torture messages name hosts like ``example.com`` or ``127.0.0.1:5080``: every SIP module gets a
transport seam that drops (and records) any datagram to an address outside the test's block, so
nothing leaves the box and no name is resolved.
"""

from __future__ import annotations

import random
import re
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from actors.sip.message import SipMessage
from tests.interop.conftest import HOST, ImsUnderTest, PortBlock, Sipp
from tests.interop.test_malformed_storm import MUTATIONS

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

SEED = 4475
STORM = 300
PROBE_EVERY = 50
CALLS = 10
DOMAIN = "ims.example"
TORTURE = Path(__file__).resolve().parents[1] / "unit" / "sip_torture"
# Torture messages the codec rejects but no answer can be formed for: counted and dropped.
UNANSWERABLE = {"bigcode": "a response", "scalarlg": "a response", "insuf": "no From, To or Call-ID to copy"}
INNER = ("scscf_incoming_leg_control", "as_media_policy")
ZEROMF = "zeromf.jfasdlfnm2o2l43r5u0asdfas"  # the Call-ID of RFC 4475's Max-Forwards: 0 OPTIONS
CALL_ID = re.compile(rb"\r\n(?:Call-ID|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)


def call_id_of(data: bytes) -> str | None:
    match = CALL_ID.search(data)
    return match.group(1).strip().decode(errors="replace") if match else None


# -- the RFC 4475 messages -------------------------------------------------------------------


@dataclass(frozen=True)
class Torture:
    name: str
    data: bytes
    codec: str  # "parse" or "reject"
    status: str  # INDEX's status column

    @property
    def call_id(self) -> str | None:
        return call_id_of(self.data)


def torture_messages() -> list[Torture]:
    index = {}
    for line in (TORTURE / "INDEX").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, codec, status = line.split()[:3]
            index[name] = (codec, status)
    return [Torture(p.stem, p.read_bytes()[:65000], *index[p.stem]) for p in sorted(TORTURE.glob("*.dat"))]


def expected_malformed_answers() -> dict[str, int]:
    """Call-ID -> status, for every rejected torture request an answer can be formed for."""
    out = {}
    for t in torture_messages():
        if t.codec == "reject" and t.name not in UNANSWERABLE:
            assert t.call_id and t.call_id not in out, f"{t.name}: its Call-ID must identify its answer"
            out[t.call_id] = int(t.status)
    return out


# -- the seam --------------------------------------------------------------------------------


class BlockOnly:
    """A transport seam: datagrams leave only to 127.0.0.1 ports of the test's block; the rest is
    dropped and recorded as ``(module, "host:port", first line)``."""

    def __init__(self, module: str, ports: PortBlock, dropped: list[tuple[str, str, str]]) -> None:
        self.module = module
        self.first, self.last = ports.first, ports.last
        self.dropped = dropped

    def outbound(self, data: bytes, addr: Any, now: float) -> list[tuple[float, bytes, Any]]:
        if addr[0] == HOST and self.first <= addr[1] <= self.last:
            return [(0.0, data, addr)]
        first_line = data.split(b"\r\n", 1)[0][:80].decode(errors="replace")
        self.dropped.append((self.module, f"{addr[0]}:{addr[1]}", first_line))
        return []

    def inbound(self, data: bytes, addr: Any, now: float) -> list[tuple[float, bytes, Any]]:
        return [(0.0, data, addr)]


@dataclass
class GuardedIms:
    ims: ImsUnderTest
    dropped: list[tuple[str, str, str]]  # what the seams kept from leaving the block
    logs: list[dict[str, Any]] = field(default_factory=list)  # structlog events while it ran

    def hook_failures(self) -> list[str]:
        """``module: event: error`` of every exception a SIP hook raised (``SipActor`` logs each)."""
        failed = [e for e in self.logs if e["event"] == "sip_hook_failed"]
        return [f"{e.get('instance')}: {e.get('hook_event')}: {e.get('error')}" for e in failed]

    def assert_unharmed(self, tolerate: tuple[str, ...] = ()) -> None:
        """No module died and no hook raised (a hook error is a bug the input found), except
        failures whose text contains one of ``tolerate`` (bugs already reported by an xfail)."""
        assert not self.ims.dead(), f"modules died: {self.ims.dead()}"
        counted = {name: n for name, node in self.ims.nodes.items() if (n := node.stats().get("hook_errors", 0))}
        failures = self.hook_failures()
        assert sum(counted.values()) == len(failures), f"hook errors {counted}, logged: {failures}"
        unexpected = sorted({f for f in failures if not any(t in f for t in tolerate)})
        assert not unexpected, f"hook errors {counted}:\n" + "\n".join(unexpected)


@pytest.fixture
def ports() -> PortBlock:
    return PortBlock(size=120)


@pytest.fixture
def guarded(ims_factory: Callable[..., ImsUnderTest], ports: PortBlock) -> Iterator[GuardedIms]:
    """The IMS with a :class:`BlockOnly` seam on every SIP module, its logs captured."""
    dropped: list[tuple[str, str, str]] = []
    with structlog.testing.capture_logs() as logs:
        ims = ims_factory(seams=lambda name: BlockOnly(name, ports, dropped))
        yield GuardedIms(ims, dropped, logs)


# -- the raw peer ------------------------------------------------------------------------------


class Peer:
    """A blocking UDP socket of the block on the test's thread: sends requests, collects answers
    by Call-ID, ACKs final non-2xx answers to its INVITEs (so they are not retransmitted)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, port))
        self.port = port
        self.answers: dict[str, list[str]] = defaultdict(list)  # Call-ID -> status lines
        self.messages: dict[str, list[bytes]] = defaultdict(list)  # Call-ID -> the answers themselves
        self.n = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.sock.sendto(data, to)

    def request(
        self, method: str, uri: str, *, to_uri: str | None = None, to_tag: str | None = None,
        headers: str = "", body: str = "", call_id: str | None = None, content_length: int | None = None,
    ) -> tuple[bytes, str]:
        """A well-formed request whose answers come back to this peer, and its Call-ID."""
        self.n += 1
        call_id = call_id or f"bad-input-{self.port}-{self.n}@{HOST}"
        to = f"<{to_uri or uri}>" + (f";tag={to_tag}" if to_tag else "")
        length = len(body.encode()) if content_length is None else content_length
        data = (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{self.port};branch=z9hG4bKbad{self.port}x{self.n};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:prober@{DOMAIN}>;tag=p{self.n}\r\nTo: {to}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContact: <sip:prober@{HOST}:{self.port}>\r\n"
            f"{headers}Content-Length: {length}\r\n\r\n{body}"
        ).encode()
        return data, call_id

    def collect(self, until: Callable[[], bool], timeout: float) -> bool:
        """Read answers until ``until()`` holds (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while not until():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(min(remaining, 0.1))
            try:
                data, source = self.sock.recvfrom(70000)
            except (TimeoutError, ConnectionRefusedError):  # ICMP after a datagram to a closed port
                continue
            first = data.split(b"\r\n", 1)[0].decode(errors="replace")
            call_id = call_id_of(data)
            if call_id is None or not first.startswith("SIP/2.0 "):
                continue
            self.answers[call_id].append(first)
            self.messages[call_id].append(data)
            self._ack(data, source)
        return True

    def final(self, call_id: str) -> int | None:
        statuses = [int(line.split()[1]) for line in self.answers.get(call_id, []) if line.split()[1].isdigit()]
        finals = [s for s in statuses if s >= 200]
        return finals[0] if finals else None

    def ask(self, data: bytes, call_id: str, to: tuple[str, int], timeout: float = 10.0) -> int:
        """Send ``data`` (again every 0.5 s, as Timer E/A would) until its final answer; the status."""
        deadline = time.monotonic() + timeout
        while self.final(call_id) is None and time.monotonic() < deadline:
            self.send(data, to)
            self.collect(lambda: self.final(call_id) is not None, min(0.5, max(0.0, deadline - time.monotonic())))
        status = self.final(call_id)
        method = data.split(b" ", 1)[0].decode(errors="replace")
        assert status is not None, f"no final answer to {method} {call_id} in {timeout} s: {self.answers.get(call_id)}"
        return status

    def allow(self, call_id: str) -> set[str] | None:
        """The methods in the Allow header of the last answer for ``call_id`` (None: no Allow)."""
        answer = SipMessage.parse(self.messages[call_id][-1])
        values = answer.get_all("Allow")
        return {m.strip() for v in values for m in v.split(",") if m.strip()} if values else None

    def _ack(self, data: bytes, source: tuple[str, int]) -> None:
        """RFC 3261 17.1.1.3: ACK a final non-2xx answer to our INVITE, hop by hop."""
        try:
            response = SipMessage.parse(data)
        except Exception:  # noqa: BLE001  (not ours to judge here)
            return
        if response.cseq is None or response.cseq[1] != "INVITE" or (response.status or 0) < 300:
            return
        top_via = response.get("Via")
        if top_via is None or f":{self.port};" not in top_via:
            return
        ack = (
            f"ACK {(response.get('To') or '').split('<', 1)[-1].split('>', 1)[0]} SIP/2.0\r\nVia: {top_via}\r\n"
            f"Max-Forwards: 70\r\nFrom: {response.get('From')}\r\nTo: {response.get('To')}\r\n"
            f"Call-ID: {response.call_id}\r\nCSeq: {response.cseq[0]} ACK\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        self.send(ack, source)

    def probe(self, ims: ImsUnderTest, n: int, timeout: float = 10.0) -> int:
        """An OPTIONS through the whole IMS to an emulated UE (P-CSCF ... S-CSCF OLC, P-CSCF, UE)."""
        data, call_id = self.request("OPTIONS", f"sip:ue0004@{DOMAIN}", call_id=f"probe-{n}@{HOST}")
        return self.ask(data, call_id, ims.pcscf.address, timeout)


@pytest.fixture
def peer(ports: PortBlock) -> Iterator[Peer]:
    p = Peer(ports.take())
    try:
        yield p
    finally:
        p.close()


def sdp(n: int) -> str:
    return f"v=0\r\no=- {n} 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"


# -- torture ---------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["pcscf", *INNER])
def test_torture_messages_are_answered_precisely_or_dropped(guarded: GuardedIms, peer: Peer, target: str) -> None:
    ims = guarded.ims
    expected = expected_malformed_answers()
    before = ims.stats(target)

    for message in torture_messages():
        peer.send(message.data, ims.address(target))
    peer.collect(lambda: all(peer.final(c) for c in [*expected, ZEROMF]), 10)

    got = {c: peer.final(c) for c in expected}
    assert got == expected, f"answers to the rejected torture requests: got {got}, expected {expected}"
    assert peer.final(ZEROMF) == 483  # parses, but Max-Forwards: 0
    rejected = sum(1 for t in torture_messages() if t.codec == "reject")
    assert rejected == len(expected) + len(UNANSWERABLE)

    def grown(counter: str) -> int:
        return ims.stats(target).get(counter, 0) - before.get(counter, 0)

    ims.wait_for(f"{target} to count the answered datagrams", lambda: grown("malformed_answered") == len(expected))
    assert grown("malformed_dropped") == len(UNANSWERABLE)
    assert peer.probe(ims, 1) == 200
    guarded.assert_unharmed()


# -- unknown methods and users ------------------------------------------------------------------


def test_unknown_methods_get_405(guarded: GuardedIms, peer: Peer) -> None:
    """To a module itself: 405 from it; through the IMS to a user: 405 from the UE. Both with Allow."""
    ims = guarded.ims
    for name in ("pcscf", *INNER, "scscf_session_controller", "as_outgoing_leg_control"):
        host, port = ims.address(name)
        data, call_id = peer.request("FROBNICATE", f"sip:{host}:{port}")
        assert peer.ask(data, call_id, (host, port)) == 405, name
        allowed = peer.allow(call_id)
        assert allowed and "OPTIONS" in allowed and "FROBNICATE" not in allowed, (name, allowed)
    for uri in (f"sip:ue0006@{DOMAIN}", f"sip:ue0006@{ims.pcscf.address[0]}:{ims.pcscf.port}"):
        data, call_id = peer.request("FROBNICATE", uri)
        assert peer.ask(data, call_id, ims.pcscf.address) == 405, uri
        allowed = peer.allow(call_id)
        assert allowed and "INVITE" in allowed and "FROBNICATE" not in allowed, (uri, allowed)
    assert ims.stats("ue_pool")["rx_FROBNICATE"] == 2
    guarded.assert_unharmed()


def test_405_from_a_module_does_not_allow_the_refused_method(guarded: GuardedIms, peer: Peer) -> None:
    ims = guarded.ims
    for name in ("pcscf", "as_media_policy"):
        host, port = ims.address(name)
        for method in ("MESSAGE", "INVITE"):
            data, call_id = peer.request(method, f"sip:{host}:{port}")
            assert peer.ask(data, call_id, (host, port)) == 405, (name, method)
            assert method not in (peer.allow(call_id) or set()), (name, method, peer.allow(call_id))


def test_requests_for_unknown_users_get_404(guarded: GuardedIms, peer: Peer) -> None:
    ims = guarded.ims
    pcscf = f"{ims.pcscf.address[0]}:{ims.pcscf.port}"
    cases = [
        ("INVITE", f"sip:nobody@{DOMAIN}", "Content-Type: application/sdp\r\n", sdp(1)),
        ("INVITE", f"sip:nobody@{pcscf}", "Content-Type: application/sdp\r\n", sdp(2)),  # SIPp's style
        ("OPTIONS", f"sip:nobody@{DOMAIN}", "", ""),
        ("MESSAGE", f"sip:nobody@{pcscf}", "Content-Type: text/plain\r\n", "hello"),
        ("FROBNICATE", f"sip:nobody@{DOMAIN}", "", ""),
    ]
    for method, uri, headers, body in cases:
        data, call_id = peer.request(method, uri, headers=headers, body=body)
        assert peer.ask(data, call_id, ims.pcscf.address) == 404, (method, uri)
    # REGISTER of an identity the HSS does not know: 404 from the registrar, no challenge
    data, call_id = peer.request("REGISTER", f"sip:{DOMAIN}", to_uri=f"sip:nobody@{DOMAIN}", headers="Expires: 600\r\n")
    assert peer.ask(data, call_id, ims.pcscf.address) == 404
    # and a known one is challenged, not registered
    data, call_id = peer.request("REGISTER", f"sip:{DOMAIN}", to_uri=f"sip:ue0007@{DOMAIN}", headers="Expires: 600\r\n")
    assert peer.ask(data, call_id, ims.pcscf.address) == 401
    assert len(ims.bindings("ue0007")) == 1  # the pool's own
    ims.wait_for("the MRF sessions of the refused INVITEs to end", lambda: ims.mrf_dialogs()["Ended"] == 2)
    dialogs = ims.pcscf_dialogs()
    assert dialogs["Morgue"] == 2 and sum(dialogs.values()) == 2, dialogs
    guarded.assert_unharmed()


def test_requests_for_users_of_other_domains_get_404(guarded: GuardedIms, peer: Peer) -> None:
    ims = guarded.ims
    for method, headers, body in (("OPTIONS", "", ""), ("INVITE", "Content-Type: application/sdp\r\n", sdp(3))):
        data, call_id = peer.request(method, "sip:nobody@example.com", headers=headers, body=body)
        assert peer.ask(data, call_id, ims.pcscf.address, timeout=3) == 404, method


def test_oversize_requests_get_413_and_414(guarded: GuardedIms, peer: Peer) -> None:
    ims = guarded.ims
    data, call_id = peer.request("OPTIONS", f"sip:ue0004@{DOMAIN}", content_length=70000)
    assert peer.ask(data, call_id, ims.pcscf.address) == 413
    data, call_id = peer.request("OPTIONS", f"sip:ue0004@{DOMAIN};x={'a' * 5000}", to_uri=f"sip:ue0004@{DOMAIN}")
    assert peer.ask(data, call_id, ims.pcscf.address) == 414
    guarded.assert_unharmed()


# A request carrying bytes that are not UTF-8 in its Call-ID, tags or Route (the codec tolerates
# them): forwarded like any other. The storm produces such requests too.


def test_request_with_non_utf8_call_id_is_forwarded(guarded: GuardedIms, peer: Peer) -> None:
    ims = guarded.ims
    data, _ = peer.request("OPTIONS", f"sip:ue0004@{DOMAIN}", call_id="non-utf8-@@@@@@@@@@")
    data = data.replace(b"@@@@@@@@@@", b"\xd8\xff@127.0.0.1")
    status = peer.ask(data, call_id_of(data) or "", ims.pcscf.address)
    assert (status, guarded.hook_failures()) == (200, [])


# -- the storm ---------------------------------------------------------------------------------


def ims_messages(peer: int, pcscf: int, pool: int, n: int) -> list[bytes]:
    """Valid requests and responses for the IMS, unique per ``n``; answers come back to ``peer``.
    No request would set up a real call: the INVITEs go to users that do not exist."""
    via = f"Via: SIP/2.0/UDP {HOST}:{peer};branch=z9hG4bKstorm{n}x;rport"
    common = f"From: <sip:storm@{DOMAIN}>;tag=s{n}\r\nCall-ID: storm-{n}@{HOST}\r\nMax-Forwards: 70\r\n"

    def request(method: str, uri: str, to: str, extra: str = "", body: str = "") -> bytes:
        return (
            f"{method} {uri} SIP/2.0\r\n{via}\r\n{common}To: {to}\r\nCSeq: {n + 1} {method}\r\n"
            f"Contact: <sip:storm@{HOST}:{peer}>\r\n{extra}Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()

    def response(status: str, method: str) -> bytes:
        return (
            f"SIP/2.0 {status}\r\nVia: SIP/2.0/UDP {HOST}:{pcscf};branch=z9hG4bKgone{n}\r\n{via}\r\n"
            f"{common}To: <sip:ue0002@{DOMAIN}>;tag=r{n}\r\nCSeq: {n + 1} {method}\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    nobody = f"sip:nobody{n}@{DOMAIN}"
    in_dialog = f"sip:ue0002@{HOST}:{pool}"
    return [
        request("INVITE", f"sip:nobody{n}@{HOST}:{pcscf}", f"<{nobody}>", "Content-Type: application/sdp\r\n", sdp(n)),
        request("OPTIONS", f"sip:ue0004@{DOMAIN}", f"<sip:ue0004@{DOMAIN}>", "Accept: application/sdp\r\n"),
        request("REGISTER", f"sip:{DOMAIN}", f"<sip:ue0005@{DOMAIN}>", "Expires: 600\r\n"),
        request("MESSAGE", nobody, f"<{nobody}>", "Content-Type: text/plain\r\n", "storm"),
        request("FROBNICATE", f"sip:ue0006@{DOMAIN}", f"<sip:ue0006@{DOMAIN}>"),
        request("BYE", in_dialog, f"<sip:ue0002@{DOMAIN}>;tag=r{n}"),
        request("ACK", in_dialog, f"<sip:ue0002@{DOMAIN}>;tag=r{n}"),
        request("CANCEL", nobody, f"<{nobody}>"),
        response("200 OK", "INVITE"),
        response("180 Ringing", "INVITE"),
    ]


def storm(rng: random.Random, count: int, peer: int, pcscf: int, pool: int) -> list[bytes]:
    out = []
    for n in range(count):
        data = rng.choice(ims_messages(peer, pcscf, pool, n))
        for mutate in rng.sample(MUTATIONS, rng.choice([1, 1, 2, 3])):
            data = mutate(data, rng)
        out.append(data[:65000])
    return out


def test_storm_and_torture_then_sipp_calls_complete(guarded: GuardedIms, peer: Peer, sipp: Sipp) -> None:
    ims = guarded.ims
    before = {name: node.stats() for name, node in ims.nodes.items()}

    datagrams = storm(random.Random(SEED), STORM, peer.port, ims.pcscf.port, ims.nodes["ue_pool"].port)
    for i, data in enumerate(datagrams, 1):
        peer.send(data, ims.pcscf.address)
        if i % PROBE_EVERY == 0:
            assert peer.probe(ims, i) == 200
    for n, target in enumerate(("pcscf", "as_media_policy"), STORM + 1):
        for message in torture_messages():
            peer.send(message.data, ims.address(target))
        assert peer.probe(ims, n) == 200
    guarded.assert_unharmed()

    result = sipp.run("uac", ims.pcscf.address, calls=CALLS, rate=10, service="ue0002", timeout=30)

    assert result.ok and result.successful == CALLS and result.failed == 0, result.report()
    guarded.assert_unharmed()
    after = {name: node.stats() for name, node in ims.nodes.items()}
    counters = ("malformed_answered", "malformed_dropped")
    grew = {name: Counter({k: after[name].get(k, 0) - before[name].get(k, 0) for k in counters}) for name in after}
    assert grew["pcscf"]["malformed_answered"] > 0 and grew["pcscf"]["malformed_dropped"] > 0, grew["pcscf"]
    assert grew["as_media_policy"]["malformed_answered"] == len(expected_malformed_answers()), grew["as_media_policy"]
    assert guarded.dropped, "the torture messages' foreign hosts should have been kept in the block"

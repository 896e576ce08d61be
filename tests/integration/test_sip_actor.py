"""SipActor and the proxy/UA built on it, over real UDP on loopback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from actors import Runtime
from actors.sip.message import SipMessage
from actors.transport import UdpEndpoint
from experiments.sip_demo import ChainProxy, run_sip_demo
from nf_modules.user_agent import UserAgent

ROOT = Path(__file__).resolve().parents[2]
WAIT = 10.0


class Exchange:
    """A raw UDP peer: send bytes, await the next datagram."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.endpoint: UdpEndpoint | None = None

    async def __aenter__(self) -> Exchange:
        self.endpoint = await UdpEndpoint.open(("127.0.0.1", 0), lambda d, a: self.inbox.put_nowait(d))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.endpoint.close()

    async def ask(self, data: bytes, to: tuple[str, int]) -> SipMessage:
        self.endpoint.send(data, to)
        return SipMessage.parse(await asyncio.wait_for(self.inbox.get(), WAIT))


def options(branch: str, via_port: int, extra: str = "") -> bytes:
    return (
        f"OPTIONS sip:bob@ims.example SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{via_port};branch=z9hG4bK{branch}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:t@ims.example>;tag=9\r\nTo: <sip:bob@ims.example>\r\n"
        f"Call-ID: {branch}@test\r\nCSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


class Exploding(UserAgent):
    def on_request(self, request: SipMessage, transaction: Any, source: Any) -> Any:
        if request.method == "OPTIONS" and request.get("X-Explode"):
            raise RuntimeError("bug in a hook")
        return super().on_request(request, transaction, source)


async def test_bad_input_is_answered_or_dropped_and_the_actor_lives() -> None:
    async with Runtime.attach():
        ua = Exploding.start("ua", "bob").proxy()
        address = await ua.get_address()
        async with Exchange() as peer:
            port = peer.endpoint.local_address[1]
            # a bug in a hook: 500, counted, the actor keeps serving
            answer = await peer.ask(options("boom", port, "X-Explode: 1\r\n"), address)
            assert answer.status == 500
            # malformed but answerable: the codec's status
            bad = options("bad", port).replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
            answer = await peer.ask(bad, address)
            assert answer.status == 400 and answer.call_id == "bad@test"
            # not SIP at all and a keep-alive: dropped silently
            peer.endpoint.send(b"\xff\xfe garbage", address)
            peer.endpoint.send(b"\r\n\r\n", address)
            # and a normal request still works
            answer = await peer.ask(options("ok", port), address)
            assert answer.status == 200
        stats = await ua.get_stats()
        assert stats["hook_errors"] == 1
        assert stats["malformed_answered"] == 1
        assert stats["malformed_dropped"] == 1
        assert stats["keepalive"] == 1


async def test_proxy_answers_483_when_max_forwards_is_zero() -> None:
    async with Runtime.attach():
        proxy = ChainProxy.start("p", ("127.0.0.1", 9)).proxy()
        address = await proxy.get_address()
        async with Exchange() as peer:
            request = options("mf", peer.endpoint.local_address[1]).replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
            answer = await peer.ask(request, address)
        assert answer.status == 483


async def test_proxy_turns_a_dead_next_hop_into_408() -> None:
    """Timer F of the proxy's client transaction (T1 shortened so the test is quick)."""
    from actors.sip.timers import SipTimers

    async with Runtime.attach():
        async with Exchange() as dead:  # a socket that never answers
            proxy = ChainProxy.start("p", dead.endpoint.local_address[:2], timers=SipTimers(t1=0.01, t2=0.04)).proxy()
            address = await proxy.get_address()
            async with Exchange() as peer:
                answer = await peer.ask(options("to", peer.endpoint.local_address[1]), address)
            received = dead.inbox.qsize()
        assert answer.status == 408
        assert received >= 5  # the request and its Timer E retransmissions reached the dead hop


def test_calls_complete_through_a_proxy_chain() -> None:
    summary = run_sip_demo(calls=6, hops=2, concurrency=3)
    assert summary["completed"] == 6 and summary["failed"] == 0
    assert summary["answered_by_bob"] == 6
    assert summary["malformed_answer"].startswith("SIP/2.0 400")
    # every call crosses the first proxy: INVITE, ACK, BYE in; 100, 180, 200, 200(BYE) back
    assert summary["first_proxy"]["rx_request"] == 6 * 3
    assert summary["first_proxy"]["malformed_dropped"] == 1


def test_run_py_refuses_bad_arguments() -> None:
    bad = subprocess.run(
        [sys.executable, "run.py", "--max-rate", "-3"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert bad.returncode == 2 and "--max-rate" in bad.stderr


@pytest.mark.parametrize("text", [b"", b"\r\n"])
def test_answer_malformed_ignores_empty(text: bytes) -> None:
    from actors.sip.headers import SipParseError
    from actors.sip.malformed import answer_malformed

    assert answer_malformed(text, SipParseError(400, "empty")) is None


async def test_emulated_capacity_queues_then_answers_503_with_retry_after() -> None:
    """5 transactions/s with 2 waiting: a burst of 10 gets 2 served (in order, 0.2 s apart), 8 x 503."""
    async with Runtime.attach():
        ua = UserAgent.start("slow", "bob", capacity=5.0, queue_limit=2).proxy()
        address = await ua.get_address()
        async with Exchange() as peer:
            port = peer.endpoint.local_address[1]
            for i in range(10):
                peer.endpoint.send(options(f"burst{i}", port), address)
            answers = [SipMessage.parse(await asyncio.wait_for(peer.inbox.get(), WAIT)) for _ in range(10)]
        statuses = sorted(a.status for a in answers)
        assert statuses == [200] * 2 + [503] * 8
        assert all(a.get("Retry-After") and int(a.get("Retry-After")) >= 1 for a in answers if a.status == 503)
        assert (await ua.get_stats())["overload_rejected"] == 8

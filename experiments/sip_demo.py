"""The smallest real thing: user agents calling through a chain of proxies on loopback.

UA ``alice`` calls UA ``bob`` through ``hops`` transaction-stateful proxies,
every hop a real UDP socket on 127.0.0.1: INVITE / 100 / 180 / 200 / ACK /
BYE / 200 with Via, Record-Route and Route doing their jobs. A malformed
INVITE and a non-SIP datagram are also sent to the first proxy, to show the
4xx answer and the counted drop. Returns a summary dict. The smallest example of the
runtime (the default demo is :mod:`experiments.demo`); ``ChainProxy`` also serves the SIPp
interop tests.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from actors import Runtime
from actors.sip.message import SipMessage
from actors.transport import UdpEndpoint
from nf_modules.sip_proxy import StatefulProxy, uri_address
from nf_modules.user_agent import CallResult, UserAgent

__all__ = ["ChainProxy", "run_sip_demo"]


class ChainProxy(StatefulProxy):
    """Sends initial requests to a fixed downstream address; in-dialog ones by route."""

    def __init__(self, name: str, downstream: tuple[str, int], **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.downstream = downstream

    def next_hop(self, request: SipMessage) -> tuple[str, int] | None:
        routes = request.get_all("Route")
        if routes:
            return uri_address(routes[0])
        if request.to_tag is None:  # initial request: along the chain
            return self.downstream
        return uri_address(request.uri)


MALFORMED_INVITE = (
    b"INVITE sip:bob@ims.example SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKbad1\r\n"
    b"From: <sip:mallory@ims.example>;tag=1\r\n"
    b"To: <sip:bob@ims.example>\r\n"
    b"Call-ID: malformed-1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 999\r\n\r\nshort body"
)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def run_sip_demo(calls: int = 20, hops: int = 3, concurrency: int = 5, timeout: float = 30.0) -> dict[str, Any]:
    """Place ``calls`` calls (``concurrency`` at a time) from alice to bob over ``hops`` proxies."""
    if calls < 1 or hops < 1 or concurrency < 1:
        raise ValueError("calls, hops and concurrency must be >= 1")
    with Runtime(name="sip-demo") as runtime:
        return runtime.run(_demo(calls, hops, concurrency), timeout=timeout + 30)


async def _demo(calls: int, hops: int, concurrency: int) -> dict[str, Any]:
    bob = UserAgent.start("bob", "bob").proxy()
    downstream = await bob.get_address()
    proxies = []
    for i in reversed(range(hops)):
        proxy = ChainProxy.start(f"proxy{i + 1}", downstream).proxy()
        downstream = await proxy.get_address()
        proxies.insert(0, proxy)
    first_hop = downstream
    alice = UserAgent.start("alice", "alice").proxy()

    results: list[CallResult] = []
    semaphore = asyncio.Semaphore(concurrency)

    async def one_call() -> None:
        async with semaphore:
            results.append(await alice.call("bob", first_hop))

    started = asyncio.get_running_loop().time()
    await asyncio.gather(*(one_call() for _ in range(calls)))
    elapsed = asyncio.get_running_loop().time() - started

    bad_answer = await _send_raw(first_hop, MALFORMED_INVITE)
    await _send_raw(first_hop, b"\x00\x01 definitely not SIP", expect_answer=False)
    first_stats = await proxies[0].get_stats()

    setup = [r.answered_after * 1000 for r in results if r.answered_after is not None]
    ringing = [r.ringing_after * 1000 for r in results if r.ringing_after is not None]
    return {
        "calls": calls,
        "hops": hops,
        "completed": sum(r.completed for r in results),
        "failed": sum(not r.completed for r in results),
        "elapsed_s": round(elapsed, 3),
        "setup_ms": {
            "p50": _round(statistics.median(setup) if setup else None),
            "p90": _round(_percentile(setup, 90)),
            "p99": _round(_percentile(setup, 99)),
        },
        "ringing_ms_p50": _round(statistics.median(ringing) if ringing else None),
        "answered_by_bob": await bob.answered_calls,
        "malformed_answer": bad_answer,
        "first_proxy": {k: first_stats.get(k, 0) for k in ("rx_request", "rx_response", "tx", "malformed_answered", "malformed_dropped")},
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


async def _send_raw(address: tuple[str, int], data: bytes, expect_answer: bool = True) -> str | None:
    """Send one datagram from a throwaway endpoint; return the status line of the answer."""
    answered: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def on_datagram(reply: bytes, _source: object) -> None:
        if not answered.done():
            answered.set_result(reply)

    async with await UdpEndpoint.open(("127.0.0.1", 0), on_datagram, name="raw") as endpoint:
        endpoint.send(data, address)
        if not expect_answer:
            return None
        try:
            reply = await asyncio.wait_for(answered, 5.0)
        except TimeoutError:
            return None
    return reply.split(b"\r\n", 1)[0].decode(errors="replace")

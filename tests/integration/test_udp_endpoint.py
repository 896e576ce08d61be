"""UdpEndpoint on real loopback sockets (ephemeral ports), on both asyncio's loop and uvloop.

Every wait is on an event with a generous timeout, never a fixed sleep; traffic is bounded. When a
test must show that something did *not* arrive, it sends a sentinel after it on the same path and
waits for the sentinel (loopback keeps one socket's datagrams to another in order).

The last section tests :class:`LinkImpairment` alone, without sockets.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from actors.clock import LoopClock, VirtualClock
from actors.impairment import LinkImpairment
from actors.logs import configure_logging, reset_logging
from actors.transport import INBOUND, OUTBOUND, TimedSeam, TransportSeam, UdpEndpoint

pytestmark = pytest.mark.integration

TIMEOUT = 5.0
# Event loops may run a timer up to their clock granularity early (uvloop: 1 ms).
TIMER_SLACK = 1e-3

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def run(request) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Run a coroutine to completion on a fresh loop of the parametrized kind."""

    def runner(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as r:
            return r.run(asyncio.wait_for(coro, 30))

    return runner


class Inbox:
    """An ``on_datagram`` that records ``(data, addr, loop time)`` and lets a test wait for N."""

    def __init__(self, reply: Callable[[bytes, Any], None] | None = None) -> None:
        self.items: list[tuple[bytes, Any, float]] = []
        self._changed = asyncio.Event()
        self._reply = reply

    def __call__(self, data: bytes, addr: Any) -> None:
        self.items.append((data, addr, asyncio.get_running_loop().time()))
        self._changed.set()
        if self._reply is not None:
            self._reply(data, addr)

    @property
    def payloads(self) -> list[bytes]:
        return [d for d, _, _ in self.items]

    async def wait_for(self, n: int, timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while len(self.items) < n:
                self._changed.clear()
                await self._changed.wait()

    async def wait_for_payload(self, payload: bytes, timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while payload not in self.payloads:
                self._changed.clear()
                await self._changed.wait()


class Spy:
    """Wraps a seam, counts its calls per direction and lets a test wait for them."""

    def __init__(self, inner: TransportSeam) -> None:
        self.inner = inner
        self.calls = {OUTBOUND: 0, INBOUND: 0}
        self._changed = asyncio.Event()

    def outbound(self, data, addr, now):
        self.calls[OUTBOUND] += 1
        self._changed.set()
        return self.inner.outbound(data, addr, now)

    def inbound(self, data, addr, now):
        self.calls[INBOUND] += 1
        self._changed.set()
        return self.inner.inbound(data, addr, now)

    async def wait_calls(self, direction: str, n: int, timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while self.calls[direction] < n:
                self._changed.clear()
                await self._changed.wait()


async def pair(**b_kwargs: Any) -> tuple[UdpEndpoint, UdpEndpoint, Inbox, Inbox]:
    ia, ib = Inbox(), Inbox()
    a = await UdpEndpoint.open(("127.0.0.1", 0), ia, name="a")
    b = await UdpEndpoint.open(("127.0.0.1", 0), ib, name="b", **b_kwargs)
    return a, b, ia, ib


async def close_all(*endpoints: UdpEndpoint) -> None:
    for ep in endpoints:
        ep.close()
    for ep in endpoints:
        await asyncio.wait_for(ep.wait_closed(), TIMEOUT)


async def burst(ep: UdpEndpoint, payloads: list[bytes], addr: Any) -> None:
    """Send, yielding to the loop every few datagrams so the receiver keeps up."""
    for i, p in enumerate(payloads):
        ep.send(p, addr)
        if i % 10 == 9:
            await asyncio.sleep(0)


# ---------------------------------------------------------------------- basics


def test_round_trip_and_counters(run):
    async def main():
        ia = Inbox()
        a = await UdpEndpoint.open(("127.0.0.1", 0), ia, name="a")
        b: UdpEndpoint | None = None

        def echo(data: bytes, addr: Any) -> None:
            assert b is not None
            b.send(b"pong:" + data, addr)

        ib = Inbox(reply=echo)
        b = await UdpEndpoint.open(("127.0.0.1", 0), ib, name="b")
        assert a.local_address[0] == "127.0.0.1" and a.local_address[1] != 0
        assert b.local_address[1] not in (0, a.local_address[1])

        msgs = [b"one", b"two", b"three"]
        for m in msgs:
            a.send(m, b.local_address)
        await ia.wait_for(3)

        assert ib.payloads == msgs
        assert all(addr == a.local_address for _, addr, _ in ib.items)
        assert ia.payloads == [b"pong:" + m for m in msgs]
        assert all(addr == b.local_address for _, addr, _ in ia.items)
        n_out = sum(map(len, msgs))
        n_back = n_out + 3 * len(b"pong:")
        assert a.stats.as_dict() == {
            **dict.fromkeys(a.stats.as_dict(), 0),
            "datagrams_out": 3, "bytes_out": n_out, "datagrams_in": 3, "bytes_in": n_back, "delivered": 3,
        }
        assert b.stats.as_dict() == {
            **dict.fromkeys(b.stats.as_dict(), 0),
            "datagrams_out": 3, "bytes_out": n_back, "datagrams_in": 3, "bytes_in": n_out, "delivered": 3,
        }
        await close_all(a, b)

    run(main())


def test_an_on_datagram_that_raises_is_counted_logged_and_survived(run):
    async def main():
        out = io.StringIO()
        configure_logging("info", json=True, stream=out)
        try:
            ok = Inbox()

            def handler(data: bytes, addr: Any) -> None:
                if data.startswith(b"boom"):
                    raise ValueError("hostile input")
                ok(data, addr)

            b = await UdpEndpoint.open(("127.0.0.1", 0), handler, name="victim")
            a = await UdpEndpoint.open(name="a")
            for payload in (b"boom-1", b"ok-1", b"boom-2", b"ok-2"):
                a.send(payload, b.local_address)
            await ok.wait_for(2)
            assert ok.payloads == [b"ok-1", b"ok-2"]
            assert b.stats.handler_errors == 2
            assert b.stats.datagrams_in == 4 and b.stats.delivered == 2
            assert not b.closing
            events = [json.loads(line) for line in out.getvalue().splitlines()]
            failures = [e for e in events if e["event"] == "on_datagram_failed"]
            assert len(failures) == 2
            assert failures[0]["instance"] == "victim" and failures[0]["module"] == "transport"
            assert "hostile input" in failures[0]["exception"]
            await close_all(a, b)
        finally:
            reset_logging()

    run(main())


def test_a_seam_that_raises_is_counted_and_the_endpoint_keeps_working(run):
    class Broken:
        def __init__(self) -> None:
            self.hit = asyncio.Event()

        def outbound(self, data, addr, now):
            raise RuntimeError("broken seam")

        def inbound(self, data, addr, now):
            self.hit.set()
            raise RuntimeError("broken seam")

    async def main():
        broken = Broken()
        a, b, _, ib = await pair(seam=broken)
        b.send(b"lost", a.local_address)
        assert b.stats.seam_errors == 1 and b.stats.datagrams_out == 0
        a.send(b"lost too", b.local_address)
        await asyncio.wait_for(broken.hit.wait(), TIMEOUT)
        assert b.stats.seam_errors == 2 and b.stats.datagrams_in == 1
        b.seam = None
        a.send(b"ok", b.local_address)
        await ib.wait_for(1)
        assert ib.payloads == [b"ok"]
        assert b.stats.seam_errors == 2 and b.stats.delivered == 1
        await close_all(a, b)

    run(main())


def test_close_is_idempotent_and_later_sends_are_counted_not_raised(run):
    async def main():
        async with await UdpEndpoint.open(name="ctx") as ep:
            addr = ep.local_address
        assert ep.closing
        ep.close()
        await asyncio.wait_for(ep.wait_closed(), TIMEOUT)
        ep.send(b"late", addr)
        assert ep.stats.send_errors == 1 and ep.stats.datagrams_out == 0
        # The port is free again.
        again = await UdpEndpoint.open(addr)
        assert again.local_address == addr
        await close_all(again)

    run(main())


def test_refuses_coroutine_handlers_and_bad_arguments(run):
    async def main():
        async def handler(data, addr):  # pragma: no cover - never called
            pass

        with pytest.raises(TypeError, match="coroutine"):
            await UdpEndpoint.open(on_datagram=handler)
        with pytest.raises(ValueError, match="buffer"):
            await UdpEndpoint.open(recv_buffer_size=0)
        with pytest.raises(TypeError, match="seam"):
            await UdpEndpoint.open(seam=object())  # type: ignore[arg-type]
        ep = await UdpEndpoint.open()
        ep.seam = LinkImpairment()
        with pytest.raises(TypeError, match="bytes"):
            ep.send("text", ep.local_address)  # type: ignore[arg-type]
        await close_all(ep)

    run(main())


def test_large_receive_buffer_option(run):
    async def main():
        plain = await UdpEndpoint.open()
        big = await UdpEndpoint.open(recv_buffer_size=4 * 1024 * 1024, send_buffer_size=1024 * 1024)
        assert plain.receive_buffer_size is not None
        assert big.receive_buffer_size > plain.receive_buffer_size
        assert big.send_buffer_size > plain.send_buffer_size
        await close_all(plain, big)

    run(main())


# ---------------------------------------------------------------------- the seam on real sockets

EXPECTED_DROPS = {OUTBOUND: 37, INBOUND: 38}  # LinkImpairment(seed=2024, drop=0.3), 100 datagrams


@pytest.mark.parametrize("direction", [OUTBOUND, INBOUND])
def test_seeded_drop_loses_an_exact_number_of_datagrams(run, direction):
    async def main():
        a, b, _, ib = await pair(recv_buffer_size=1 << 20)
        n = 100
        payloads = [b"%03d" % i for i in range(n)]
        replay = LinkImpairment(seed=2024, drop=0.3)
        impair = getattr(replay, direction)
        kept = [p for p in payloads if impair(p, ("127.0.0.1", 9), 0.0)]
        assert n - len(kept) == EXPECTED_DROPS[direction]

        imp = LinkImpairment(seed=2024, drop=0.3)
        if direction == OUTBOUND:
            a.seam = imp
            await burst(a, payloads, b.local_address)
            a.seam = None
        else:
            spy = Spy(imp)
            b.seam = spy
            await burst(a, payloads, b.local_address)
            await spy.wait_calls(INBOUND, n)
            b.seam = None
        a.send(b"END", b.local_address)
        await ib.wait_for_payload(b"END")

        assert ib.payloads == [*kept, b"END"]
        assert imp.stats.dropped == EXPECTED_DROPS[direction]
        if direction == OUTBOUND:
            assert a.stats.seam_dropped_out == EXPECTED_DROPS[direction]
            assert a.stats.datagrams_out == len(kept) + 1
        else:
            assert b.stats.seam_dropped_in == EXPECTED_DROPS[direction]
            assert b.stats.datagrams_in == n + 1
        assert b.stats.delivered == len(kept) + 1
        await close_all(a, b)

    run(main())


def test_delay_holds_each_datagram_at_least_the_delay(run):
    async def main():
        a, b, _, ib = await pair()
        loop = asyncio.get_running_loop()
        a.seam = LinkImpairment(delay=0.2)
        sent_at = []
        for p in (b"d1", b"d2"):
            sent_at.append(loop.time())
            a.send(p, b.local_address)
        assert a.stats.datagrams_out == 0  # still in the seam
        await ib.wait_for(2)
        assert ib.payloads == [b"d1", b"d2"]
        for t_sent, (_, _, t_recv) in zip(sent_at, ib.items):
            assert t_recv - t_sent >= 0.2 - TIMER_SLACK
        assert a.stats.datagrams_out == 2
        await close_all(a, b)

    run(main())


def test_inbound_delay_and_time_scale_compress_the_delay(run):
    async def main():
        loop = asyncio.get_running_loop()
        clock = LoopClock(loop, time_scale=20.0)
        ib = Inbox()
        b = await UdpEndpoint.open(on_datagram=ib, clock=clock, seam=LinkImpairment(delay=2.0, direction="inbound"))
        a = await UdpEndpoint.open()
        emulated_sent, real_sent = clock.now(), loop.time()
        a.send(b"slow", b.local_address)
        await ib.wait_for(1)
        emulated = clock.from_loop_time(ib.items[0][2]) - emulated_sent
        real = ib.items[0][2] - real_sent
        assert emulated >= 2.0 - 20.0 * TIMER_SLACK  # two emulated seconds went by ...
        assert real < 1.5  # ... in about 0.1 s of real time
        assert b.stats.datagrams_in == 1 and b.stats.delivered == 1
        await close_all(a, b)

    run(main())


def test_seam_delays_run_on_the_endpoint_clock_even_a_virtual_one(run):
    async def main():
        clock = VirtualClock()
        ib = Inbox()
        b = await UdpEndpoint.open(on_datagram=ib)
        a = await UdpEndpoint.open(clock=clock, seam=LinkImpairment(delay=1.0))
        a.send(b"when-told", b.local_address)
        assert clock.pending() == 1 and clock.next_deadline() == 1.0
        clock.advance(0.999)
        assert a.stats.datagrams_out == 0
        clock.advance(0.001)
        assert a.stats.datagrams_out == 1
        await ib.wait_for(1)
        assert ib.payloads == [b"when-told"]
        await close_all(a, b)

    run(main())


def test_duplication_sends_every_datagram_twice(run):
    async def main():
        a, b, _, ib = await pair()
        imp = LinkImpairment(seed=3, duplicate=1.0)
        a.seam = imp
        payloads = [b"dup%d" % i for i in range(5)]
        await burst(a, payloads, b.local_address)
        a.seam = None
        a.send(b"END", b.local_address)
        await ib.wait_for_payload(b"END")
        assert Counter(ib.payloads) == {**{p: 2 for p in payloads}, b"END": 1}
        assert imp.stats.duplicated == 5
        assert a.stats.datagrams_out == 11 and b.stats.datagrams_in == 11
        await close_all(a, b)

    run(main())


def test_corruption_flips_exactly_one_bit(run):
    async def main():
        a, b, _, ib = await pair()
        imp = LinkImpairment(seed=11, corrupt=1.0)
        a.seam = imp
        original = bytes(range(64))
        a.send(original, b.local_address)
        await ib.wait_for(1)
        (received,) = ib.payloads
        assert len(received) == len(original)
        flipped = sum(bin(x ^ y).count("1") for x, y in zip(original, received))
        assert flipped == 1
        assert imp.stats.corrupted == 1
        await close_all(a, b)

    run(main())


def test_reordering_swaps_neighbours_and_releases_a_lone_datagram_after_the_hold(run):
    async def main():
        a, b, _, ib = await pair()
        loop = asyncio.get_running_loop()
        imp = LinkImpairment(seed=5, reorder=1.0, reorder_max_hold=0.1)
        assert isinstance(imp, TimedSeam)
        a.seam = imp
        for p in (b"1", b"2", b"3", b"4"):
            a.send(p, b.local_address)
        await ib.wait_for(4)
        assert ib.payloads == [b"2", b"1", b"4", b"3"]
        assert a.stats.seam_dropped_out == 2  # held at once, released later

        t_sent = loop.time()
        a.send(b"lone", b.local_address)  # nothing follows it: released by the hold timer
        assert a.stats.datagrams_out == 4
        await ib.wait_for(5)
        assert ib.payloads[-1] == b"lone"
        assert ib.items[-1][2] - t_sent >= 0.1 - TIMER_SLACK
        assert imp.stats.released_on_timeout == 1 and imp.stats.reordered == 3
        await close_all(a, b)

    run(main())


def test_blackhole_makes_a_hung_peer_with_its_socket_open(run):
    async def main():
        a, b, ia, ib = await pair()
        imp = LinkImpairment(blackhole=True)
        spy = Spy(imp)
        b.seam = spy  # b is hung: it neither hears nor speaks
        for i in range(5):
            a.send(b"ping%d" % i, b.local_address)
        b.send(b"from-b-hung", a.local_address)
        await spy.wait_calls(INBOUND, 5)
        assert ib.items == []
        assert b.stats.datagrams_in == 5 and b.stats.delivered == 0
        assert b.stats.seam_dropped_in == 5 and b.stats.seam_dropped_out == 1
        assert b.stats.datagrams_out == 0
        assert imp.stats.blackholed == 6

        imp.blackhole = False  # switched at run time, seam stays installed
        a.send(b"after", b.local_address)
        b.send(b"from-b", a.local_address)
        await ib.wait_for(1)
        await ia.wait_for(1)
        assert ib.payloads == [b"after"]
        assert ia.payloads == [b"from-b"]
        await close_all(a, b)

    run(main())


def test_partition_cuts_one_destination_only_and_peers_scope_impairments(run):
    async def main():
        a, b, _, ib = await pair()
        ic = Inbox()
        c = await UdpEndpoint.open(on_datagram=ic, name="c")
        imp = LinkImpairment(partitioned=[b.local_address])
        a.seam = imp
        a.send(b"x-to-b", b.local_address)
        a.send(b"x-to-c", c.local_address)
        await ic.wait_for(1)
        assert a.stats.seam_dropped_out == 1 and imp.stats.partitioned == 1

        imp.heal(b.local_address)
        a.send(b"y-to-b", b.local_address)
        await ib.wait_for(1)
        assert ib.payloads == [b"y-to-b"]

        a.seam = LinkImpairment(drop=1.0, peers=[c.local_address])  # lose everything, towards c only
        a.send(b"z-to-c", c.local_address)
        a.send(b"z-to-b", b.local_address)
        await ib.wait_for(2)
        a.seam = None
        a.send(b"END", c.local_address)
        await ic.wait_for_payload(b"END")
        assert ic.payloads == [b"x-to-c", b"END"]
        assert ib.payloads == [b"y-to-b", b"z-to-b"]
        await close_all(a, b, c)

    run(main())


def test_replacing_the_seam_at_run_time(run):
    async def main():
        a, b, _, ib = await pair()
        a.send(b"plain", b.local_address)
        await ib.wait_for(1)
        a.seam = LinkImpairment(drop=1.0)
        a.send(b"dropped", b.local_address)
        a.seam = LinkImpairment(delay=0.05)
        a.send(b"delayed", b.local_address)
        a.seam = None
        a.send(b"direct", b.local_address)  # overtakes the delayed one
        await ib.wait_for(3)
        assert ib.payloads == [b"plain", b"direct", b"delayed"]
        await close_all(a, b)

    run(main())


def test_close_discards_datagrams_still_in_the_seam(run):
    async def main():
        clock = VirtualClock()
        a = await UdpEndpoint.open(clock=clock, seam=LinkImpairment(delay=1.0, reorder=0.0))
        a.send(b"never", ("127.0.0.1", 9))
        assert clock.pending() == 1
        a.close()
        assert clock.pending() == 0
        await a.wait_closed()

    run(main())


# ---------------------------------------------------------------------- LinkImpairment alone

ADDR = ("127.0.0.1", 5060)
OTHER = ("127.0.0.1", 5061)


def test_impairment_is_reproducible_from_its_seed():
    def outcomes(seed: int) -> list[list[tuple[float, bytes, tuple]]]:
        imp = LinkImpairment(seed=seed, drop=0.2, delay=0.01, jitter=0.005, duplicate=0.1, corrupt=0.1)
        return [imp.outbound(b"payload-%d" % i, ADDR, i * 0.001) for i in range(200)]

    assert outcomes(1) == outcomes(1)
    assert outcomes(1) != outcomes(2)


def test_directions_have_independent_streams():
    solo = LinkImpairment(seed=9, drop=0.5)
    mixed = LinkImpairment(seed=9, drop=0.5)
    expected = [bool(solo.outbound(b"x", ADDR, 0.0)) for _ in range(50)]
    got = []
    for _ in range(50):
        mixed.inbound(b"noise", ADDR, 0.0)
        got.append(bool(mixed.outbound(b"x", ADDR, 0.0)))
    assert got == expected


@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_jitter_stays_around_the_delay_and_never_goes_negative(distribution):
    imp = LinkImpairment(seed=4, delay=0.010, jitter=0.004, jitter_distribution=distribution)
    delays = [imp.outbound(b"x", ADDR, 0.0)[0][0] for _ in range(2000)]
    assert min(delays) >= 0.0
    assert len(set(delays)) > 1000
    mean = sum(delays) / len(delays)
    assert abs(mean - 0.010) < 0.0005
    if distribution == "uniform":
        assert 0.006 <= min(delays) and max(delays) <= 0.014
    clamped = LinkImpairment(seed=4, delay=0.001, jitter=0.01, jitter_distribution=distribution)
    assert min(clamped.outbound(b"x", ADDR, 0.0)[0][0] for _ in range(500)) == 0.0


def test_direction_and_peers_scope_the_random_impairments():
    out_only = LinkImpairment(drop=1.0, direction="outbound")
    assert out_only.outbound(b"x", ADDR, 0.0) == []
    assert out_only.inbound(b"x", ADDR, 0.0) == [(0.0, b"x", ADDR)]
    scoped = LinkImpairment(drop=1.0, peers=[ADDR])
    assert scoped.outbound(b"x", ADDR, 0.0) == []
    assert scoped.outbound(b"x", OTHER, 0.0) == [(0.0, b"x", OTHER)]
    assert scoped.inbound(b"x", ADDR + (0, 0), 0.0) == []  # IPv6-style 4-tuples compare by host, port


def test_reorder_hold_is_released_by_poll_at_its_deadline():
    imp = LinkImpairment(reorder=1.0, reorder_max_hold=0.5, delay=0.0)
    assert imp.next_deadline() is None
    assert imp.outbound(b"held", ADDR, 10.0) == []
    assert imp.next_deadline() == 10.5
    assert imp.poll(10.49) == []
    assert imp.poll(10.5) == [(OUTBOUND, 0.0, b"held", ADDR)]
    assert imp.next_deadline() is None
    # Released behind the next datagram, with that datagram's delay.
    imp.configure(delay=0.25)
    assert imp.inbound(b"first", ADDR, 20.0) == []
    assert imp.inbound(b"second", ADDR, 20.1) == [(0.25, b"second", ADDR), (0.25, b"first", ADDR)]


def test_blackhole_and_partition_hit_held_datagrams_too():
    imp = LinkImpairment(reorder=1.0)
    imp.outbound(b"held", ADDR, 0.0)
    imp.blackhole = True
    assert imp.poll(1.0) == []
    assert imp.stats.blackholed == 1
    imp.blackhole = False
    imp.partition(ADDR)
    assert imp.outbound(b"x", ADDR, 2.0) == [] and imp.inbound(b"x", ADDR, 2.0) == []
    assert imp.partitioned == {ADDR}
    imp.heal()
    assert imp.partitioned == frozenset()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"drop": 1.5},
        {"duplicate": -0.1},
        {"corrupt": math.nan},
        {"delay": -1.0},
        {"jitter": math.inf},
        {"reorder_max_hold": 0.0},
        {"jitter_distribution": "pareto"},
        {"direction": "sideways"},
    ],
)
def test_impairment_settings_are_validated(kwargs):
    with pytest.raises(ValueError):
        LinkImpairment(**kwargs)
    imp = LinkImpairment()
    with pytest.raises(ValueError):
        imp.configure(**kwargs)
    assert imp.outbound(b"x", ADDR, 0.0) == [(0.0, b"x", ADDR)]  # a refused change changes nothing


def test_unknown_settings_and_bad_seeds_are_refused():
    with pytest.raises(TypeError):
        LinkImpairment().configure(lossiness=0.1)
    with pytest.raises(TypeError):
        LinkImpairment(seed=1.5)  # type: ignore[arg-type]

"""The transport's hooks the injector relies on, on real sockets: the endpoint registry and
stacked seams (several faults and taps on one endpoint)."""

from __future__ import annotations

import asyncio

from actors.impairment import LinkImpairment
from actors.transport import SeamStack, UdpEndpoint, endpoint_at, open_endpoints
from faults.seams import DeadHopTap

WAIT = 5.0


async def test_open_endpoints_are_found_by_address_and_forgotten_when_closed() -> None:
    endpoint = await UdpEndpoint.open(("127.0.0.1", 0), None, name="reg")
    address = endpoint.local_address
    assert endpoint_at(address) is endpoint
    assert endpoint in open_endpoints()
    endpoint.close()
    await endpoint.wait_closed()
    assert endpoint_at(address) is None
    assert endpoint not in open_endpoints()


async def test_stacked_seams_compose_and_come_off_one_by_one() -> None:
    got: asyncio.Queue[bytes] = asyncio.Queue()
    receiver = await UdpEndpoint.open(("127.0.0.1", 0), lambda d, a: got.put_nowait(d), name="rx")
    sender = await UdpEndpoint.open(("127.0.0.1", 0), None, name="tx")
    try:
        first = LinkImpairment(seed=1)  # installed the old way: it stays, as the first layer
        sender.seam = first
        dup = LinkImpairment(seed=2, duplicate=1.0)
        tapped: list[bytes] = []
        tap = DeadHopTap([receiver.local_address], "tx", lambda n, a, d: tapped.append(d))
        sender.add_seam(dup)
        sender.add_seam(tap, tap=True)
        assert isinstance(sender.seam, SeamStack)
        assert sender.seam.layers == (first, dup) and sender.seam.taps == (tap,)
        sender.send(b"one", receiver.local_address)
        assert [await asyncio.wait_for(got.get(), WAIT) for _ in range(2)] == [b"one", b"one"]
        assert tapped == [b"one"] and tap.count == 2  # the tap sees both copies on the wire
        assert sender.remove_seam(dup) and sender.remove_seam(tap)
        assert not sender.remove_seam(dup)
        assert sender.seam.layers == (first,)  # type: ignore[union-attr]
        assert sender.remove_seam(first)
        assert sender.seam is None
        sender.send(b"two", receiver.local_address)
        assert await asyncio.wait_for(got.get(), WAIT) == b"two"
        assert sender.stats.datagrams_out == 3
    finally:
        sender.close()
        receiver.close()


async def test_a_held_datagram_in_a_stack_is_released_on_the_endpoints_timer() -> None:
    got: asyncio.Queue[bytes] = asyncio.Queue()
    receiver = await UdpEndpoint.open(("127.0.0.1", 0), lambda d, a: got.put_nowait(d), name="rx")
    sender = await UdpEndpoint.open(("127.0.0.1", 0), None, name="tx")
    try:
        sender.add_seam(LinkImpairment(seed=1, reorder=1.0, reorder_max_hold=0.05))
        sender.send(b"held", receiver.local_address)
        assert await asyncio.wait_for(got.get(), WAIT) == b"held"
    finally:
        sender.close()
        receiver.close()

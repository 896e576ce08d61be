"""Seams the fault kinds add to endpoints besides :class:`actors.impairment.LinkImpairment`.

Both run on the endpoint's loop thread (the seam protocol of :mod:`actors.transport`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from actors.service_rate import ServiceRate
from actors.transport import Address, SeamItem

__all__ = ["DeadHopTap", "ServiceTimeSeam"]


class ServiceTimeSeam:
    """Slowness: inbound datagrams are served one at a time, each taking ``service_time`` more.

    A single-server queue (:class:`~actors.service_rate.ServiceRate` at ``1 / service_time``): a
    datagram is delivered when the ones before it have been served and its own service is done,
    so a burst waits in line rather than being shifted by a flat delay. More than
    ``queue_limit`` datagrams waiting are dropped (counted in ``dropped``). Outbound passes.
    """

    def __init__(self, service_time: float, queue_limit: int = 1000) -> None:
        if isinstance(service_time, bool) or not isinstance(service_time, (int, float)) or not service_time > 0:
            raise ValueError(f"service_time must be > 0 seconds, got {service_time!r}")
        self.service_time = float(service_time)
        self.queue = ServiceRate(1.0 / self.service_time, queue_limit)
        self.served = 0
        self.dropped = 0
        self.total_wait = 0.0

    def outbound(self, data: bytes, addr: Address, now: float) -> list[SeamItem]:
        return [(0.0, data, addr)]

    def inbound(self, data: bytes, addr: Address, now: float) -> list[SeamItem]:
        finish = self.queue.admit(now)
        if finish is None:
            self.dropped += 1
            return []
        self.served += 1
        wait = finish - now
        self.total_wait += wait
        return [(wait, data, addr)]

    def stats(self) -> dict[str, Any]:
        return {"served": self.served, "dropped": self.dropped,
                "mean_wait_s": self.total_wait / self.served if self.served else 0.0}


class DeadHopTap:
    """Observes, at a sender's socket side, datagrams sent to a failed instance's addresses.

    ``on_first(endpoint_name, addr, data)`` is called once, for the first one (the paper's
    detection trigger: the first SIP message that reaches the dead hop); ``count`` counts them
    all. Never changes what it sees.
    """

    def __init__(self, dead: Iterable[Address], name: str, on_first: Callable[[str, Address, bytes], None]) -> None:
        self.dead = frozenset(tuple(a[:2]) for a in dead)
        self.name = name
        self.count = 0
        self._on_first: Callable[[str, Address, bytes], None] | None = on_first

    def outbound(self, data: bytes, addr: Address, now: float) -> list[SeamItem]:
        if tuple(addr[:2]) in self.dead:
            self.count += 1
            first, self._on_first = self._on_first, None
            if first is not None:
                first(self.name, addr, data)
        return [(0.0, data, addr)]

    def inbound(self, data: bytes, addr: Address, now: float) -> list[SeamItem]:
        return [(0.0, data, addr)]

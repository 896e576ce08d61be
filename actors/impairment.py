"""A seeded link impairment: the standard fault seam for :class:`actors.transport.UdpEndpoint`.

:class:`LinkImpairment` implements :class:`actors.transport.TransportSeam` (and its timed variant)
with netem-like impairments, each configurable and all drawn from ``random.Random`` streams seeded
from ``seed``, so a run replays exactly::

    imp = LinkImpairment(seed=7, drop=0.05, delay=0.020, jitter=0.005, peers={scscf_addr})
    endpoint.seam = imp           # installed from outside, at run time
    imp.blackhole = True          # the peer now looks hung: socket open, nothing in or out
    imp.partition(hss_addr)       # cut towards one address only
    endpoint.seam = None          # healed

Per datagram, in this order:

1. ``blackhole``: drop everything, both directions (models a hung module whose socket stays open).
2. ``partitioned``: drop everything to or from these addresses, both directions.
3. Scope: the random impairments below apply only in ``direction`` ("outbound", "inbound" or
   "both") and, when ``peers`` is given, only to datagrams to or from those addresses; anything
   else passes untouched.
4. ``drop``: probability of losing the datagram.
5. ``corrupt``: probability of flipping one random bit.
6. ``delay`` + jitter: fixed delay in emulated seconds plus ``jitter`` drawn uniformly from
   ``[-jitter, +jitter]`` or normally with standard deviation ``jitter``
   (``jitter_distribution``), clamped at 0. Jitter alone can reorder datagrams, as in netem.
7. ``duplicate``: probability of sending a second copy (with its own jitter).
8. ``reorder``: probability of holding the datagram back until the next datagram in the same
   direction has gone (it is then emitted right after that one), or until ``reorder_max_hold``
   seconds have passed, whichever comes first.

Each direction has its own random stream, so the outcome of one direction does not depend on how
traffic in the other interleaves with it. Random draws are taken only for impairments that are
enabled. Addresses are compared as ``(host, port)`` exactly as the socket reports them, so use
numeric hosts. Keep one instance per endpoint (it holds reordered datagrams).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from actors.transport import INBOUND, OUTBOUND, Address, SeamItem

__all__ = ["ImpairmentStats", "LinkImpairment"]

_DIRECTIONS = {"outbound": (OUTBOUND,), "inbound": (INBOUND,), "both": (OUTBOUND, INBOUND)}


@dataclass(slots=True)
class ImpairmentStats:
    """What a :class:`LinkImpairment` did, by cause."""

    seen: int = 0
    dropped: int = 0
    blackholed: int = 0
    partitioned: int = 0
    corrupted: int = 0
    duplicated: int = 0
    reordered: int = 0
    released_on_timeout: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class _Held:
    deadline: float
    items: list[SeamItem]


def _key(addr: Address) -> tuple[Any, ...]:
    return addr if len(addr) == 2 else tuple(addr[:2])


def _probability(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _seconds(name: str, value: float, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'} seconds, got {value!r}")
    return float(value)


class LinkImpairment:
    """Drop, delay, jitter, duplicate, reorder, corrupt, blackhole, partition. See the module doc."""

    def __init__(
        self,
        *,
        seed: int | str = 0,
        drop: float = 0.0,
        delay: float = 0.0,
        jitter: float = 0.0,
        jitter_distribution: str = "uniform",
        duplicate: float = 0.0,
        reorder: float = 0.0,
        reorder_max_hold: float = 0.1,
        corrupt: float = 0.0,
        blackhole: bool = False,
        direction: str = "both",
        peers: Iterable[Address] | None = None,
        partitioned: Iterable[Address] = (),
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, str)):
            raise TypeError(f"seed must be an int or a str, got {type(seed).__name__}")
        self.seed = seed
        # Separate, reproducible streams per direction (str seeds hash with SHA-512: stable).
        self._rng = {OUTBOUND: random.Random(f"{seed}/outbound"), INBOUND: random.Random(f"{seed}/inbound")}
        self._held: dict[str, _Held | None] = {OUTBOUND: None, INBOUND: None}
        self.stats = ImpairmentStats()
        self.blackhole = bool(blackhole)
        self._partitioned: set[tuple[Any, ...]] = {_key(a) for a in partitioned}
        # Defaults, then validated settings.
        self.drop = self.delay = self.jitter = self.duplicate = self.reorder = self.corrupt = 0.0
        self.reorder_max_hold = 0.1
        self.jitter_distribution = "uniform"
        self.direction = "both"
        self.peers: frozenset[tuple[Any, ...]] | None = None
        self._applies = {OUTBOUND: True, INBOUND: True}
        self.configure(
            drop=drop,
            delay=delay,
            jitter=jitter,
            jitter_distribution=jitter_distribution,
            duplicate=duplicate,
            reorder=reorder,
            reorder_max_hold=reorder_max_hold,
            corrupt=corrupt,
            direction=direction,
            peers=peers,
        )

    # ------------------------------------------------------------------ configuration

    def configure(self, **settings: Any) -> None:
        """Change settings at run time, validated (same names as the constructor, except ``seed``)."""
        checked: dict[str, Any] = {}
        for name, value in settings.items():
            if name in ("drop", "duplicate", "reorder", "corrupt"):
                checked[name] = _probability(name, value)
            elif name in ("delay", "jitter"):
                checked[name] = _seconds(name, value)
            elif name == "reorder_max_hold":
                checked[name] = _seconds(name, value, positive=True)
            elif name == "jitter_distribution":
                if value not in ("uniform", "normal"):
                    raise ValueError(f'jitter_distribution must be "uniform" or "normal", got {value!r}')
                checked[name] = value
            elif name == "direction":
                if value not in _DIRECTIONS:
                    raise ValueError(f'direction must be "outbound", "inbound" or "both", got {value!r}')
                checked[name] = value
            elif name == "peers":
                checked[name] = None if value is None else frozenset(_key(a) for a in value)
            elif name == "blackhole":
                checked[name] = bool(value)
            elif name == "partitioned":
                checked[name] = {_key(a) for a in value}
            else:
                raise TypeError(f"unknown impairment setting {name!r}")
        for name, value in checked.items():
            if name == "partitioned":
                self._partitioned = value
            else:
                setattr(self, name, value)
        if "direction" in checked:
            on = _DIRECTIONS[self.direction]
            self._applies = {OUTBOUND: OUTBOUND in on, INBOUND: INBOUND in on}

    @property
    def partitioned(self) -> frozenset[tuple[Any, ...]]:
        """Addresses currently cut off."""
        return frozenset(self._partitioned)

    def partition(self, addr: Address) -> None:
        """Cut traffic to and from ``addr`` (both directions) until :meth:`heal`."""
        self._partitioned.add(_key(addr))

    def heal(self, addr: Address | None = None) -> None:
        """End the partition towards ``addr`` (all partitions when ``None``)."""
        if addr is None:
            self._partitioned.clear()
        else:
            self._partitioned.discard(_key(addr))

    # ------------------------------------------------------------------ the seam

    def outbound(self, data: bytes, addr: Address, now: float) -> list[SeamItem]:
        return self._process(OUTBOUND, data, addr, now)

    def inbound(self, data: bytes, addr: Address, now: float) -> list[SeamItem]:
        return self._process(INBOUND, data, addr, now)

    def next_deadline(self) -> float | None:
        deadlines = [h.deadline for h in self._held.values() if h is not None]
        return min(deadlines) if deadlines else None

    def poll(self, now: float) -> list[tuple[str, float, bytes, Address]]:
        """Release datagrams held for longer than ``reorder_max_hold``."""
        out: list[tuple[str, float, bytes, Address]] = []
        for direction in (OUTBOUND, INBOUND):
            held = self._held[direction]
            if held is None or held.deadline > now:
                continue
            self._held[direction] = None
            self.stats.released_on_timeout += 1
            for _, data, addr in held.items:
                if self._cut(addr):
                    continue
                out.append((direction, 0.0, data, addr))
        return out

    # ------------------------------------------------------------------ internals

    def _cut(self, addr: Address) -> bool:
        if self.blackhole:
            self.stats.blackholed += 1
            return True
        if self._partitioned and _key(addr) in self._partitioned:
            self.stats.partitioned += 1
            return True
        return False

    def _jittered(self, rng: random.Random) -> float:
        jitter = self.jitter
        if not jitter:
            return self.delay
        if self.jitter_distribution == "uniform":
            d = self.delay + rng.uniform(-jitter, jitter)
        else:
            d = self.delay + rng.normalvariate(0.0, jitter)
        return d if d > 0.0 else 0.0

    def _process(self, direction: str, data: bytes, addr: Address, now: float) -> list[SeamItem]:
        stats = self.stats
        stats.seen += 1
        if self._cut(addr):
            return []
        if not self._applies[direction] or (self.peers is not None and _key(addr) not in self.peers):
            return [(0.0, data, addr)]
        rng = self._rng[direction]
        if self.drop and rng.random() < self.drop:
            stats.dropped += 1
            return []
        if self.corrupt and data and rng.random() < self.corrupt:
            bit = rng.randrange(len(data) * 8)
            flipped = bytearray(data)
            flipped[bit >> 3] ^= 1 << (bit & 7)
            data = bytes(flipped)
            stats.corrupted += 1
        items: list[SeamItem] = [(self._jittered(rng), data, addr)]
        if self.duplicate and rng.random() < self.duplicate:
            items.append((self._jittered(rng), data, addr))
            stats.duplicated += 1
        held = self._held[direction]
        if held is not None:
            # This datagram overtakes the held one; release the held one right behind it (same
            # delay, later in the list: the endpoint emits equal delays in list order).
            self._held[direction] = None
            after = max(d for d, _, _ in items)
            items.extend((after, hdata, haddr) for _, hdata, haddr in held.items)
            return items
        if self.reorder and rng.random() < self.reorder:
            self._held[direction] = _Held(now + self.reorder_max_hold, items)
            stats.reordered += 1
            return []
        return items

    def __repr__(self) -> str:
        on = [
            f"{n}={getattr(self, n)}"
            for n in ("drop", "delay", "jitter", "duplicate", "reorder", "corrupt")
            if getattr(self, n)
        ]
        if self.blackhole:
            on.append("blackhole")
        if self._partitioned:
            on.append(f"partitioned={sorted(self._partitioned)}")
        return f"LinkImpairment(seed={self.seed!r}, {', '.join(on) or 'pass-through'})"

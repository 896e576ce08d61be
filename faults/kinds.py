"""The fault kinds: what each does to a running deployment, and how it is undone.

Every fault is made for one target (an instance, or a link between two instances) by the plan
resolver, and has ``async apply(ctx) -> report`` and ``async revert(ctx) -> report`` that run on
the injector's loop and act only through the runtime's seams: endpoint seams
(:meth:`actors.transport.UdpEndpoint.add_seam`), closing an endpoint, killing an actor
(:meth:`actors.actor.AsyncioActor.kill`), and real SIP from an injector socket. Reports are
JSON-serialisable dicts of what was done and what the fault's seams counted.

==============  ===============  ===================================================================
kind            target           effect
==============  ===============  ===================================================================
crash           instance         its sockets close, then its actor is killed (no ``on_stop``);
                                 revert restarts it on the same address from the topology
hang            instance         blackhole at its sockets: open, but nothing in or out
partition       link             datagrams between the two ends dropped (``direction``)
delay           instance | link  fixed ``delay`` plus ``jitter`` (uniform or normal)
loss            instance | link  each datagram lost with ``probability``
duplicate       instance | link  each datagram sent twice with ``probability``
reorder         instance | link  held back behind the next one with ``probability``
corrupt         instance | link  one bit flipped with ``probability``
slowness        instance         inbound served one at a time, ``service_time`` each (a queue)
overload        instance         ``rate`` SIP OPTIONS per second from an injector socket
==============  ===============  ===================================================================

Link faults on a link act at the sending end's sockets on datagrams to the other end's
addresses (``direction``: ``forward`` = ``from`` -> ``to`` as the plan names the link,
``backward``, ``both``). On an instance they act on everything its sockets send and receive
(``direction``: ``inbound``, ``outbound``, ``both``).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from actors.future import as_asyncio_future
from actors.impairment import LinkImpairment
from actors.transport import Address, TransportSeam, UdpEndpoint
from faults.overload import OverloadBurst
from faults.seams import ServiceTimeSeam
from faults.targets import FaultContext, instance_addresses, instance_endpoints, on_loop

__all__ = ["FAULT_KINDS", "Fault", "Param", "make_fault"]

#: How long a crash waits for the killed actor to be gone, in real seconds.
KILL_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a fault kind: ``type`` is seconds | probability | rate | count | choice."""

    type: str
    default: Any = None
    required: bool = False
    choices: tuple[str, ...] = ()


class Fault(ABC):
    """One fault on one target. Subclasses set ``kind``, ``scopes``, ``params`` and implement apply/revert."""

    kind: ClassVar[str]
    scopes: ClassVar[tuple[str, ...]] = ("instance",)
    params: ClassVar[dict[str, Param]] = {}
    needs_sip: ClassVar[bool] = False
    needs_duration: ClassVar[bool] = False

    def __init__(
        self,
        *,
        instance: str | None = None,
        link: tuple[str, str] | None = None,
        direction: str = "both",
        settings: dict[str, Any] | None = None,
        seed: str = "0",
    ) -> None:
        if (instance is None) == (link is None):
            raise ValueError("a fault has exactly one target: an instance or a link")
        self.instance = instance
        self.link = link
        self.direction = direction
        self.settings = {name: p.default for name, p in self.params.items()} | dict(settings or {})
        self.seed = seed
        self.applied = False

    @property
    def target(self) -> str:
        return self.instance if self.instance is not None else f"{self.link[0]}<->{self.link[1]}"  # type: ignore[index]

    def describe(self) -> dict[str, Any]:
        where: dict[str, Any] = {"instance": self.instance} if self.instance else {"link": list(self.link or ())}
        return {"kind": self.kind, **where, "direction": self.direction, **self.settings}

    @abstractmethod
    async def apply(self, ctx: FaultContext) -> dict[str, Any]: ...

    @abstractmethod
    async def revert(self, ctx: FaultContext) -> dict[str, Any]: ...


class _SeamFault(Fault):
    """A fault made of seams installed on endpoints; revert takes them off again."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._installed: list[tuple[UdpEndpoint, TransportSeam]] = []

    @abstractmethod
    def seams(self, ctx: FaultContext) -> list[tuple[UdpEndpoint, TransportSeam]]: ...

    async def apply(self, ctx: FaultContext) -> dict[str, Any]:
        planned = self.seams(ctx)
        if not planned:
            raise RuntimeError(f"{self.kind} on {self.target}: no open socket of the target in this process")
        for endpoint, seam in planned:
            await on_loop(endpoint.loop, endpoint.add_seam, seam)
            self._installed.append((endpoint, seam))
        self.applied = True
        return {**self.describe(), "endpoints": [_endpoint_name(e) for e, _ in planned]}

    async def revert(self, ctx: FaultContext) -> dict[str, Any]:
        counted: dict[str, Any] = {}
        for endpoint, seam in self._installed:
            if not endpoint.closing:
                await on_loop(endpoint.loop, endpoint.remove_seam, seam)
            counted[_endpoint_name(endpoint)] = _seam_stats(seam)
        self._installed.clear()
        self.applied = False
        return {**self.describe(), "counted": counted}

    def stats(self) -> dict[str, Any]:
        return {_endpoint_name(e): _seam_stats(s) for e, s in self._installed}


def _endpoint_name(endpoint: UdpEndpoint) -> str:
    host, port = endpoint.local_address[:2] if endpoint.local_address else ("?", 0)
    return f"{endpoint.name or '?'}@{host}:{port}"


def _seam_stats(seam: Any) -> dict[str, Any]:
    if isinstance(seam, LinkImpairment):
        return seam.stats.as_dict()
    stats = getattr(seam, "stats", None)
    return stats() if callable(stats) else {}


# ---------------------------------------------------------------------- crash and hang


class CrashFault(Fault):
    kind = "crash"
    params = {"restart_on_revert": Param("bool", True)}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._position = 0

    async def apply(self, ctx: FaultContext) -> dict[str, Any]:
        name = self.instance
        assert name is not None
        ref = ctx.deployment.refs[name]
        actor = ref._actor_weakref()  # noqa: SLF001  (the runtime's handle on the actor)
        closed = []
        for endpoint in instance_endpoints(ctx.deployment, name):
            await on_loop(endpoint.loop, endpoint.close)
            closed.append(_endpoint_name(endpoint))
        reason = "already dead"
        if actor is not None and not actor.actor_terminated.done():
            actor.kill()
            await asyncio.wait_for(as_asyncio_future(actor.actor_terminated), KILL_TIMEOUT)
            reason = actor.actor_terminated.get(timeout=0).reason
        # The deployment no longer runs it (as after ImsDeployment.stop_module): asking it for
        # stats would fail. Its address stays, for the restart and for whoever replaces it.
        ctx.deployment.refs.pop(name, None)
        if name in ctx.deployment.order:
            self._position = ctx.deployment.order.index(name)
            ctx.deployment.order.remove(name)
        self.applied = True
        return {**self.describe(), "closed": closed, "terminated": reason}

    async def revert(self, ctx: FaultContext) -> dict[str, Any]:
        self.applied = False
        if not self.settings["restart_on_revert"]:
            return {**self.describe(), "restarted": False}
        # Restart from the preloaded configuration, on the same address (the OpenStack-style
        # recovery of a failed NF), through the deployment's own restart when it has one.
        deployment = ctx.deployment
        name = self.instance
        assert name is not None
        restart = getattr(deployment, "restart_module", None)
        if restart is not None:
            await restart(name)
            ref = deployment.refs[name]
        else:
            ref = await _restart(deployment, name, self._position)
        bound = tuple(await ref.proxy().get_address())
        return {**self.describe(), "restarted": True, "address": list(bound)}


async def _restart(deployment: Any, name: str, position: int) -> Any:
    """Start ``name`` again on its address with the constructor arguments ``deploy`` gave it."""
    from nf_modules import deployment as dep

    nf = deployment.topology[name]
    address = tuple(deployment.addresses[name])
    kwargs = dep._constructor_args(deployment.topology, nf, dict(deployment.addresses))  # noqa: SLF001
    ref = dep.KINDS[nf.kind].start(name, address, **kwargs)
    deployment.refs[name] = ref
    if name not in deployment.order:
        deployment.order.insert(min(position, len(deployment.order)), name)
    await ref.proxy().get_address()
    failover_config = getattr(dep, "_failover_config", None)
    if deployment.topology.mode == "refactored" and failover_config is not None and nf.kind in dep.CALL_PATH:
        await ref.proxy().configure_failover(**failover_config(deployment.topology, nf, dict(deployment.addresses)))
    return ref


class HangFault(_SeamFault):
    kind = "hang"

    def seams(self, ctx: FaultContext) -> list[tuple[UdpEndpoint, TransportSeam]]:
        assert self.instance is not None
        return [
            (e, LinkImpairment(seed=f"{self.seed}/{e.name}", blackhole=True))
            for e in instance_endpoints(ctx.deployment, self.instance)
        ]


# ---------------------------------------------------------------------- link faults


class _ImpairmentFault(_SeamFault):
    """A :class:`LinkImpairment` on a link (at each sending end) or on an instance."""

    scopes = ("instance", "link")

    def impairment_settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def seams(self, ctx: FaultContext) -> list[tuple[UdpEndpoint, TransportSeam]]:
        settings = self.impairment_settings()
        d = ctx.deployment
        if self.instance is not None:
            return [
                (e, LinkImpairment(seed=f"{self.seed}/{e.name}", direction=self.direction, **settings))
                for e in instance_endpoints(d, self.instance)
            ]
        a, b = self.link  # type: ignore[misc]
        ends = {"forward": [(a, b)], "backward": [(b, a)], "both": [(a, b), (b, a)]}[self.direction]
        out: list[tuple[UdpEndpoint, TransportSeam]] = []
        for src, dst in ends:
            peers = instance_addresses(d, dst)
            out.extend(
                (e, LinkImpairment(seed=f"{self.seed}/{e.name}/{dst}", direction="outbound", peers=peers, **settings))
                for e in instance_endpoints(d, src)
            )
        return out


class PartitionFault(_ImpairmentFault):
    kind = "partition"
    scopes = ("link",)

    def impairment_settings(self) -> dict[str, Any]:
        return {"drop": 1.0}


class DelayFault(_ImpairmentFault):
    kind = "delay"
    params = {
        "delay": Param("seconds", required=True),
        "jitter": Param("seconds", 0.0),
        "distribution": Param("choice", "uniform", choices=("uniform", "normal")),
    }

    def impairment_settings(self) -> dict[str, Any]:
        s = self.settings
        return {"delay": s["delay"], "jitter": s["jitter"], "jitter_distribution": s["distribution"]}


class LossFault(_ImpairmentFault):
    kind = "loss"
    params = {"probability": Param("probability", required=True)}

    def impairment_settings(self) -> dict[str, Any]:
        return {"drop": self.settings["probability"]}


class DuplicateFault(_ImpairmentFault):
    kind = "duplicate"
    params = {"probability": Param("probability", required=True)}

    def impairment_settings(self) -> dict[str, Any]:
        return {"duplicate": self.settings["probability"]}


class ReorderFault(_ImpairmentFault):
    kind = "reorder"
    params = {"probability": Param("probability", required=True), "max_hold": Param("seconds", 0.1)}

    def impairment_settings(self) -> dict[str, Any]:
        return {"reorder": self.settings["probability"], "reorder_max_hold": self.settings["max_hold"]}


class CorruptFault(_ImpairmentFault):
    kind = "corrupt"
    params = {"probability": Param("probability", required=True)}

    def impairment_settings(self) -> dict[str, Any]:
        return {"corrupt": self.settings["probability"]}


# ---------------------------------------------------------------------- slowness and overload


class SlownessFault(_SeamFault):
    kind = "slowness"
    params = {"service_time": Param("seconds", required=True), "queue_limit": Param("count", 1000)}

    def seams(self, ctx: FaultContext) -> list[tuple[UdpEndpoint, TransportSeam]]:
        assert self.instance is not None
        s = self.settings
        return [(e, ServiceTimeSeam(s["service_time"], s["queue_limit"])) for e in instance_endpoints(ctx.deployment, self.instance)]


class OverloadFault(Fault):
    kind = "overload"
    params = {"rate": Param("rate", required=True), "linger": Param("seconds", 1.0)}
    needs_sip = True
    needs_duration = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._burst: OverloadBurst | None = None

    async def apply(self, ctx: FaultContext) -> dict[str, Any]:
        assert self.instance is not None
        target: Address = tuple(ctx.deployment.addresses[self.instance])
        self._burst = OverloadBurst(target, self.settings["rate"], clock=ctx.clock, name=f"fault.overload.{self.instance}")
        await self._burst.start()
        self.applied = True
        return {**self.describe(), "target": list(target)}

    async def revert(self, ctx: FaultContext) -> dict[str, Any]:
        self.applied = False
        if self._burst is None:
            return self.describe()
        report = await self._burst.stop(self.settings["linger"] / ctx.clock.time_scale)
        return {**self.describe(), **report}

    def stats(self) -> dict[str, Any]:
        return self._burst.report() if self._burst is not None else {}


FAULT_KINDS: dict[str, type[Fault]] = {
    cls.kind: cls
    for cls in (
        CrashFault, HangFault, PartitionFault, DelayFault, LossFault, DuplicateFault, ReorderFault,
        CorruptFault, SlownessFault, OverloadFault,
    )
}
"""Fault kind name -> class."""

#: Kinds whose target is an instance and which stop it answering (the dead-hop taps watch them).
FAILURE_KINDS = frozenset({"crash", "hang"})


def make_fault(kind: str, **kwargs: Any) -> Fault:
    """A fault of ``kind`` (see :data:`FAULT_KINDS`) with the constructor's keyword arguments."""
    return FAULT_KINDS[kind](**kwargs)

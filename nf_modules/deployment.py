"""Start the IMS modules a topology names, wire them by its links, stop them again.

``await deploy(topology)`` runs on a runtime's loop (``Runtime.run`` from a
plain thread, or inside an attached runtime). Modules start in dependency
order, from the HSS and the media side up to the P-CSCF and the UE pool, so
each module learns the bound addresses of the neighbours it forwards to
(port 0 in a topology means an ephemeral port). Only the instances of the
given ``process`` placement group are started here; the addresses of the
others are taken from the topology as written, so several processes can
each deploy their own group and reach the rest over UDP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pykka

from actors.topology import NFInstance, Topology
from nf_modules.application_server import AsIncomingLegControl, AsOutgoingLegControl, ApplicationLogic
from nf_modules.hss import Hss
from nf_modules.media_policy import MediaPolicy
from nf_modules.mrfc import Mrfc
from nf_modules.mrfp import MrfpSignalling
from nf_modules.pcscf import PCscf
from nf_modules.scscf import ScscfIncomingLegControl, ScscfOutgoingLegControl, SessionController
from nf_modules.ue_pool import UePool

__all__ = ["ImsDeployment", "KINDS", "START_ORDER", "deploy"]

Address = tuple[str, int]

# The SIP modules on the call path, in the order an INVITE crosses them.
CALL_PATH = (
    "pcscf",
    "scscf.session_controller",
    "scscf.incoming_leg_control",
    "as.incoming_leg_control",
    "as.application_logic",
    "as.media_policy",
    "as.outgoing_leg_control",
    "scscf.outgoing_leg_control",
)

# Start order: what others need to know first. The UE pool comes last (it registers).
START_ORDER = ("hss", "mrfp", "mrfc", *reversed(CALL_PATH[1:]), "pcscf", "ue_pool")


KINDS: dict[str, type] = {
    "pcscf": PCscf,
    "scscf.session_controller": SessionController,
    "scscf.incoming_leg_control": ScscfIncomingLegControl,
    "scscf.outgoing_leg_control": ScscfOutgoingLegControl,
    "hss": Hss,
    "as.incoming_leg_control": AsIncomingLegControl,
    "as.application_logic": ApplicationLogic,
    "as.media_policy": MediaPolicy,
    "as.outgoing_leg_control": AsOutgoingLegControl,
    "mrfc": Mrfc,
    "mrfp": MrfpSignalling,
    "ue_pool": UePool,
}
"""Topology kind -> the actor class that implements it."""


@dataclass
class ImsDeployment:
    """The running modules of one process: refs and bound addresses by instance name."""

    topology: Topology
    refs: dict[str, pykka.ActorRef[Any]] = field(default_factory=dict)
    addresses: dict[str, Address] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    def proxy(self, name: str) -> Any:
        return self.refs[name].proxy()

    def first(self, kind: str) -> str:
        """The name of the first instance of ``kind`` in the topology."""
        instances = self.topology.by_kind(kind)
        if not instances:
            raise KeyError(f"the topology has no {kind!r} instance")
        return instances[0].name

    async def stats(self) -> dict[str, Any]:
        """Every local module's ``get_stats()``, by instance name."""
        return {name: await self.refs[name].proxy().get_stats() for name in self.order}

    async def stop(self) -> None:
        """Stop the modules in reverse start order."""
        for name in reversed(self.order):
            await _stop(self.refs[name])
        self.refs.clear()


async def _stop(ref: pykka.ActorRef[Any]) -> None:
    from actors.future import as_asyncio_future

    actor = ref._actor_weakref()  # noqa: SLF001
    try:
        ref.stop(block=False)
    except pykka.ActorDeadError:
        return
    if actor is not None:
        await as_asyncio_future(actor.actor_terminated)


async def deploy(
    topology: Topology,
    *,
    process: str | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> ImsDeployment:
    """Start the topology's modules (those of ``process``, or all) on the running loop.

    ``overrides`` adds or replaces constructor keyword arguments per instance name.
    """
    deployment = ImsDeployment(topology)
    addresses: dict[str, Address] = {nf.name: nf.address for nf in topology}
    local = [nf for nf in topology if process is None or nf.process == process]
    unknown = [nf for nf in local if nf.kind not in KINDS]
    if unknown:
        raise ValueError(f"no module implements kind {unknown[0].kind!r} (instance {unknown[0].name!r})")
    rank = {kind: i for i, kind in enumerate(START_ORDER)}
    for nf in sorted(local, key=lambda n: rank.get(n.kind, len(rank))):
        kwargs = _constructor_args(topology, nf, addresses)
        kwargs.update((overrides or {}).get(nf.name, {}))
        ref = KINDS[nf.kind].start(nf.name, nf.address, **kwargs)
        deployment.refs[nf.name] = ref
        deployment.order.append(nf.name)
        addresses[nf.name] = tuple(await ref.proxy().get_address())
    deployment.addresses = addresses
    return deployment


def _constructor_args(topology: Topology, nf: NFInstance, addresses: dict[str, Address]) -> dict[str, Any]:
    """Keyword arguments for one instance, from its kind, options and links."""
    options = dict(nf.options)
    kind = nf.kind
    if kind == "hss":
        return {"config": {"domain": topology.domain, **options}}
    if kind == "mrfp":
        low, high = options.get("rtp_port_min"), options.get("rtp_port_max")
        return {"port_range": (low, high)} if low and high else {}
    args: dict[str, Any] = {"domain": topology.domain}
    capacity = topology.capacity_of(nf.name)
    if capacity is not None:
        args["capacity"] = capacity
    if kind == "ue_pool":
        pcscf = _linked(topology, nf.name, "pcscf")
        args.update(options)
        args["pcscf"] = addresses[pcscf] if pcscf else None
        return args
    if kind == "mrfc":
        mrfp = _linked(topology, nf.name, "mrfp")
        args.pop("domain")
        args["mrfp"] = addresses[mrfp] if mrfp else None
        return args
    downstream = next((n for n in topology.downstream(nf.name) if topology[n].kind in CALL_PATH), None)
    if downstream is not None and kind != "scscf.outgoing_leg_control":
        args["downstream"] = addresses[downstream]
    if kind in ("scscf.session_controller", "scscf.outgoing_leg_control"):
        hss = topology.by_kind("hss")
        args["hss"] = addresses[hss[0].name] if hss else None
    if kind == "as.media_policy":
        mrfc = _linked(topology, nf.name, "mrfc")
        args["mrfc"] = addresses[mrfc] if mrfc else None
    if kind == "as.application_logic" and "barred" in options:
        args["barred"] = list(options["barred"])
    return args


def _linked(topology: Topology, name: str, kind: str) -> str | None:
    """The first primary neighbour of ``name`` whose kind is ``kind``."""
    return next((n for n in topology.neighbours(name) if topology[n].kind == kind), None)

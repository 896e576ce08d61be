"""Start the IMS modules a topology names, wire them by its links, stop them again.

``await deploy(topology)`` runs on a runtime's loop (``Runtime.run`` from a
plain thread, or inside an attached runtime). Modules start in dependency
order, from the HSS and the media side up to the P-CSCF and the UE pool, so
each module learns the bound addresses of the neighbours it forwards to
(port 0 in a topology means an ephemeral port). Only the instances of the
given ``process`` placement group are started here; the addresses of the
others are taken from the topology as written, so several processes can
each deploy their own group and reach the rest over UDP.

Fault tolerance: every SIP module gets the topology's ``mode`` and its Fig. 8 timers
(instance options ``timer_a``, ``fast_retry_interval``, ``timer_b``, ``announce_timeout``).
Once all are bound, each module of a refactored topology is told which neighbour modules it
supervises and, for each module downstream of it, that module's preloaded configuration (a
``FailoverTarget``: its class and constructor arguments, and the backup peers around it, from
the backup links whose ``bypass`` names it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pykka

from actors.topology import NFInstance, Topology
from nf_modules.application_server import AsIncomingLegControl, AsOutgoingLegControl, ApplicationLogic
from nf_modules.failover import FailoverTarget
from nf_modules.hss import Hss
from nf_modules.media_policy import MediaPolicy
from nf_modules.mrfc import Mrfc
from nf_modules.mrfp import MrfpSignalling
from nf_modules.pcrf import Pcrf
from nf_modules.pcscf import PCscf
from nf_modules.pgw import Pgw
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
START_ORDER = ("hss", "pcrf", "pgw", "mrfp", "mrfc", *reversed(CALL_PATH[1:]), "pcscf", "ue_pool")

# SIP modules a neighbour supervises, and those a neighbour can replace by a local instance.
SUPERVISED_KINDS = frozenset({*CALL_PATH, "mrfc"})
FAILOVER_KINDS = SUPERVISED_KINDS - {"pcscf"}
MRF_FAILOVER_MARGIN = 2.0
DETECTOR_OPTIONS = ("timer_a", "fast_retry_interval", "timer_b", "announce_timeout")


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
    "pgw": Pgw,
    "pcrf": Pcrf,
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

    async def stop_module(self, name: str) -> None:
        """Stop one module now (a crash: its actor ends and its socket closes)."""
        ref = self.refs.pop(name)
        if name in self.order:
            self.order.remove(name)
        await _stop(ref)

    async def restart_module(self, name: str) -> pykka.ActorRef[Any]:
        """Start ``name`` again from its preloaded configuration on its old address (the
        OpenStack-style recovery of a failed NF). It must not be running."""
        if name in self.refs:
            raise ValueError(f"{name!r} is running; stop it first")
        nf = self.topology[name]
        address = self.addresses.get(name, nf.address)
        kwargs = _constructor_args(self.topology, nf, self.addresses)
        ref = KINDS[nf.kind].start(name, address, **kwargs)
        self.refs[name] = ref
        self.order.append(name)
        self.addresses[name] = tuple(await ref.proxy().get_address())
        if self.topology.mode == "refactored" and nf.kind in CALL_PATH:
            await ref.proxy().configure_failover(**_failover_config(self.topology, nf, self.addresses))
        return ref

    async def failover_events(self) -> list[dict[str, Any]]:
        """Every running SIP module's failover events, in time order."""
        events: list[dict[str, Any]] = []
        for name in self.order:
            if self.topology[name].kind in SUPERVISED_KINDS - {"mrfc"}:
                events.extend(await self.refs[name].proxy().get_failover_events())
        return sorted(events, key=lambda e: e["at"])

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
    for nf in local:
        if nf.kind == "pcrf":
            pgw = _linked(topology, nf.name, "pgw")
            await deployment.refs[nf.name].proxy().set_pgw(addresses[pgw] if pgw else None)
    if topology.mode == "refactored":
        for nf in local:
            if nf.kind in CALL_PATH:
                await deployment.refs[nf.name].proxy().configure_failover(
                    **_failover_config(topology, nf, addresses)
                )
    return deployment


def _failover_config(topology: Topology, nf: NFInstance, addresses: dict[str, Address]) -> dict[str, Any]:
    """What one module needs to supervise its neighbours and stand in for the downstream ones."""
    neighbours = [n for n in topology.neighbours(nf.name) if topology[n].kind in SUPERVISED_KINDS]
    targets: dict[Address, FailoverTarget] = {}
    for name in topology.downstream(nf.name):
        failed = topology[name]
        if failed.kind not in FAILOVER_KINDS:
            continue
        targets[addresses[name]] = FailoverTarget(
            name=name, kind=failed.kind, cls=KINDS[failed.kind],
            kwargs=lambda failed=failed: _replacement_args(topology, failed, addresses),
            announce_to=lambda name=name: tuple(
                (peer, addresses[peer]) for peer in topology.backups_around(nf.name, name) if peer in addresses
            ),
        )
    return {
        "supervised_hops": [addresses[n] for n in neighbours],
        "failover_targets": targets,
        "hop_names": {addresses[n.name]: n.name for n in topology},
    }


def _replacement_args(topology: Topology, failed: NFInstance, addresses: dict[str, Address]) -> dict[str, Any]:
    """The failed module's constructor arguments, for a local instance of it."""
    args = _constructor_args(topology, failed, addresses)
    if failed.kind in CALL_PATH:
        neighbours = [n for n in topology.neighbours(failed.name) if topology[n].kind in SUPERVISED_KINDS]
        args["supervised_hops"] = [addresses[n] for n in neighbours]
        args["hop_names"] = {addresses[n.name]: n.name for n in topology}
    return args


def _constructor_args(topology: Topology, nf: NFInstance, addresses: dict[str, Address]) -> dict[str, Any]:
    """Keyword arguments for one instance, from its kind, options and links."""
    options = dict(nf.options)
    kind = nf.kind
    if kind == "hss":
        return {"config": {"domain": topology.domain, **options}}
    if kind == "mrfp":
        low, high = options.get("rtp_port_min"), options.get("rtp_port_max")
        args_mrfp: dict[str, Any] = {"port_range": (low, high)} if low and high else {}
        args_mrfp["mode"] = topology.mode
        args_mrfp.update(_mrfp_media_args(nf))
        pcrf = _linked(topology, nf.name, "pcrf")
        if pcrf is not None:
            args_mrfp["pcrf"] = addresses[pcrf]
        return args_mrfp
    if kind == "pcrf":
        return {}
    if kind == "pgw":
        pcrf = _linked(topology, nf.name, "pcrf")
        args_pgw: dict[str, Any] = {"pcrf": addresses[pcrf] if pcrf else None}
        if "report_interval" in options:
            args_pgw["report_interval"] = float(options["report_interval"])
        return args_pgw
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
        args["mode"] = topology.mode
        args.update(_mrfc_media_args(nf))
        return args
    args["mode"] = topology.mode
    for option in DETECTOR_OPTIONS:
        if option in options:
            value = options[option]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"nf.{nf.name}.options.{option}: expected a positive number of seconds, got {value!r}")
            args[option] = float(value)
    downstream = next((n for n in topology.downstream(nf.name) if topology[n].kind in CALL_PATH), None)
    if downstream is not None and kind != "scscf.outgoing_leg_control":
        args["downstream"] = addresses[downstream]
    if kind in ("scscf.session_controller", "scscf.outgoing_leg_control"):
        hss = topology.by_kind("hss")
        args["hss"] = addresses[hss[0].name] if hss else None
    if kind == "as.media_policy":
        mrfc = _linked(topology, nf.name, "mrfc")
        args["mrfc"] = addresses[mrfc] if mrfc else None
        if "mrf_timeout" in options:
            args["mrf_timeout"] = float(options["mrf_timeout"])
        elif topology.mode == "refactored":
            # The set-up must outlive a failover of the MRFC (detection, then the replayed INVITE).
            args["mrf_timeout"] = args.get("timer_a", 1.0) + args.get("timer_b", 1.0) + MRF_FAILOVER_MARGIN
        args.update(_script_server_args(nf))
    if kind == "pcscf":
        pcrf = _linked(topology, nf.name, "pcrf")
        if pcrf is not None:
            args["pcrf"] = addresses[pcrf]
        for option in ("baseline_retries", "baseline_retry_interval"):
            if option in options:
                args[option] = options[option]
    if kind == "as.application_logic" and "barred" in options:
        args["barred"] = list(options["barred"])
    return args


# -- media options: topology option -> constructor keyword, each checked, errors naming the field --

# MRFP Media Update options (``[nf.<mrfp>.options]``) -> ``update_options`` keys.
UPDATE_OPTIONS = {"alpha": "alpha", "predict_batch": "batch", "refresh": "refresh",
                  "deviation": "deviation", "predictor": "predictor"}


def _option(nf: NFInstance, key: str, check: str) -> Any:
    """``nf``'s option ``key`` checked as ``check``: ``"positive"`` (seconds, a rate),
    ``"fraction"`` (0 < x <= 1), ``"non_negative"``, ``"count"`` (a positive integer),
    ``"flag"``, ``"rate_or_none"`` (positive, or absent/0 for unlimited)."""
    value = nf.options[key]
    field_name = f"nf.{nf.name}.options.{key}"
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    if check == "flag":
        if not isinstance(value, bool):
            raise ValueError(f"{field_name}: expected true or false, got {value!r}")
        return value
    if check == "count":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{field_name}: expected a positive integer, got {value!r}")
        return value
    if check == "rate_or_none":
        if not number or value < 0:
            raise ValueError(f"{field_name}: expected a non-negative rate (0: unlimited), got {value!r}")
        return float(value) if value > 0 else None
    if not number:
        raise ValueError(f"{field_name}: expected a number, got {value!r}")
    if check == "fraction" and not 0 < value <= 1:
        raise ValueError(f"{field_name}: expected a number in (0, 1], got {value!r}")
    if check == "positive" and not value > 0:
        raise ValueError(f"{field_name}: expected a positive number, got {value!r}")
    if check == "non_negative" and not value >= 0:
        raise ValueError(f"{field_name}: expected a non-negative number, got {value!r}")
    return float(value)


def _mrfp_media_args(nf: NFInstance) -> dict[str, Any]:
    """The MRFP's Media Processor and Media Update options."""
    from nf_modules.media_update import PREDICTORS

    args: dict[str, Any] = {}
    checks = {"metadata_interval": "positive", "hold_limit": "count", "native": "flag",
              "report_interval": "positive"}
    for key, check in checks.items():
        if key in nf.options:
            args[key] = _option(nf, key, check)
    update: dict[str, Any] = {}
    update_checks = {"alpha": "fraction", "predict_batch": "count", "refresh": "positive",
                     "deviation": "non_negative"}
    for key, check in update_checks.items():
        if key in nf.options:
            update[UPDATE_OPTIONS[key]] = _option(nf, key, check)
    if "predictor" in nf.options:
        predictor = nf.options["predictor"]
        if predictor not in PREDICTORS:
            raise ValueError(f"nf.{nf.name}.options.predictor: expected one of {', '.join(PREDICTORS)}, "
                             f"got {predictor!r}")
        update["predictor"] = predictor
    if update:
        args["update_options"] = update
    return args


def _mrfc_media_args(nf: NFInstance) -> dict[str, Any]:
    """The MRFC Media Control's service rate, queue and script fetch timeout."""
    args: dict[str, Any] = {}
    if "media_capacity" in nf.options:
        args["media_capacity"] = _option(nf, "media_capacity", "rate_or_none")
    if "media_queue_limit" in nf.options:
        args["media_queue_limit"] = _option(nf, "media_queue_limit", "count")
    if "script_timeout" in nf.options:
        args["script_timeout"] = _option(nf, "script_timeout", "positive")
    return args


def _script_server_args(nf: NFInstance) -> dict[str, Any]:
    """The AS Media Policy's HTTP script server."""
    args: dict[str, Any] = {}
    if "script_capacity" in nf.options:
        args["script_capacity"] = _option(nf, "script_capacity", "rate_or_none")
    if "script_queue_limit" in nf.options:
        args["script_queue_limit"] = _option(nf, "script_queue_limit", "count")
    if "script_server" in nf.options:
        args["script_server"] = _option(nf, "script_server", "flag")
    if "scripts" in nf.options:
        scripts = nf.options["scripts"]
        if not isinstance(scripts, Mapping) or not all(isinstance(v, Mapping) for v in scripts.values()):
            raise ValueError(f"nf.{nf.name}.options.scripts: expected a table of script tables, got {scripts!r:.80}")
        from nf_modules.media_scripts import MediaScriptError, ScriptLibrary

        try:
            args["scripts"] = ScriptLibrary(_thaw(scripts))
        except (MediaScriptError, ValueError, TypeError, KeyError) as error:
            raise ValueError(f"nf.{nf.name}.options.scripts: {error}") from None
    return args


def _thaw(value: Any) -> Any:
    """Plain dicts and lists from the topology's frozen options."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


def _linked(topology: Topology, name: str, kind: str) -> str | None:
    """The first primary neighbour of ``name`` whose kind is ``kind``."""
    return next((n for n in topology.neighbours(name) if topology[n].kind == kind), None)

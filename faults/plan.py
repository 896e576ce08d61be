"""Fault plans: TOML files saying what fails, where, when and for how long.

A plan::

    name = "silc-crash"                 # default: the file's stem
    description = "..."
    seed = 1                            # seeds instance selection and every random impairment

    [load]                              # free-form: how the experiment should drive calls
    ramp_calls_per_s = 1

    [[fault]]
    kind = "crash"                      # faults.kinds.FAULT_KINDS
    target = "scscf.incoming_leg_control"   # a module kind or an instance name ...
    # link = ["pcscf", "scscf.session_controller"]  # ... or a link (kinds or instance names)
    mode = "one"                        # one | all | fixed | percent  (like Chaos Mesh)
    value = 1                           # N for fixed, P (0-100] for percent
    direction = "both"                  # links: forward | backward | both; instances: inbound | outbound | both
    at = "10s"                          # when: a time after the run starts ...
    # at_call = 25                      # ... or when the Nth call is started (or established:
    # on = "started"                    #     on = "established")
    duration = "5s"                     # how long; omitted or "end": until the run ends
    [fault.params]                      # the kind's parameters (faults.kinds)
    restart_on_revert = false

    [[check]]                           # steady-state checks (faults.verdict)
    check = "detection_at"
    expected_s = 2.0

Durations are seconds as numbers or strings with a unit: ``"250ms"``, ``"2s"``, ``"1.5 s"``,
``"1m"``. Every error is a :class:`PlanError` naming the source and the field. :func:`resolve`
checks a plan against a topology (unknown modules, links that do not exist, selections the
topology cannot satisfy, faults its modules cannot carry) and picks the instances, seeded.
"""

from __future__ import annotations

import math
import random
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from actors.topology import Topology
from faults.kinds import FAULT_KINDS, Fault, Param
from faults.verdict import Check, CheckError, parse_check

__all__ = [
    "BUILTIN_DIR",
    "FaultPlan",
    "FaultSpec",
    "PlanError",
    "ResolvedFault",
    "builtin_plans",
    "load_plan",
    "parse_duration",
    "parse_plan",
    "resolve",
]

BUILTIN_DIR = Path(__file__).resolve().parent / "plans"
MODES = ("one", "all", "fixed", "percent")
CALL_EVENTS = ("started", "established")
LINK_DIRECTIONS = ("forward", "backward", "both")
INSTANCE_DIRECTIONS = ("inbound", "outbound", "both")
#: Kinds that speak the JSON control protocol, not SIP.
NON_SIP_KINDS = frozenset({"hss", "mrfp"})

_TOP_KEYS = ("name", "description", "seed", "load", "fault", "check")
_FAULT_KEYS = ("kind", "target", "link", "mode", "value", "direction", "at", "at_call", "on", "duration", "params")
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


class PlanError(ValueError):
    """A plan that cannot run; the message names the source and the field."""


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One ``[[fault]]`` as written (targets not yet resolved against a topology)."""

    index: int
    kind: str
    target: str | None
    link: tuple[str, str] | None
    mode: str
    value: float | None
    direction: str
    at_s: float | None
    at_call: int | None
    on: str
    duration_s: float | None  # None: until the end of the run
    params: Mapping[str, Any]

    @property
    def path(self) -> str:
        return f"fault[{self.index}]"


@dataclass(frozen=True, slots=True)
class FaultPlan:
    name: str
    description: str
    seed: int
    faults: tuple[FaultSpec, ...]
    checks: tuple[Check, ...]
    load: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<string>"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "seed": self.seed,
            "faults": [
                {"kind": f.kind, "target": f.target, "link": list(f.link) if f.link else None, "mode": f.mode,
                 "value": f.value, "direction": f.direction, "at_s": f.at_s, "at_call": f.at_call, "on": f.on,
                 "duration_s": f.duration_s, "params": dict(f.params)}
                for f in self.faults
            ],
            "checks": [{"check": c.name, **c.params} for c in self.checks],
            "load": dict(self.load),
        }


@dataclass(frozen=True, slots=True)
class ResolvedFault:
    """A fault spec bound to the instances (or links) of one topology it will hit."""

    spec: FaultSpec
    faults: tuple[Fault, ...]


# ---------------------------------------------------------------------- loading


def builtin_plans() -> list[str]:
    """Names of the plans shipped in ``faults/plans``."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def load_plan(name_or_path: str | Path) -> FaultPlan:
    """A built-in plan by name, or a plan file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = BUILTIN_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise PlanError(f"no built-in plan {str(name_or_path)!r} (built-in: {', '.join(builtin_plans())})")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PlanError(f"{path}: cannot read: {error.strerror}") from None
    return parse_plan(text, source=path.name, default_name=path.stem)


def parse_plan(text: str, *, source: str = "<string>", default_name: str = "plan") -> FaultPlan:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PlanError(f"{source}: not valid TOML: {error}") from None
    return _Parser(source).plan(doc, default_name)


def parse_duration(value: Any, path: str) -> float:
    """Seconds from a number or a string like ``"250ms"``/``"2s"``/``"1m"``; errors name ``path``."""
    if isinstance(value, bool):
        raise PlanError(f"{path}: expected a duration like \"2s\" or \"250ms\", got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    else:
        raise PlanError(f"{path}: expected a duration like \"2s\" or \"250ms\", got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise PlanError(f"{path}: a duration must be finite and >= 0, got {value!r}")
    return seconds


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> PlanError:
        return PlanError(f"{self.source}: {path}: {message}")

    def plan(self, doc: dict[str, Any], default_name: str) -> FaultPlan:
        for key in doc:
            if key not in _TOP_KEYS:
                raise self.fail(key, f"unknown key (allowed: {', '.join(_TOP_KEYS)})")
        name = doc.get("name", default_name)
        if not isinstance(name, str) or not name:
            raise self.fail("name", f"expected a non-empty string, got {name!r}")
        description = doc.get("description", "")
        if not isinstance(description, str):
            raise self.fail("description", f"expected a string, got {description!r}")
        seed = doc.get("seed", 1)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise self.fail("seed", f"expected an integer, got {seed!r}")
        load = doc.get("load", {})
        if not isinstance(load, dict):
            raise self.fail("load", "expected a table")
        faults = doc.get("fault", [])
        if not isinstance(faults, list) or not faults:
            raise self.fail("fault", "expected at least one [[fault]] table")
        checks = doc.get("check", [])
        if not isinstance(checks, list):
            raise self.fail("check", "expected [[check]] tables")
        parsed_checks = []
        for i, table in enumerate(checks):
            try:
                parsed_checks.append(parse_check(table, f"check[{i}]"))
            except CheckError as error:
                raise PlanError(f"{self.source}: {error}") from None
        return FaultPlan(
            name=name, description=description, seed=seed,
            faults=tuple(self.fault(i, t) for i, t in enumerate(faults)),
            checks=tuple(parsed_checks), load=MappingProxyType(dict(load)), source=self.source,
        )

    def fault(self, i: int, table: Any) -> FaultSpec:
        path = f"fault[{i}]"
        if not isinstance(table, dict):
            raise self.fail(path, "expected a table")
        for key in table:
            if key not in _FAULT_KEYS:
                raise self.fail(f"{path}.{key}", f"unknown key (allowed: {', '.join(_FAULT_KEYS)})")
        kind = table.get("kind")
        if kind not in FAULT_KINDS:
            raise self.fail(f"{path}.kind", f"unknown fault kind {kind!r} (known: {', '.join(sorted(FAULT_KINDS))})")
        cls = FAULT_KINDS[kind]
        target, link = table.get("target"), table.get("link")
        if (target is None) == (link is None):
            raise self.fail(path, "give exactly one of target (a module kind or instance) and link")
        if target is not None:
            if "instance" not in cls.scopes:
                raise self.fail(f"{path}.target", f"a {kind} fault needs a link, not a target")
            if not isinstance(target, str) or not target:
                raise self.fail(f"{path}.target", f"expected a module kind or instance name, got {target!r}")
        else:
            if "link" not in cls.scopes:
                raise self.fail(f"{path}.link", f"a {kind} fault acts on an instance: give target")
            if not (isinstance(link, list) and len(link) == 2 and all(isinstance(x, str) and x for x in link)):
                raise self.fail(f"{path}.link", f"expected two module kinds or instance names, got {link!r}")
            if link[0] == link[1]:
                raise self.fail(f"{path}.link", f"a link joins two different ends, got {link!r}")
            link = (link[0], link[1])
        mode = table.get("mode", "one")
        if mode not in MODES:
            raise self.fail(f"{path}.mode", f"expected one of {', '.join(MODES)}, got {mode!r}")
        value = table.get("value")
        if mode in ("fixed", "percent"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.fail(f"{path}.value", f"mode {mode} needs a number, got {value!r}")
            if mode == "fixed" and (not float(value).is_integer() or value < 1):
                raise self.fail(f"{path}.value", f"mode fixed needs an integer >= 1, got {value!r}")
            if mode == "percent" and not 0 < value <= 100:
                raise self.fail(f"{path}.value", f"mode percent needs 0 < value <= 100, got {value!r}")
            value = float(value)
        elif value is not None:
            raise self.fail(f"{path}.value", f"mode {mode} takes no value")
        directions = LINK_DIRECTIONS if link is not None else INSTANCE_DIRECTIONS
        direction = table.get("direction", "both")
        if direction not in directions:
            raise self.fail(f"{path}.direction", f"expected one of {', '.join(directions)}, got {direction!r}")
        if direction != "both" and kind in ("crash", "hang", "slowness", "overload"):
            raise self.fail(f"{path}.direction", f"a {kind} fault has no direction")
        at, at_call = table.get("at"), table.get("at_call")
        if at is not None and at_call is not None:
            raise self.fail(path, "give at (a time) or at_call (a call number), not both")
        at_s = parse_duration(at, f"{self.source}: {path}.at") if at is not None else None
        if at_call is not None and (isinstance(at_call, bool) or not isinstance(at_call, int) or at_call < 1):
            raise self.fail(f"{path}.at_call", f"expected a call number >= 1, got {at_call!r}")
        if at is None and at_call is None:
            at_s = 0.0
        on = table.get("on", "started")
        if on not in CALL_EVENTS:
            raise self.fail(f"{path}.on", f"expected one of {', '.join(CALL_EVENTS)}, got {on!r}")
        duration = table.get("duration", "end")
        duration_s = None if duration == "end" else parse_duration(duration, f"{self.source}: {path}.duration")
        if duration_s is None and cls.needs_duration:
            raise self.fail(f"{path}.duration", f"a {kind} fault needs a duration")
        params = self.params(f"{path}.params", cls, table.get("params", {}))
        return FaultSpec(
            index=i, kind=kind, target=target, link=link, mode=mode, value=value, direction=direction,
            at_s=at_s, at_call=at_call, on=on, duration_s=duration_s, params=MappingProxyType(params),
        )

    def params(self, path: str, cls: type[Fault], table: Any) -> dict[str, Any]:
        if not isinstance(table, dict):
            raise self.fail(path, "expected a table")
        out: dict[str, Any] = {}
        for key, value in table.items():
            spec = cls.params.get(key)
            if spec is None:
                allowed = ", ".join(cls.params) or "none"
                raise self.fail(f"{path}.{key}", f"{cls.kind} takes no parameter {key!r} (parameters: {allowed})")
            out[key] = self.param(f"{path}.{key}", spec, value)
        for key, spec in cls.params.items():
            if spec.required and key not in out:
                raise self.fail(f"{path}.{key}", f"{cls.kind} needs {key}")
        return out

    def param(self, path: str, spec: Param, value: Any) -> Any:
        number = not isinstance(value, bool) and isinstance(value, (int, float))
        if spec.type == "seconds":
            return parse_duration(value, f"{self.source}: {path}")
        if spec.type == "probability":
            if not number or not 0 <= value <= 1:
                raise self.fail(path, f"expected a probability in [0, 1], got {value!r}")
            return float(value)
        if spec.type == "rate":
            if not number or not math.isfinite(value) or value <= 0:
                raise self.fail(path, f"expected a rate > 0 per second, got {value!r}")
            return float(value)
        if spec.type == "count":
            if not number or not float(value).is_integer() or value < 1:
                raise self.fail(path, f"expected an integer >= 1, got {value!r}")
            return int(value)
        if spec.type == "bool":
            if not isinstance(value, bool):
                raise self.fail(path, f"expected true or false, got {value!r}")
            return value
        if spec.type == "choice":
            if value not in spec.choices:
                raise self.fail(path, f"expected one of {', '.join(spec.choices)}, got {value!r}")
            return value
        raise AssertionError(spec.type)  # pragma: no cover


# ---------------------------------------------------------------------- resolving against a topology


def resolve(plan: FaultPlan, topology: Topology, *, local: Collection[str] | None = None) -> list[ResolvedFault]:
    """Bind every fault of ``plan`` to instances or links of ``topology`` (seeded selection).

    ``local``: the instances this process runs (faults act through in-process seams, so a target
    elsewhere cannot be carried). Raises :class:`PlanError` naming the field.
    """
    out = []
    for spec in plan.faults:
        rng = random.Random(f"{plan.seed}/{spec.index}")
        seed = f"{plan.seed}/{spec.index}"
        cls = FAULT_KINDS[spec.kind]
        path = f"{plan.source}: {spec.path}"
        if spec.target is not None:
            candidates = _instances(topology, spec.target, f"{path}.target")
            chosen = _select(candidates, spec, rng, path)
            for name in chosen:
                kind = topology[name].kind
                if cls.needs_sip and kind in NON_SIP_KINDS:
                    raise PlanError(f"{path}.target: {spec.kind} sends SIP, but {name} ({kind}) does not speak SIP")
                _check_local(name, local, f"{path}.target")
            faults = tuple(
                cls(instance=name, direction=spec.direction, settings=dict(spec.params), seed=f"{seed}/{name}")
                for name in chosen
            )
        else:
            a, b = spec.link  # type: ignore[misc]
            ends_a = _instances(topology, a, f"{path}.link[0]")
            ends_b = _instances(topology, b, f"{path}.link[1]")
            linked = [
                (x, y) for x in ends_a for y in ends_b
                if any({link.src, link.dst} == {x, y} for link in topology.links)
            ]
            if not linked:
                raise PlanError(f"{path}.link: the topology has no link between {a} and {b}")
            chosen_links = _select(linked, spec, rng, path)
            for x, y in chosen_links:
                _check_local(x, local, f"{path}.link[0]")
                _check_local(y, local, f"{path}.link[1]")
            faults = tuple(
                cls(link=(x, y), direction=spec.direction, settings=dict(spec.params), seed=f"{seed}/{x}/{y}")
                for x, y in chosen_links
            )
        out.append(ResolvedFault(spec, faults))
    return out


def _instances(topology: Topology, target: str, path: str) -> list[str]:
    if target in topology.nfs:
        return [target]
    by_kind = [nf.name for nf in topology.by_kind(target)]
    if not by_kind:
        kinds = sorted({nf.kind for nf in topology})
        raise PlanError(f"{path}: unknown module {target!r}: not an instance or a kind of this topology (kinds: {', '.join(kinds)})")
    return sorted(by_kind)


def _select(candidates: list[Any], spec: FaultSpec, rng: random.Random, path: str) -> list[Any]:
    n = len(candidates)
    if spec.mode == "one":
        return [rng.choice(candidates)]
    if spec.mode == "all":
        return list(candidates)
    if spec.mode == "fixed":
        count = int(spec.value)  # type: ignore[arg-type]
        if count > n:
            raise PlanError(f"{path}.value: fixed {count} but the topology has only {n} candidate(s)")
    else:
        count = max(1, math.floor(n * spec.value / 100))  # type: ignore[operator]
    return sorted(rng.sample(candidates, count), key=str)


def _check_local(name: str, local: Collection[str] | None, path: str) -> None:
    if local is not None and name not in local:
        raise PlanError(f"{path}: {name} does not run in this process: its faults cannot be injected from here")

"""Topologies: which NF instances exist, where they listen, how they are linked. TOML, read with tomllib.

A topology file::

    domain = "ims.example"          # SIP domain
    mode = "refactored"             # "baseline" | "refactored"
    seed = 1                        # master seed of the run
    description = "..."             # optional

    [capacity]                      # service rate per kind (transactions or packets per second);
    pcscf = 500                     # a kind not listed, or "unlimited", is unlimited
    "scscf.session_controller" = 200

    [nf.pcscf]                      # one table per instance; the key is the instance name
    kind = "pcscf"                  # free-form, checked against a registry when one is given
    host = "127.0.0.1"              # default "127.0.0.1"
    port = 5060                     # 0 = ephemeral
    process = "main"                # placement group, default "main"
    capacity = 500                  # optional per-instance override of [capacity]
    [nf.pcscf.options]              # free-form, for the NF itself
    retries = 5

    [[link]]                        # a link between two instances
    from = "pcscf"                  # ``from`` -> ``to`` is the direction the initial INVITE
    to = "scscf_session_controller" # travels; responses and in-dialog requests use it both ways
    role = "primary"                # "primary" (default) | "backup"
    bypass = "..."                  # backup links: the instance it routes around (optional)
    delay_ms = 0.0                  # optional emulated one-way delay
    loss = 0.0                      # optional loss probability, 0..1

Everything is validated on load; a :class:`TopologyError` names the file and the field path, e.g.
``default.toml: nf.pcscf.port: expected an integer 0..65535, got "abc"``. The result is made of
frozen dataclasses and read-only mappings.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = [
    "CHARGING_KINDS",
    "IMS_KINDS",
    "MODES",
    "Link",
    "NFInstance",
    "Topology",
    "TopologyError",
    "load_topology",
    "parse_topology",
    "with_ephemeral_ports",
]

MODES = ("baseline", "refactored")
ROLES = ("primary", "backup")

#: The kinds of the IMS call path of DESIGN.md; pass as ``kinds=`` to check a topology against it.
IMS_KINDS = frozenset(
    {
        "ue_pool",
        "pcscf",
        "scscf.session_controller",
        "scscf.incoming_leg_control",
        "scscf.outgoing_leg_control",
        "hss",
        "as.incoming_leg_control",
        "as.application_logic",
        "as.media_policy",
        "as.outgoing_leg_control",
        "mrfc",
        "mrfp",
    }
)

#: The optional charging taps (``topologies/charging.toml``): the LTE PGW and the PCRF.
CHARGING_KINDS = frozenset({"pgw", "pcrf"})

_TOP_KEYS = ("description", "domain", "mode", "seed", "capacity", "nf", "link")
_NF_KEYS = ("kind", "host", "port", "process", "capacity", "options")
_LINK_KEYS = ("from", "to", "role", "bypass", "delay_ms", "loss")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_KIND = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?\Z")


class TopologyError(ValueError):
    """A topology that cannot be used; the message starts with ``<source>: <field path>:``."""


# ---------------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class NFInstance:
    """One NF instance: a name, a kind, an address, a placement group and its options."""

    name: str
    kind: str
    host: str = "127.0.0.1"
    port: int = 0
    process: str = "main"
    #: Per-instance capacity override (``None``: take the topology's per-kind capacity).
    capacity: float | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


@dataclass(frozen=True, slots=True)
class Link:
    """A link between two instances; ``src`` -> ``dst`` is the direction of the initial request."""

    src: str
    dst: str
    role: str = "primary"
    bypass: str | None = None
    delay_ms: float = 0.0
    loss: float = 0.0

    @property
    def ends(self) -> tuple[str, str]:
        return (self.src, self.dst)

    def other(self, name: str) -> str:
        """The end that is not ``name``."""
        if name == self.src:
            return self.dst
        if name == self.dst:
            return self.src
        raise ValueError(f"{name!r} is not an end of {self.src}->{self.dst}")


@dataclass(frozen=True, slots=True)
class Topology:
    """A validated topology. Instances keep the file's order."""

    domain: str
    mode: str
    seed: int
    nfs: Mapping[str, NFInstance] = field(hash=False)
    links: tuple[Link, ...] = ()
    #: Capacity per kind; ``None`` means unlimited; kinds not listed are unlimited.
    capacity: Mapping[str, float | None] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    description: str = ""
    source: str = "<string>"

    def __getitem__(self, name: str) -> NFInstance:
        return self.nfs[name]

    def __iter__(self) -> Iterator[NFInstance]:
        return iter(self.nfs.values())

    def __len__(self) -> int:
        return len(self.nfs)

    def address_of(self, name: str) -> tuple[str, int]:
        return self.nfs[name].address

    def by_kind(self, kind: str) -> tuple[NFInstance, ...]:
        return tuple(nf for nf in self.nfs.values() if nf.kind == kind)

    def capacity_of(self, name: str) -> float | None:
        """The instance's service rate: its own override, else its kind's, else ``None`` (unlimited)."""
        nf = self.nfs[name]
        if nf.capacity is not None:
            return nf.capacity
        return self.capacity.get(nf.kind)

    def links_of(self, name: str, role: str | None = None) -> tuple[Link, ...]:
        """Links with ``name`` at either end (of ``role`` when given), in file order."""
        self.nfs[name]  # KeyError for unknown names
        return tuple(
            link for link in self.links if name in (link.src, link.dst) and (role is None or link.role == role)
        )

    def neighbours(self, name: str, role: str | None = "primary") -> tuple[str, ...]:
        """Instances linked to ``name`` in either direction (primary links by default), deduplicated."""
        seen: dict[str, None] = {}
        for link in self.links_of(name, role):
            seen.setdefault(link.other(name), None)
        return tuple(seen)

    def downstream(self, name: str, role: str = "primary") -> tuple[str, ...]:
        """Where ``name`` sends initial requests: the ``to`` ends of its links of ``role``."""
        self.nfs[name]
        return tuple(dict.fromkeys(link.dst for link in self.links if link.src == name and link.role == role))

    def upstream(self, name: str, role: str = "primary") -> tuple[str, ...]:
        """Who sends initial requests to ``name``: the ``from`` ends of its links of ``role``."""
        self.nfs[name]
        return tuple(dict.fromkeys(link.src for link in self.links if link.dst == name and link.role == role))

    def backups_around(self, name: str, failed: str) -> tuple[str, ...]:
        """Backup peers of ``name`` that route around ``failed`` (links whose ``bypass`` is ``failed``)."""
        return tuple(
            link.other(name) for link in self.links_of(name, "backup") if link.bypass == failed
        )

    def processes(self) -> Mapping[str, tuple[str, ...]]:
        """Instance names by placement group, in file order."""
        groups: dict[str, list[str]] = {}
        for nf in self.nfs.values():
            groups.setdefault(nf.process, []).append(nf.name)
        return MappingProxyType({p: tuple(names) for p, names in groups.items()})

    def with_ephemeral_ports(self) -> Topology:
        """The same topology with every port set to 0 (each NF binds an ephemeral port; for tests)."""
        return self.with_addresses({name: (nf.host, 0) for name, nf in self.nfs.items()})

    def without(self, *names: str) -> Topology:
        """The same topology minus some instances and every link that touches them."""
        return _without(self, names)

    def with_addresses(self, addresses: Mapping[str, tuple[str, int]]) -> Topology:
        """The same topology with some instances' addresses replaced (e.g. the ports actually bound)."""
        unknown = set(addresses) - set(self.nfs)
        if unknown:
            raise KeyError(f"unknown instances: {', '.join(sorted(unknown))}")
        nfs = {
            name: dataclasses.replace(nf, host=addresses[name][0], port=int(addresses[name][1]))
            if name in addresses
            else nf
            for name, nf in self.nfs.items()
        }
        return dataclasses.replace(self, nfs=MappingProxyType(nfs))


def _without(topology: Topology, names: Collection[str]) -> Topology:
    unknown = set(names) - set(topology.nfs)
    if unknown:
        raise KeyError(f"unknown instances: {', '.join(sorted(unknown))}")
    nfs = {name: nf for name, nf in topology.nfs.items() if name not in names}
    links = tuple(link for link in topology.links if link.src not in names and link.dst not in names)
    return dataclasses.replace(topology, nfs=MappingProxyType(nfs), links=links)


def with_ephemeral_ports(topology: Topology) -> Topology:
    """``topology`` with every port set to 0 (see :meth:`Topology.with_ephemeral_ports`)."""
    return topology.with_ephemeral_ports()


# ---------------------------------------------------------------------- loading


def load_topology(source: str | os.PathLike[str], *, kinds: Collection[str] | None = None) -> Topology:
    """Load a topology from a file path or from TOML text.

    A ``Path`` (any ``os.PathLike``) is a file. A ``str`` is a file name when it is one line that
    ends in ``.toml`` or names an existing file; otherwise it is TOML text. ``kinds``, when given,
    is the registry of allowed NF kinds. Raises :class:`TopologyError`.
    """
    if isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source and (source.lower().endswith(".toml") or os.path.isfile(source))
    ):
        path = Path(source)
        name = os.fspath(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TopologyError(f"{name}: cannot read: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise TopologyError(f"{name}: not UTF-8 text: {exc}") from exc
        return parse_topology(text, source=name, kinds=kinds)
    if not isinstance(source, str):
        raise TypeError(f"expected a path or TOML text, got {type(source).__name__}")
    return parse_topology(source, kinds=kinds)


def parse_topology(text: str, *, source: str = "<string>", kinds: Collection[str] | None = None) -> Topology:
    """Parse and validate TOML ``text``; ``source`` names it in error messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", msg)
        if m:
            where = f"line {m.group(1)}, column {m.group(2)}"
            msg = msg[: m.start()]
        else:
            m = re.search(r"\s*\(at end of document\)\s*$", msg)
            where = f"line {text.count(chr(10)) + 1} (end of document)"
            if m:
                msg = msg[: m.start()]
        raise TopologyError(f"{source}: {where}: TOML syntax error: {msg}") from None
    return _Validator(source, kinds).topology(doc)


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


class _Validator:
    def __init__(self, source: str, kinds: Collection[str] | None) -> None:
        self.source = source
        self.kinds = None if kinds is None else frozenset(kinds)

    def fail(self, path: str, message: str) -> TopologyError:
        return TopologyError(f"{self.source}: {path}: {message}")

    def expected(self, path: str, what: str, got: Any) -> TopologyError:
        return self.fail(path, f"expected {what}, got {_describe(got)}")

    def unknown_keys(self, path: str, table: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for key in table:
            if key not in allowed:
                where = f"{path}.{key}" if path else key
                raise self.fail(where, f"unknown key (expected one of: {', '.join(allowed)})")

    # --- scalar checks

    def string(self, path: str, value: Any, *, pattern: re.Pattern[str] | None = None, what: str = "a string") -> str:
        if not isinstance(value, str) or not value or (pattern is not None and not pattern.match(value)):
            raise self.expected(path, what, value)
        return value

    def integer(self, path: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and ((lo is not None and value < lo) or (hi is not None and value > hi)):
            ok = False
        if not ok:
            if lo is not None and hi is not None:
                what = f"an integer {lo}..{hi}"
            elif lo is not None:
                what = f"an integer >= {lo}"
            else:
                what = "an integer"
            raise self.expected(path, what, value)
        return value

    def number(self, path: str, value: Any, *, lo: float, hi: float | None = None, lo_open: bool = False) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            ok = (value > lo if lo_open else value >= lo) and (hi is None or value <= hi)
        if not ok:
            if hi is not None:
                what = f"a number {lo}..{hi}"
            elif lo_open:
                what = f"a number > {lo}"
            else:
                what = f"a number >= {lo}"
            raise self.expected(path, what, value)
        return float(value)

    def capacity(self, path: str, value: Any) -> float | None:
        if value == "unlimited":
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        if not ok:
            raise self.expected(path, 'a positive number or "unlimited"', value)
        return float(value)

    def host(self, path: str, value: Any) -> str:
        if isinstance(value, str):
            try:
                return ipaddress.ip_address(value).compressed
            except ValueError:
                if _HOSTNAME.match(value):
                    return value.lower()
        raise self.expected(path, "an IP address or host name", value)

    def kind(self, path: str, value: Any) -> str:
        kind = self.string(path, value, pattern=_KIND, what="a kind name (letters, digits, _ . -)")
        if self.kinds is not None and kind not in self.kinds:
            raise self.fail(path, f'unknown kind "{kind}" (known: {", ".join(sorted(self.kinds))})')
        return kind

    # --- tables

    def topology(self, doc: dict[str, Any]) -> Topology:
        self.unknown_keys("", doc, _TOP_KEYS)
        description = doc.get("description", "")
        if not isinstance(description, str):
            raise self.expected("description", "a string", description)
        domain = self.host("domain", doc.get("domain", "ims.example"))
        mode = doc.get("mode", "refactored")
        if mode not in MODES:
            raise self.expected("mode", '"baseline" or "refactored"', mode)
        seed = self.integer("seed", doc.get("seed", 0))
        capacity = self.capacities(doc.get("capacity", {}))
        nfs = self.instances(doc.get("nf"))
        links = self.links(doc.get("link", []), nfs)
        return Topology(
            domain=domain,
            mode=mode,
            seed=seed,
            nfs=MappingProxyType(nfs),
            links=links,
            capacity=MappingProxyType(capacity),
            description=description,
            source=self.source,
        )

    def capacities(self, table: Any) -> dict[str, float | None]:
        if not isinstance(table, dict):
            raise self.expected("capacity", "a table of kind = rate", table)
        out: dict[str, float | None] = {}
        for kind, value in table.items():
            path = f"capacity.{kind}"
            if self.kinds is not None and kind not in self.kinds:
                raise self.fail(path, f'unknown kind "{kind}" (known: {", ".join(sorted(self.kinds))})')
            out[kind] = self.capacity(path, value)
        return out

    def instances(self, table: Any) -> dict[str, NFInstance]:
        if table is None:
            raise self.fail("nf", "missing: a topology needs at least one [nf.<name>] table")
        if not isinstance(table, dict) or not table:
            raise self.expected("nf", "a table of [nf.<name>] tables", table)
        nfs: dict[str, NFInstance] = {}
        bound: dict[tuple[str, int], str] = {}
        for name, spec in table.items():
            path = f"nf.{name}"
            if not _NAME.match(name):
                raise self.fail(path, "an instance name must be letters, digits, _ and -, not starting with a digit")
            if not isinstance(spec, dict):
                raise self.expected(path, "a table", spec)
            self.unknown_keys(path, spec, _NF_KEYS)
            if "kind" not in spec:
                raise self.fail(f"{path}.kind", "missing")
            kind = self.kind(f"{path}.kind", spec["kind"])
            host = self.host(f"{path}.host", spec.get("host", "127.0.0.1"))
            port = self.integer(f"{path}.port", spec.get("port", 0), 0, 65535)
            process = self.string(
                f"{path}.process", spec.get("process", "main"), pattern=_NAME, what="a placement group name"
            )
            capacity = self.capacity(f"{path}.capacity", spec["capacity"]) if "capacity" in spec else None
            options = spec.get("options", {})
            if not isinstance(options, dict):
                raise self.expected(f"{path}.options", "a table", options)
            if port != 0:
                for (other_host, other_port), other in bound.items():
                    if other_port == port and (other_host == host or _wildcard(host) or _wildcard(other_host)):
                        raise self.fail(
                            f"{path}.port", f"{host}:{port} is already used by nf.{other} ({other_host}:{other_port})"
                        )
                bound[(host, port)] = name
            nfs[name] = NFInstance(
                name=name,
                kind=kind,
                host=host,
                port=port,
                process=process,
                capacity=capacity,
                options=_freeze(options),
            )
        return nfs

    def links(self, array: Any, nfs: Mapping[str, NFInstance]) -> tuple[Link, ...]:
        if not isinstance(array, list):
            raise self.expected("link", "an array of tables ([[link]])", array)
        links: list[Link] = []
        seen: dict[tuple[str, str, str], int] = {}
        for i, spec in enumerate(array):
            path = f"link[{i}]"
            if not isinstance(spec, dict):
                raise self.expected(path, "a table", spec)
            self.unknown_keys(path, spec, _LINK_KEYS)
            ends = []
            for end in ("from", "to"):
                if end not in spec:
                    raise self.fail(f"{path}.{end}", "missing")
                value = spec[end]
                if not isinstance(value, str) or value not in nfs:
                    raise self.fail(f"{path}.{end}", f"unknown instance {_describe(value)}")
                ends.append(value)
            src, dst = ends
            if src == dst:
                raise self.fail(f"{path}.to", f'a link cannot join "{src}" to itself')
            role = spec.get("role", "primary")
            if role not in ROLES:
                raise self.expected(f"{path}.role", '"primary" or "backup"', role)
            bypass = spec.get("bypass")
            if bypass is not None:
                if role != "backup":
                    raise self.fail(f"{path}.bypass", "only backup links bypass an instance")
                if not isinstance(bypass, str) or bypass not in nfs:
                    raise self.fail(f"{path}.bypass", f"unknown instance {_describe(bypass)}")
                if bypass in (src, dst):
                    raise self.fail(f"{path}.bypass", f'a link cannot bypass its own end "{bypass}"')
            delay_ms = self.number(f"{path}.delay_ms", spec.get("delay_ms", 0.0), lo=0.0)
            loss = self.number(f"{path}.loss", spec.get("loss", 0.0), lo=0.0, hi=1.0)
            key = (src, dst, role)
            if key in seen:
                raise self.fail(path, f"duplicate {role} link {src} -> {dst} (same as link[{seen[key]}])")
            seen[key] = i
            links.append(Link(src=src, dst=dst, role=role, bypass=bypass, delay_ms=delay_ms, loss=loss))
        # A backup link routes around an instance that is a primary neighbour of both its ends.
        primary: dict[str, set[str]] = {}
        for link in links:
            if link.role == "primary":
                primary.setdefault(link.src, set()).add(link.dst)
                primary.setdefault(link.dst, set()).add(link.src)
        for i, link in enumerate(links):
            if link.bypass is None:
                continue
            for end in (link.src, link.dst):
                if link.bypass not in primary.get(end, ()):
                    raise self.fail(
                        f"link[{i}].bypass",
                        f'"{link.bypass}" is not a primary neighbour of "{end}"',
                    )
        return tuple(links)


def _wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::")

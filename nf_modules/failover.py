"""Failover through backup links (paper ``004`` VI-B, Algorithm 2 ``Failover()``): the pieces a
module uses once its :class:`~nf_modules.hop_supervisor.HopSupervisor` declared a next hop
failed.

* :class:`FailoverTarget`: the preloaded configuration of a neighbour the module may have to
  stand in for: its name, actor class, constructor arguments (resolved when needed, so the
  addresses are the bound ones) and the backup peers to announce the failure to (the failed
  module's other neighbours, reached over the backup links whose ``bypass`` names it).
* The announcement (the decision: a real SIP request over the backup link, since every
  neighbour on the call path speaks SIP and the backup links join SIP modules)::

      NOTIFY sip:<peer host:port> SIP/2.0
      Event: vims-failover
      Content-Type: application/vims-failover

      failed=<host:port>
      replacement=<host:port>
      module=<instance name>

  The peer reroutes its link to ``failed`` to ``replacement`` and answers 200; a body it
  cannot read gets 400 (counted, nothing changed).
* :class:`ReroutedEndpoint`: the module's link table in the transport: every datagram the
  module sends to a deactivated primary link goes to the replacement instead (requests,
  responses of server transactions created by the failed module, ACKs, retransmissions).
* :class:`FailoverLog`: timestamped events ("detection_triggered", "hop_failed",
  "failover_complete", ...) a run reads with ``get_failover_events()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.sip.headers import new_branch, new_call_id, new_tag
from actors.sip.message import SipMessage
from actors.sip.timers import Address

__all__ = [
    "ANNOUNCE_CONTENT_TYPE",
    "ANNOUNCE_EVENT",
    "Announcement",
    "FailoverLog",
    "FailoverTarget",
    "ReroutedEndpoint",
    "build_announcement",
    "format_address",
    "parse_address",
    "parse_announcement",
]

ANNOUNCE_EVENT = "vims-failover"
ANNOUNCE_CONTENT_TYPE = "application/vims-failover"


@dataclass(frozen=True)
class FailoverTarget:
    """A neighbour's preloaded configuration: enough to start a local instance of it."""

    name: str
    kind: str
    cls: type
    kwargs: Callable[[], dict[str, Any]]
    """Constructor keyword arguments, resolved at failover time."""
    announce_to: Callable[[], tuple[tuple[str, Address], ...]] = lambda: ()
    """(name, SIP address) of the backup peers around the failed module."""


@dataclass(frozen=True)
class Announcement:
    failed: Address
    replacement: Address
    module: str = ""


def format_address(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


def parse_address(text: str) -> Address:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {text!r}")
    return (host, int(port))


def build_announcement(sender: Address, peer: Address, announcement: Announcement) -> SipMessage:
    """The NOTIFY that tells ``peer`` the failed module is now served at the replacement."""
    host, port = sender
    body = (f"failed={format_address(announcement.failed)}\r\n"
            f"replacement={format_address(announcement.replacement)}\r\n"
            f"module={announcement.module}\r\n").encode()
    uri = f"sip:{format_address(peer)}"
    return SipMessage.request("NOTIFY", uri, [
        ("Via", f"SIP/2.0/UDP {host}:{port};branch={new_branch()};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:{host}:{port}>;tag={new_tag()}"),
        ("To", f"<{uri}>"),
        ("Call-ID", new_call_id(host)),
        ("CSeq", "1 NOTIFY"),
        ("Event", ANNOUNCE_EVENT),
        ("Subscription-State", "terminated;reason=noresource"),
        ("Content-Type", ANNOUNCE_CONTENT_TYPE),
    ], body)


def is_announcement(request: SipMessage) -> bool:
    return request.method == "NOTIFY" and (request.get("Event") or "").strip().lower() == ANNOUNCE_EVENT


def parse_announcement(request: SipMessage) -> Announcement:
    """Read a failover NOTIFY; ``ValueError`` naming what is wrong."""
    try:
        text = bytes(request.body or b"").decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("the announcement body is not ASCII") from None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip():
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"announcement line without '=': {line!r}")
            fields[key.strip()] = value.strip()
    for name in ("failed", "replacement"):
        if name not in fields:
            raise ValueError(f"announcement without {name}=")
    return Announcement(parse_address(fields["failed"]), parse_address(fields["replacement"]),
                        fields.get("module", ""))


class ReroutedEndpoint:
    """Wraps a module's UDP endpoint once a primary link was deactivated: ``send`` to a
    failed address goes to its replacement; everything else (attributes included, ``seam``
    set by a fault injector too) is the wrapped endpoint's."""

    __slots__ = ("_inner", "routes")

    def __init__(self, inner: Any, routes: Mapping[Address, Address]) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "routes", routes)

    @property
    def inner(self) -> Any:
        return self._inner

    def send(self, data: bytes, addr: Address) -> None:
        self._inner.send(data, self.routes.get(addr, addr))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)


@dataclass
class FailoverLog:
    """Timestamped failover events of one module. ``at`` is the module's clock (the loop's
    monotonic time, in emulated seconds); ``wall`` is ``time.time()``."""

    module: str
    events: list[dict[str, Any]] = field(default_factory=list)
    sink: Callable[..., Any] | None = None
    """Also called as ``sink(event, **fields)`` (the module's structlog ``info``)."""

    def record(self, event: str, at: float, **details: Any) -> dict[str, Any]:
        entry = {"event": event, "at": at, "wall": time.time(), "module": self.module, **details}
        self.events.append(entry)
        if self.sink is not None:
            self.sink(event, **{k: v for k, v in entry.items() if k != "event"})
        return entry

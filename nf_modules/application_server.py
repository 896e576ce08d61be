"""The Application Server's modules (paper ``004`` Fig. 1: Media Policy, Application Logic; the
S-CSCF-facing Incoming and Outgoing Leg Control), each an actor on its own UDP port.

On the call path they sit in this order, every arrow a SIP hop (all Record-Route, so in-dialog
requests cross them too)::

    S-CSCF Incoming Leg Control -> AsIncomingLegControl -> ApplicationLogic -> MediaPolicy
        -> AsOutgoingLegControl -> S-CSCF Outgoing Leg Control

* :class:`AsIncomingLegControl` / :class:`AsOutgoingLegControl`: where the AS's call legs begin
  and end; today they forward along the chain (``downstream``) like any ``ImsModule``.
* :class:`ApplicationLogic`: the service logic, here call barring: an initial INVITE from or to a
  barred user is answered 403 (see :class:`Barring`); the list is configured per run and can be
  changed while running (``set_barred``).
* :class:`MediaPolicy` (``media_policy.py``): anchors the call's media at the MRF.

All hooks run on the module's actor loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from actors.sip.headers import SipParseError, new_tag, parse_name_addr, parse_uri
from actors.sip.message import SipMessage
from actors.sip.transaction import Transaction
from actors.sip_actor import Address
from nf_modules.ims_module import ImsModule
from nf_modules.media_policy import MediaPolicy

__all__ = ["AsIncomingLegControl", "AsOutgoingLegControl", "ApplicationLogic", "Barring", "MediaPolicy"]


class AsIncomingLegControl(ImsModule):
    """The AS's Incoming Leg Control (``kind = "as.incoming_leg_control"``): the leg from the S-CSCF."""

    kind: ClassVar[str] = "as.incoming_leg_control"


class AsOutgoingLegControl(ImsModule):
    """The AS's Outgoing Leg Control (``kind = "as.outgoing_leg_control"``): the leg back to the S-CSCF."""

    kind: ClassVar[str] = "as.outgoing_leg_control"


class Barring:
    """A barring list. Entries: ``user`` (any domain), ``user@host`` or a ``sip:`` URI.

    :meth:`check` names the barred party of a request (``"caller"``: P-Asserted-Identity, else
    From; ``"callee"``: Request-URI or To), or ``None``. Users are compared exactly, hosts
    case-insensitively. ``ValueError`` for an entry that is not a user.
    """

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self._users: set[str] = set()
        self._addresses: set[tuple[str, str]] = set()
        self.entries: list[str] = []
        for entry in entries:
            self.add(entry)

    def add(self, entry: str) -> None:
        if not isinstance(entry, str) or not entry.strip():
            raise ValueError(f"a barring entry is a user name, user@host or a SIP URI, got {entry!r}")
        text = entry.strip()
        if text.lower().startswith(("sip:", "sips:", "tel:")) or "<" in text:
            try:
                uri = parse_name_addr(text).uri if "<" in text else parse_uri(text)
            except SipParseError as error:
                raise ValueError(f"bad barring entry {entry!r}: {error}") from None
            if not uri.user:
                raise ValueError(f"barring entry {entry!r} names no user")
            user, host = uri.user, uri.host
        else:
            user, _, host = text.partition("@")
            if not user or any(c in user for c in " \t;<>:"):
                raise ValueError(f"bad barring entry {entry!r}")
        if host:
            self._addresses.add((user, host.lower()))
        else:
            self._users.add(user)
        self.entries.append(entry)

    def __len__(self) -> int:
        return len(self._users) + len(self._addresses)

    def is_barred(self, user: str | None, host: str | None) -> bool:
        if not user:
            return False
        return user in self._users or (user, (host or "").lower()) in self._addresses

    def check(self, request: SipMessage) -> str | None:
        if not self:
            return None
        caller = request.get("P-Asserted-Identity") or request.get("From")
        if self._barred_value(caller, name_addr=True):
            return "caller"
        if self._barred_value(request.uri, name_addr=False) or self._barred_value(request.get("To"), name_addr=True):
            return "callee"
        return None

    def _barred_value(self, value: str | None, *, name_addr: bool) -> bool:
        if not value:
            return False
        try:
            if name_addr:
                first = value.split(",", 1)[0] if value.lstrip().startswith("<") else value
                uri = parse_name_addr(first).uri
            else:
                uri = parse_uri(value)
        except SipParseError:
            return False
        return self.is_barred(uri.user, uri.host)


class ApplicationLogic(ImsModule):
    """The AS's Application Logic (``kind = "as.application_logic"``): call barring.

    ``barred``: the barring list of this run (see :class:`Barring`). An initial INVITE from or to
    a barred user gets 403 Forbidden (with a Warning naming the side); everything else goes on.
    """

    kind: ClassVar[str] = "as.application_logic"

    def __init__(
        self, name: str, bind: Address = ("127.0.0.1", 0), *, barred: Iterable[str] = (), **kwargs: Any
    ) -> None:
        super().__init__(name, bind, **kwargs)
        self.barring = Barring(barred)

    def set_barred(self, entries: Iterable[str]) -> None:
        """Replace the barring list (``ValueError`` for a bad entry; the old list then stays)."""
        self.barring = Barring(entries)

    def get_barred(self) -> list[str]:
        return list(self.barring.entries)

    def on_request(self, request: SipMessage, transaction: Transaction, source: Address) -> Any:
        if request.method == "INVITE" and request.to_tag is None:
            party = self.barring.check(request)
            if party is not None:
                self.stats[f"barred_{party}"] += 1
                response = request.make_response(403, to_tag=new_tag())
                response.set("Warning", f'399 application-logic "the {party} is barred"')
                self.send_response(transaction, response)
                return None
        return super().on_request(request, transaction, source)

"""The requester's checkpoint table (paper ``004`` VI-B, VII-B: "a hash table to store/retrieve
user's session information").

Requester and responder talk in a feedback loop of request and response, so the requester
knows the responder's session state from each reply. Per call (Call-ID) the table keeps:

* the requests forwarded since the last reply, each with the hop it went to (the messages to
  replay after a failover: everything after the last checkpoint);
* what the replies taught: the last status per method, the callee's To tag, the Record-Route
  set and the Contact of the last reply that carried them.

A call leaves the table when its INVITE fails (300-699) or its BYE is answered; a Call-ID
without an INVITE (REGISTER, OPTIONS...) leaves it with its final response; the table is
bounded (oldest calls dropped first). Sans-IO: ``now`` is passed in. Used on one actor's loop.

Cost on the hot path (every forwarded request and every reply, on every hop): a request is
kept as the message object it was sent as (encoded only if it is replayed). A reply given to
:meth:`CheckpointTable.replied_with` is read (To tag, Record-Route, Contact) only when the
table holds its request and the call goes on: the replies to requests the module does not
supervise, and those that end their call (the BYE's 200), are never read. (The replies are
read at once rather than kept for later: a call whose end this module never sees stays in
the table until evicted, and it should not keep whole messages alive meanwhile.)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from actors.sip.timers import Address

__all__ = ["CallCheckpoint", "CheckpointTable", "PendingRequest"]


@dataclass(slots=True)
class PendingRequest:
    """A request forwarded and not yet answered: ``key`` (the client transaction), ``method``,
    the bytes sent, the hop it went to, when."""

    key: Hashable
    method: str
    data: bytes | Any
    next_hop: Address
    sent_at: float


@dataclass(slots=True)
class CallCheckpoint:
    """What the requester knows about one call."""

    call_id: str
    pending: dict[Hashable, PendingRequest] = field(default_factory=dict)
    last_status: dict[str, int] = field(default_factory=dict)
    to_tag: str | None = None
    record_route: list[str] = field(default_factory=list)
    contact: str | None = None
    updated_at: float = 0.0

    def learn(self, to_tag: str | None, record_route: list[str] | None, contact: str | None) -> None:
        """What a reply carried replaces what an earlier one said (absent: kept)."""
        if to_tag:
            self.to_tag = to_tag
        if record_route:
            self.record_route = list(record_route)
        if contact:
            self.contact = contact

    def as_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "pending": [(p.method, list(p.next_hop)) for p in self.pending.values()],
            "last_status": dict(self.last_status),
            "to_tag": self.to_tag,
            "record_route": list(self.record_route),
            "contact": self.contact,
            "updated_at": self.updated_at,
        }


class CheckpointTable:
    """``CheckpointTable(*, max_calls=100_000)``: checkpoints by Call-ID."""

    def __init__(self, *, max_calls: int = 100_000) -> None:
        if max_calls < 1:
            raise ValueError(f"max_calls must be at least 1, got {max_calls!r}")
        self.max_calls = max_calls
        self._calls: dict[str, CallCheckpoint] = {}
        self._by_key: dict[Hashable, str] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def get(self, call_id: str) -> CallCheckpoint | None:
        return self._calls.get(call_id)

    def sent(self, call_id: str, key: Hashable, method: str, data: Any, next_hop: Address,
             now: float) -> None:
        """A request of ``call_id`` was forwarded to ``next_hop`` under ``key``."""
        if not call_id:
            return
        call = self._calls.get(call_id)
        if call is None:
            if len(self._calls) >= self.max_calls:
                self._evict()
            call = self._calls[call_id] = CallCheckpoint(call_id, updated_at=now)
        call.pending[key] = PendingRequest(key, method, data, next_hop, now)
        self._by_key[key] = call_id

    def replied(self, key: Hashable, status: int, now: float, *, to_tag: str | None = None,
                record_route: list[str] | None = None, contact: str | None = None) -> None:
        """A response to the request ``key``: checkpoint what it says."""
        call = self._call_of(key)
        if call is None:
            return
        call.learn(to_tag, record_route, contact)
        self._settle(call, key, status, now)

    def replied_with(self, key: Hashable, response: Any, now: float) -> None:
        """A response (a ``SipMessage``) to the request ``key``: the same as ``replied(key,
        response.status, now, to_tag=response.to_tag, record_route=response.get_all(
        "Record-Route"), contact=response.get("Contact"))``, except that a reply to a request
        the table does not hold, or one that ends its call, is not read at all."""
        call = self._call_of(key)
        if call is None:
            return
        if self._settle(call, key, response.status or 0, now):
            call.learn(response.to_tag, response.get_all("Record-Route"), response.get("Contact"))

    def _call_of(self, key: Hashable) -> CallCheckpoint | None:
        call_id = self._by_key.get(key)
        return self._calls.get(call_id) if call_id is not None else None

    def _settle(self, call: CallCheckpoint, key: Hashable, status: int, now: float) -> bool:
        """The status part of a reply to ``key``; False when it ended the call (removed)."""
        pending = call.pending.get(key)
        if status >= 200:
            call.pending.pop(key, None)
            self._by_key.pop(key, None)
        method = pending.method if pending is not None else "?"
        call.last_status[method] = status
        call.updated_at = now
        if (method == "INVITE" and status >= 300) or (method == "BYE" and status >= 200):
            self._remove(call)
            return False
        if status >= 200 and not call.pending and "INVITE" not in call.last_status:
            self._remove(call)  # REGISTER, OPTIONS...: a transaction, no session to resume
            return False
        return True

    def forget(self, key: Hashable) -> None:
        """The request ``key`` is over (its transaction ended): it is no longer pending."""
        call_id = self._by_key.pop(key, None)
        call = self._calls.get(call_id) if call_id is not None else None
        if call is not None:
            call.pending.pop(key, None)

    def replay_set(self, next_hop: Address, answered: Callable[[Hashable], bool]) -> list[PendingRequest]:
        """The requests to replay after ``next_hop`` failed: those sent to it that it never
        answered (``answered(key)`` False), oldest first."""
        out = [p for call in self._calls.values() for p in call.pending.values()
               if p.next_hop == next_hop and not answered(p.key)]
        out.sort(key=lambda p: p.sent_at)
        return out

    def calls_via(self, next_hop: Address) -> list[str]:
        """Call-IDs with a request pending at ``next_hop``."""
        return [c.call_id for c in self._calls.values()
                if any(p.next_hop == next_hop for p in c.pending.values())]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {call_id: call.as_dict() for call_id, call in self._calls.items()}

    def _remove(self, call: CallCheckpoint) -> None:
        self._calls.pop(call.call_id, None)
        for key in call.pending:
            self._by_key.pop(key, None)

    def _evict(self) -> None:
        oldest = next(iter(self._calls.values()))
        self._remove(oldest)

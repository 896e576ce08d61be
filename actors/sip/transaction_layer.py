"""The transaction layer: one object an actor feeds every SIP message and timer to.

``TransactionLayer`` owns the client and server transactions of one SIP endpoint, matches
incoming messages to them (RFC 3261 17.1.3 and 17.2.3), creates server transactions for new
requests, and keeps one earliest deadline across all of them (a heap, so an actor with thousands
of transactions in flight re-arms a single ``loop.call_at``). Terminated transactions are removed
as soon as they terminate.

Its transactions share its outbox and its event list, so ``layer.datagrams_to_send()`` and
``layer.events()`` return everything in the order it happened, including what the TU caused by
calling a transaction directly (``server_tx.send_response(...)``). Do not drain an attached
transaction's own ``datagrams_to_send()``/``events()``: they are the layer's lists.

Events (see :mod:`actors.sip.transaction`): ``RequestReceived`` for a request that started a
server transaction (retransmissions are absorbed), ``ResponseReceived``, ``TimedOut``,
``AckReceived`` (an ACK for a 2xx: ``transaction`` is the INVITE server transaction in Accepted
it matched, or ``None`` when it matched none, the usual case since a 2xx ACK has a branch of its
own), ``StrayResponse`` (matched no client transaction), ``TransportFailed``,
``TransactionTerminated``.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING, Any, Iterator

from actors.sip.timers import Address, Datagram, SipTimers
from actors.sip.transaction import (
    AckReceived,
    RequestReceived,
    StrayResponse,
    Transaction,
    TransactionEvent,
    _METHODS,
    client_key,
    server_key,
)
from actors.sip.transaction_client import (
    ClientTransaction,
    InviteClientTransaction,
    NonInviteClientTransaction,
)
from actors.sip.transaction_server import (
    DEFAULT_TRYING_DELAY,
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
)

if TYPE_CHECKING:  # pragma: no cover
    from actors.sip.message import SipMessage

__all__ = ["TransactionLayer"]

_heappush = heapq.heappush
_heappop = heapq.heappop


class TransactionLayer:
    """``TransactionLayer(*, timers=SipTimers(), trying_delay=0.2)``.

    - :meth:`send_request` starts a client transaction (INVITE or non-INVITE; ACK is not a
      transaction: use :meth:`send_stateless`).
    - :meth:`receive` takes every parsed message from the network with its source address.
    - :meth:`handle_timer`, :meth:`get_timer`, :meth:`datagrams_to_send`, :meth:`events`: the
      sans-IO surface, as on each transaction.
    """

    def __init__(self, *, timers: SipTimers = SipTimers(),
                 trying_delay: float | None = DEFAULT_TRYING_DELAY) -> None:
        self.timers = timers
        self.trying_delay = trying_delay
        self._clients: dict[Any, ClientTransaction] = {}
        self._servers: dict[Any, ServerTransaction] = {}
        self._outbox: list[Datagram] = []
        self._events: list[TransactionEvent] = []
        # Earliest deadline across the transactions: a min-heap of (deadline, seq, tx) with lazy
        # deletion, one live entry per transaction. Like DeadlineQueue, but the deadline a
        # transaction is queued for is kept on the transaction itself (``tx._queued``) rather
        # than in an owner -> deadline dict; an entry that does not match it is stale.
        self._heap: list[tuple[float, int, Transaction]] = []
        self._seq = itertools.count()
        # one bound method shared by every transaction (not one allocated per transaction)
        self._on_change = self._transaction_changed

    # -- TU side ---------------------------------------------------------------------------

    def send_request(self, request: "SipMessage", destination: Address,
                     now: float) -> ClientTransaction:
        """Start a client transaction for ``request`` (which carries its own top Via branch)."""
        method = request.method
        method = _METHODS.get(method) or method.upper()
        if method == "ACK":
            raise ValueError("ACK is not sent in a transaction: use send_stateless()")
        key = client_key(request)
        if key is not None and key in self._clients:
            raise ValueError(f"a client transaction with branch {key[0]!r} and method "
                             f"{key[1]} is already running")
        tx: ClientTransaction
        if method == "INVITE":
            tx = InviteClientTransaction(request, destination, now, timers=self.timers, key=key)
        else:
            tx = NonInviteClientTransaction(request, destination, now, timers=self.timers,
                                            key=key)
        self._clients[tx.key] = tx
        self._adopt(tx)
        return tx

    def send_stateless(self, message: "SipMessage | bytes", destination: Address) -> None:
        """Queue a message outside any transaction (the ACK for a 2xx, a stateless forward)."""
        data = message if isinstance(message, bytes) else bytes(message)
        self._outbox.append((data, destination))

    # -- network side ----------------------------------------------------------------------

    def receive(self, message: "SipMessage", source: Address, now: float) -> None:
        """Feed one parsed message that arrived from ``source``."""
        if message.method is None:  # a response (``is_request``, minus a property call)
            key = client_key(message)
            client = self._clients.get(key) if key is not None else None
            if client is None:
                self._events.append(StrayResponse(message, source))
            else:
                client._receive_matched(message, now)  # matched by its key just now
            return
        skey = server_key(message)
        server = self._servers.get(skey)
        if server is not None:
            server._receive_matched(message, now)  # matched by its key just now
            return
        method = message.method
        method = _METHODS.get(method) or method.upper()  # no upper-cased copy for the usual
        if method == "ACK":
            self._events.append(AckReceived(message, None, source))
            return
        tx: ServerTransaction
        if method == "INVITE":
            tx = InviteServerTransaction(message, source, now, timers=self.timers,
                                         trying_delay=self.trying_delay, key=skey)
        else:
            tx = NonInviteServerTransaction(message, source, now, timers=self.timers, key=skey)
        self._events.append(RequestReceived(message, tx, source))
        self._servers[tx.key] = tx
        self._adopt(tx)

    # -- sans-IO surface -------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest deadline across all live transactions."""
        heap = self._heap
        while heap:
            deadline, _, tx = heap[0]
            if tx._queued == deadline:
                return deadline
            _heappop(heap)  # stale: the transaction moved its deadline or ended
        return None

    def handle_timer(self, now: float) -> None:
        """Fire the timers of every transaction due at or before ``now``."""
        heap = self._heap
        due: list[Transaction] = []
        while heap and heap[0][0] <= now:
            deadline, _, tx = _heappop(heap)
            if tx._queued == deadline:  # else a stale entry: skip it
                tx._queued = None
                due.append(tx)
        # collected first, fired earliest first: what a timer does cannot make a deadline due
        # in this very call (retransmissions are rescheduled from now)
        for tx in due:
            tx.handle_timer(now)

    def datagrams_to_send(self) -> list[Datagram]:
        outbox = self._outbox
        if not outbox:  # the usual case between messages
            return []
        out = outbox[:]  # the transactions hold this very list: empty it in place
        outbox.clear()
        return out

    def events(self) -> list[TransactionEvent]:
        events = self._events
        if not events:
            return []
        out = events[:]
        events.clear()
        return out

    # -- lookups ---------------------------------------------------------------------------

    def find_client(self, response: "SipMessage") -> ClientTransaction | None:
        key = client_key(response)
        return self._clients.get(key) if key is not None else None

    def find_server(self, request: "SipMessage") -> ServerTransaction | None:
        return self._servers.get(server_key(request))

    def find_invite_for_cancel(self, cancel: "SipMessage") -> InviteServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (same branch and sent-by)."""
        key = server_key(cancel)
        tx = self._servers.get(key[:-1] + ("INVITE",))
        return tx if isinstance(tx, InviteServerTransaction) else None

    def client_transactions(self) -> Iterator[ClientTransaction]:
        return iter(list(self._clients.values()))

    def server_transactions(self) -> Iterator[ServerTransaction]:
        return iter(list(self._servers.values()))

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)

    # -- machinery -------------------------------------------------------------------------

    def _adopt(self, tx: Transaction) -> None:
        tx._attach(self._outbox, self._events, self._on_change)
        self._transaction_changed(tx)

    def _transaction_changed(self, tx: Transaction) -> None:
        """A transaction's state or timers changed: requeue its deadline, drop it if it ended."""
        if tx.state is tx._TERMINATED:
            tx._queued = None
            table: dict[Any, Any] = self._clients if tx._IS_CLIENT else self._servers
            if table.get(tx.key) is tx:
                del table[tx.key]
            return
        deadlines = tx._deadlines
        if not deadlines:
            tx._queued = None
            return
        deadline = min(deadlines.values())
        if deadline != tx._queued:  # an unchanged deadline is not pushed again
            tx._queued = deadline
            _heappush(self._heap, (deadline, next(self._seq), tx))

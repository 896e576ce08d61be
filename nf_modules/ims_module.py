"""``ImsModule``: the base of every IMS module that sits on the SIP call path.

Each module is a transaction-stateful proxy on its own UDP port (see
``StatefulProxy``) that Record-Routes, so in-dialog requests (ACK, BYE,
re-INVITE, UPDATE) cross the same modules as the INVITE. Initial requests
(no To tag) go to ``downstream``, the next module on the call path of
DESIGN.md; in-dialog requests follow their Route headers, then the
Request-URI. Subclasses override ``route_initial`` where a module decides
differently (the P-CSCF towards a UE, the S-CSCF Outgoing Leg Control to the
callee's registered contact).

Fault tolerance (paper ``004`` VI-B; ``mode="refactored"``, the default): every request the
module sends to a supervised neighbour (``forward`` and a B2BUA's own ``send_request``) is
watched by a :class:`~nf_modules.hop_supervisor.HopSupervisor` (Fig. 8: Timer A, fast retry,
Timer B) and checkpointed by Call-ID (:class:`~nf_modules.checkpoint.CheckpointTable`). When a
hop is declared failed and the module holds that neighbour's preloaded configuration
(``failover_targets``), it runs Algorithm 2's ``Failover()``: deactivates the primary link,
starts a local instance of the failed module (its class and constructor arguments, on an
ephemeral local port, answering for the failed address too), announces the failure over the
backup links (SIP NOTIFY, ``failover.py``), and replays the unanswered requests from the
checkpoints. A neighbour that receives the announcement reroutes its link the same way and
replays its own unanswered requests. Events: ``get_failover_events()``. In ``mode="baseline"``
none of this runs.

Only the dead hop is declared failed. A module waiting on a dead hop further on is alive, and
says so: (a) the module notes when it last received anything from each address (the endpoint's
callback, ``_datagram_received``) and its supervisor counts any datagram from a hop after a
request went there as that hop's answer; (b) when the module's own detector enters fast retry
for a request it forwarded on behalf of an upstream module, it answers that upstream's
non-INVITE server transaction with 100 Trying at once (an INVITE's was answered on arrival).
This deliberately precedes RFC 4320's rule (no 100 to a non-INVITE over UDP before the client's
Timer E reaches T2, 4 s): the paper's detector needs a real message from a live hop within
Timer A + Timer B (2 s), and a BYE the upstream keeps retrying to a silent hop would otherwise
make it declare the live module failed. The upstream's detector reads the 100 as any response.

The local replacements a module started are its resources: they stop with it (``_close`` tells
them to stop and ``on_stop`` waits for their termination), so none outlives the
module or the run. A module killed by a crash fault (no ``on_stop``) declares nothing any more.

A replacement takes over the failed module's identity on the wire: its Via carries the failed
module's address (``identity``) and the branch of every forwarded request is derived from the
branch it arrived with (RFC 3261 16.11 lets a proxy compute it deterministically). A request the
failed module had already forwarded before it died, whose response was lost with it, is replayed
by the upstream module; the replacement forwards it with the very same Via, so the downstream
module's server transaction takes it as a retransmission and repeats its response (a BYE is not
executed twice, and its 200 comes back instead of a 481).

Loop detection (RFC 3261 16.3 step 4): our Via branch carries a hash of the
request's routing state, so a request coming back to us with the same
routing state is a loop (482), while a legitimate spiral (the same module
visited again with a different Request-URI or Route set, as the P-CSCF is
on the originating and the terminating side) passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from hashlib import blake2s as _blake2s
from typing import Any, ClassVar

from actors.future import as_asyncio_future
from actors.sip.failure_detector import Failover, FailureDetectorConfig, HopFailed
from actors.sip.headers import MAGIC_COOKIE, new_branch, parse_via
from actors.sip.message import SipMessage
from actors.sip.transaction import Transaction
from actors.sip.transaction_client import InviteClientState, NonInviteClientState
from actors.sip.transaction_server import NonInviteServerState
from actors.sip_actor import Address
from actors.topology import MODES
from nf_modules.checkpoint import CheckpointTable
from nf_modules.failover import (
    Announcement,
    FailoverLog,
    FailoverTarget,
    ReroutedEndpoint,
    build_announcement,
    format_address,
    is_announcement,
    parse_announcement,
)
from nf_modules.hop_supervisor import HopSupervisor
from nf_modules.sip_proxy import StatefulProxy, top_route, uri_address

__all__ = ["ALLOW", "ImsModule"]

_WAITING = (InviteClientState.CALLING, NonInviteClientState.TRYING)
_UNSUPERVISED = frozenset({"ACK", "CANCEL"})

#: How long (real seconds) a stopping module waits for the local replacements it started.
REPLACEMENT_STOP_TIMEOUT = 5.0

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, REGISTER, INFO, PRACK, MESSAGE"


class ImsModule(StatefulProxy):
    """A Record-Routing IMS module that forwards initial requests to ``downstream``."""

    kind: ClassVar[str] = "ims"
    """The topology kind this class implements (``"pcscf"``, ``"scscf.session_controller"``...)."""

    def __init__(
        self,
        name: str,
        bind: Address = ("127.0.0.1", 0),
        *,
        downstream: Address | None = None,
        domain: str = "ims.example",
        mode: str = "refactored",
        timer_a: float = 1.0,
        fast_retry_interval: float = 0.2,
        timer_b: float = 1.0,
        supervised_hops: Collection[Address] | None = None,
        failover_targets: Mapping[Address, FailoverTarget] | None = None,
        hop_names: Mapping[Address, str] | None = None,
        announce_timeout: float = 0.5,
        identity: Address | None = None,
        **kwargs: Any,
    ) -> None:
        """``mode``: ``"refactored"`` (supervisors and failover) or ``"baseline"`` (neither).
        ``timer_a`` / ``fast_retry_interval`` / ``timer_b``: the Fig. 8 detector (seconds).
        ``supervised_hops``: the neighbour modules whose requests are supervised (``None``:
        every destination). ``failover_targets``: failed address -> the neighbour's preloaded
        configuration. ``hop_names``: address -> instance name, for the event log.
        ``identity``: the address our Via carries (``None``: our own); a local replacement
        carries the failed module's."""
        super().__init__(name, bind, **kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.downstream = downstream
        self.domain = domain
        self.mode = mode
        self.detector_config = FailureDetectorConfig(timer_a, fast_retry_interval, timer_b)
        if not announce_timeout > 0:
            raise ValueError(f"announce_timeout must be positive, got {announce_timeout!r}")
        self.announce_timeout = float(announce_timeout)
        self.supervised_hops: set[Address] | None = (
            None if supervised_hops is None else {tuple(a) for a in supervised_hops}  # type: ignore[misc]
        )
        self.failover_targets: dict[Address, FailoverTarget] = {
            tuple(a): t for a, t in (failover_targets or {}).items()  # type: ignore[misc]
        }
        self.hop_names: dict[Address, str] = {tuple(a): n for a, n in (hop_names or {}).items()}  # type: ignore[misc]
        self.identity: Address | None = tuple(identity) if identity is not None else None  # type: ignore[assignment]
        self._identities: dict[Address, Address] = {}
        """Replacement address -> the identity of the module it replaces (chained failovers)."""
        self.checkpoints = CheckpointTable()
        self.failover_log = FailoverLog(name)
        self.supervisor: HopSupervisor | None = None
        self.routes: dict[Address, Address] = {}
        """Deactivated primary links: failed address -> replacement address."""
        self._replacements: list[Any] = []
        self._waiters: dict[Transaction, asyncio.Future[int]] = {}
        self._failing_over: set[Address] = set()
        self._failover_tasks: set[asyncio.Task[Any]] = set()
        self._heard: dict[Address, float] | None = None
        """Refactored mode: source address -> when a datagram from it last arrived (the loop's
        time, read by the supervisor in clock time through ``_heard_at``)."""
        self._loop_time: Any = None
        self._via_cache: tuple[Address, str, str, str] | None = None
        """(the address our Via carries, its sent-by ``host:port``, the same as found in a Via
        line `` host:port;``, our Via up to the branch value); see ``_via_strings``."""

    # -- lifecycle -------------------------------------------------------------------

    async def on_start(self) -> None:
        await super().on_start()
        self.failover_log.sink = self.log.info
        if self.mode == "refactored":
            self._heard = {}
            self._loop_time = self.loop.time
            self.supervisor = HopSupervisor(
                self.clock, self._send_raw, self._on_supervisor_events,  # type: ignore[arg-type]
                config=self.detector_config, answered=_answered,
                retransmission_due=_retransmission_due, heard=self._heard_at,
                on_fast_retry=self._tell_upstream_alive,
            )

    def _datagram_received(self, data: bytes, source: Address) -> None:
        """The endpoint's callback, on the actor's loop: note that ``source`` is alive (the
        supervisor's last-heard table), then handle the datagram as SIP."""
        heard = self._heard
        if heard is not None:
            # The loop's raw time (one C call on every datagram); converted to clock time only
            # when the supervisor asks (``_heard_at``), which is rare.
            heard[source] = self._loop_time()
        super()._datagram_received(data, source)

    def _heard_at(self, address: Address) -> float | None:
        """When a datagram from ``address`` last arrived, in clock time (``None``: never)."""
        at = self._heard.get(address)  # type: ignore[union-attr]
        return None if at is None else self.clock.from_loop_time(at)  # type: ignore[union-attr]

    async def on_stop(self) -> None:
        """On the actor's loop: ``SipActor.on_stop`` (-> ``_close`` tells the local replacements
        to stop), then wait for their termination, so whoever awaits this module's termination
        (``ImsDeployment.stop``) finds their sockets closed."""
        super().on_stop()
        pending = [as_asyncio_future(actor.actor_terminated) for ref in self._replacements
                   if (actor := ref._actor_weakref()) is not None  # noqa: SLF001
                   and not actor.actor_terminated.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=REPLACEMENT_STOP_TIMEOUT)
            if late:
                self.log.warning("replacements_still_running", count=len(late))

    def _close(self) -> None:
        if self.supervisor is not None:
            self.supervisor.close()
        for ref in self._replacements:
            try:
                ref.stop(block=False)
            except Exception:  # noqa: BLE001  (already stopped)
                pass
        for waiter in self._waiters.values():
            waiter.cancel()
        for task in self._failover_tasks:
            task.cancel()
        super()._close()

    # -- supervised sending (refactored mode) ---------------------------------------------

    def send_request(self, request: SipMessage, destination: Address) -> Transaction:
        """Every request this module originates or forwards leaves here: a deactivated link is
        followed to its replacement, and a request to a supervised neighbour is watched."""
        routes = self.routes
        if routes:
            destination = routes.get(destination, destination)
        transaction = super().send_request(request, destination)
        supervisor = self.supervisor
        if supervisor is not None and request.method not in _UNSUPERVISED and (
            self.supervised_hops is None or destination in self.supervised_hops
        ):
            supervisor.watch(transaction, request, destination)
            self.checkpoints.sent(request.call_id or "", transaction, request.method, request,
                                  destination, self.now)
        return transaction

    def on_response(self, response: SipMessage, transaction: Transaction) -> Any:
        if self._waiters and (response.status or 0) >= 200:
            waiter = self._waiters.pop(transaction, None)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(response.status or 0)
                return None
        if self.supervisor is not None and response.status != 100:  # a 100 is hop-by-hop: no session state
            self.checkpoints.replied_with(transaction, response, self.now)
        return super().on_response(response, transaction)

    def on_timeout(self, transaction: Transaction, timer: str) -> Any:
        waiter = self._waiters.pop(transaction, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(408)
            return None
        return super().on_timeout(transaction, timer)

    def on_transaction_terminated(self, transaction: Transaction) -> Any:
        if self.supervisor is not None:
            self.checkpoints.forget(transaction)
        return super().on_transaction_terminated(transaction)

    def _send_raw(self, data: bytes, destination: Address) -> None:
        self.stats["tx_fast_retry"] += 1
        self.endpoint.send(data, destination)  # type: ignore[union-attr]

    def _tell_upstream_alive(self, transaction: Transaction) -> None:
        """Called by the supervisor (on the loop) when the request of ``transaction`` enters fast
        retry: if we forwarded it for an upstream module whose non-INVITE server transaction has
        had no response yet, answer it 100 Trying now, so its detector sees this module alive
        (see the module docstring for why this precedes RFC 4320's T2)."""
        server = self._upstream.get(transaction)
        if server is None or server.state is not NonInviteServerState.TRYING:
            return
        if self.supervised_hops is not None and server.destination not in self.supervised_hops:
            return  # a UE upstream: it supervises nothing, and a stray 100 could confuse it
        try:
            self.send_response(server, server.request.make_response(100))  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001  (answered or ended meanwhile: nothing to tell)
            return
        self.stats["tx_alive_trying"] += 1

    # -- detection -> failover -----------------------------------------------------------------

    def _hop_name(self, address: Address) -> str:
        return self.hop_names.get(address) or format_address(address)

    def _on_supervisor_events(self, events: list[Failover | HopFailed]) -> None:
        """Called on the loop by the supervisor: a hop was declared failed (Timer B)."""
        if self.actor_stopped.is_set():
            # Killed (a crash fault cancels the actor's task: no on_stop, but the supervisor's
            # timer is a loop callback): a dead module must not declare its neighbours failed
            # because their answers can no longer reach its closed socket.
            self.supervisor.close()  # type: ignore[union-attr]
            return
        triggered: dict[Address, float] = {}
        for event in events:
            if isinstance(event, Failover) and event.forwarded_at is not None:
                hop = event.next_hop
                triggered[hop] = min(triggered.get(hop, event.forwarded_at), event.forwarded_at)
        for event in events:
            if not isinstance(event, HopFailed):
                continue
            hop = event.next_hop
            name = self._hop_name(hop)
            self.stats["hops_failed"] += 1
            self.failover_log.record("detection_triggered", triggered.get(hop, event.at),
                                     failed=name, failed_address=list(hop))
            self.failover_log.record("hop_failed", event.at, failed=name, failed_address=list(hop))
            target = self.failover_targets.get(hop)
            if hop in self.routes:
                self._replay(hop)  # already replaced (announced): send the late ones there
            elif target is not None and hop not in self._failing_over:
                self._failing_over.add(hop)
                self._run_task(self._fail_over(hop, target))

    def _run_task(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._failover_tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._failover_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats["failover_errors"] += 1
            self.log.error("failover_failed", error=repr(task.exception()), exc_info=task.exception())

    async def _fail_over(self, hop: Address, target: FailoverTarget) -> None:
        """Algorithm 2 ``Failover()`` for the failed neighbour at ``hop``."""
        started = self.now
        kwargs = dict(target.kwargs())
        if isinstance(target.cls, type) and issubclass(target.cls, StatefulProxy):
            # it answers for the failed address, and for those the failed one had replaced
            stood_in = tuple(old for old, new in self.routes.items() if new == hop)
            kwargs["aliases"] = (*kwargs.get("aliases", ()), hop, *stood_in)
        identity = self._identities.get(hop, hop)
        if isinstance(target.cls, type) and issubclass(target.cls, ImsModule):
            kwargs["identity"] = identity  # its Via is the failed module's (see the module docstring)
        ref = target.cls.start(f"{target.name}.local@{self.name}", (self.address[0], 0), **kwargs)
        self._replacements.append(ref)
        replacement = tuple(await ref.proxy().get_address())
        self.failover_log.record("replacement_started", self.now, failed=target.name,
                                 replacement=list(replacement), started_in=self.now - started)
        self._reroute(hop, replacement, target.name)  # type: ignore[arg-type]
        self.failover_targets[replacement] = target  # type: ignore[index]  (should it fail too)
        self._identities[replacement] = identity  # type: ignore[index]
        peers = target.announce_to()
        acks = await self._announce(Announcement(hop, replacement, target.name), peers)  # type: ignore[arg-type]
        replayed = self._replay(hop)
        self.failover_log.record(
            "failover_complete", self.now, failed=target.name, failed_address=list(hop),
            replacement=list(replacement), announced={n: s for n, s in acks.items()},
            replayed=replayed,
        )

    def _reroute(self, hop: Address, replacement: Address, name: str = "") -> None:
        """Deactivate the primary link to ``hop``: from now on it leads to ``replacement``."""
        self.routes[hop] = replacement
        if name:
            self.hop_names[replacement] = name  # the same module, at its new address
        for old, new in list(self.routes.items()):
            if new == hop:
                self.routes[old] = replacement
        if not isinstance(self.endpoint, ReroutedEndpoint):
            self.endpoint = ReroutedEndpoint(self.endpoint, self.routes)  # type: ignore[assignment]
        if self.downstream == hop:
            self.downstream = replacement
        if self.supervised_hops is not None:
            self.supervised_hops.add(replacement)

    async def _announce(self, announcement: Announcement,
                        peers: tuple[tuple[str, Address], ...]) -> dict[str, int]:
        """NOTIFY each backup peer; wait for their answers (at most ``announce_timeout``)."""
        waiters: dict[str, asyncio.Future[int]] = {}
        for name, peer in peers:
            notify = build_announcement(self.address, peer, announcement)
            transaction = super().send_request(notify, tuple(peer))  # type: ignore[arg-type]
            waiters[name] = self._waiters[transaction] = self.loop.create_future()
        if waiters:
            scale = self.clock.time_scale  # type: ignore[union-attr]
            await asyncio.wait(list(waiters.values()), timeout=self.announce_timeout / scale)
        return {name: (w.result() if w.done() and not w.cancelled() else 0) for name, w in waiters.items()}

    def _replay(self, hop: Address) -> int:
        """Send the requests ``hop`` never answered again, to its replacement (same bytes,
        same branch: the client transactions that wait for them get the answers)."""
        leads_there = self.routes.get(hop)
        pending = [p for old in {hop, *(a for a, r in self.routes.items() if leads_there and r == leads_there)}
                   for p in self.checkpoints.replay_set(old, _answered)]
        for request in pending:
            self.endpoint.send(bytes(request.data), hop)  # type: ignore[union-attr]
        self.stats["replayed"] += len(pending)
        return len(pending)

    def _on_announcement(self, request: SipMessage, transaction: Transaction) -> None:
        """A neighbour took over for a failed module: reroute our link to it, replay."""
        try:
            announcement = parse_announcement(request)
        except ValueError as error:
            self.stats["bad_announcement"] += 1
            self.log.info("failover_announcement_rejected", error=str(error))
            self.send_response(transaction, request.make_response(400))
            return
        hop = announcement.failed
        self._reroute(hop, announcement.replacement, announcement.module)
        self.send_response(transaction, request.make_response(200))
        replayed = self._replay(hop)
        self.failover_log.record(
            "failover_announced", self.now, failed=announcement.module or self._hop_name(hop),
            failed_address=list(hop), replacement=list(announcement.replacement), replayed=replayed,
        )

    # -- configuration and queries (ask through a proxy) --------------------------------------------

    def configure_failover(
        self,
        *,
        supervised_hops: Collection[Address] | None = None,
        failover_targets: Mapping[Address, FailoverTarget] | None = None,
        hop_names: Mapping[Address, str] | None = None,
    ) -> None:
        """Set what the deployment knows once every module is bound (neighbours' addresses)."""
        if supervised_hops is not None:
            self.supervised_hops = {tuple(a) for a in supervised_hops} | set(self.routes.values())  # type: ignore[misc]
        if failover_targets is not None:
            self.failover_targets = {tuple(a): t for a, t in failover_targets.items()}  # type: ignore[misc]
        if hop_names is not None:
            self.hop_names = {tuple(a): n for a, n in hop_names.items()}  # type: ignore[misc]

    def get_failover_events(self) -> list[dict[str, Any]]:
        """The failover events so far (see ``failover.FailoverLog``)."""
        return [dict(e) for e in self.failover_log.events]

    def get_routes(self) -> dict[str, list[Any]]:
        """Deactivated links: failed address -> replacement address."""
        return {format_address(a): list(b) for a, b in self.routes.items()}

    def get_checkpoints(self) -> dict[str, dict[str, Any]]:
        return self.checkpoints.snapshot()

    # -- routing -------------------------------------------------------------------

    def set_downstream(self, address: Address) -> None:
        """Point initial requests at another next module (topology wiring, failover)."""
        self.downstream = tuple(address)  # type: ignore[assignment]

    def next_hop(self, request: SipMessage) -> Address | None:
        route = top_route(request)
        if route is not None:
            return uri_address(route)
        if request.to_tag is None and request.method != "ACK":
            return self.route_initial(request)
        return uri_address(request.uri)

    def route_initial(self, request: SipMessage) -> Address | None:
        """Where an initial (out-of-dialog) request goes next. Default: ``downstream``."""
        return self.downstream

    # -- loop detection --------------------------------------------------------------------

    def on_request(self, request: SipMessage, transaction: Transaction, source: Address) -> Any:
        method = request.method
        uri = request.uri or ""
        # Only a Request-URI without a user part can address the module itself: that cheap
        # test first spares the call traffic (``user@...``) the header look-ups.
        if "@" not in uri and method == "NOTIFY" and is_announcement(request) and self._addressed_to_us(request):
            return self._on_announcement(request, transaction)
        if "@" not in uri and request.to_tag is None and not request.get("Route") and self._addressed_to_us(request):
            # OPTIONS to the module itself (a keep-alive ping): answer here, never forward.
            status = 200 if request.method == "OPTIONS" else 405
            response = request.make_response(status)
            response.set("Allow", "OPTIONS" if status == 405 else ALLOW)  # RFC 3261 21.4.6
            self.send_response(transaction, response)
            return None
        if method != "ACK" and method != "CANCEL" and self._is_loop(request):
            self.stats["loops"] += 1
            self.send_response(transaction, request.make_response(482))
            return None
        return super().on_request(request, transaction, source)

    @property
    def via_address(self) -> Address:
        """The sent-by of our Via: our ``identity`` (a replacement's: the failed module's), else
        our own address."""
        return self.identity or self.address

    def _via_strings(self) -> tuple[Address, str, str, str]:
        """``(via_address, "host:port", " host:port;", "SIP/2.0/UDP host:port;branch=")``:
        the pieces of our Via every forwarded request needs, formatted once per address."""
        address = self.identity or self.address
        cache = self._via_cache
        if cache is None or cache[0] is not address:
            host, port = address
            cache = self._via_cache = (address, f"{host}:{port}", f" {host}:{port};",
                                       f"SIP/2.0/UDP {host}:{port};branch=")
        return cache

    @property
    def _own_sent_by(self) -> str:
        """Our sent-by as it appears in a Via line: `` host:port;``."""
        return self._via_strings()[2]

    def via_for(self, request: SipMessage) -> str:
        """Our Via on ``request`` (its top Via still the upstream's): the branch is derived from
        the upstream's branch and our identity, so the failed module and its replacement forward
        the same request with the same Via."""
        _, sent_by, _, prefix = self._via_strings()
        branch = _forward_branch_of(request.branch, sent_by, request.method or "")
        return f"{prefix}{branch}.{_routing_hash(request)};rport"

    def _addressed_to_us(self, request: SipMessage) -> bool:
        uri = request.uri or ""
        target = uri_address(uri)
        return ("@" not in uri and (target == self.address or target in self.aliases)
                and request.method not in ("ACK", "CANCEL"))

    def _is_loop(self, request: SipMessage) -> bool:
        own = self._via_strings()[2]
        # The common case, checked on the raw header lines (each Via element is a substring of
        # its line, so a line without ``own`` has no element with it): not seen here before.
        # (A plain loop: cheaper than any() over a generator, on every request.)
        for name, value in request.headers:
            if name == "Via" and own in value:
                break
        else:
            return False
        vias = request.get_all("Via")
        ours = None
        for value in vias:
            try:
                via = parse_via(value)
            except ValueError:
                continue
            if (via.host, via.port) == self.via_address and via.branch and "." in via.branch:
                ours = ours or []
                ours.append(via.branch.rsplit(".", 1)[1])
        if not ours:
            return False
        probe = request.copy()
        self.pop_own_route(probe)
        return _routing_hash(probe) in ours


def _answered(transaction: Any) -> bool:
    """Has the request of this client transaction had any response (100 Trying included)?"""
    return transaction.state not in _WAITING


def _retransmission_due(transaction: Any) -> float | None:
    """When the transaction layer next retransmits this request (INVITE Timer A, else E)."""
    if transaction.state not in _WAITING:
        return None
    deadlines = transaction.timer_deadlines()
    return deadlines.get("A", deadlines.get("E"))


def _forward_branch(incoming: str | None, host: str, port: int, method: str) -> str:
    """The branch (before the routing hash) of a request we forward: a function of the branch it
    arrived with, our identity and the method; a fresh one when the upstream's branch is not an
    RFC 3261 one (no magic cookie: it need not be unique)."""
    return _forward_branch_of(incoming, f"{host}:{port}", method)


def _forward_branch_of(incoming: str | None, sent_by: str, method: str) -> str:
    """``_forward_branch`` with our sent-by already formatted (``host:port``)."""
    if not incoming or not incoming.startswith(MAGIC_COOKIE):
        return new_branch()
    material = f"{incoming}|{sent_by}|{method}".encode("utf-8", "surrogateescape")
    return MAGIC_COOKIE + _blake2s(material, digest_size=9).hexdigest()


def _routing_hash(request: SipMessage) -> str:
    """What makes a spiral differ from a loop: Request-URI, Route set, tags, Call-ID, CSeq."""
    # One pass over the header lines for the Route set, Call-ID and CSeq (the tags keep the
    # codec's accessors); the material is what ``get_all("Route")``, ``call_id`` and ``cseq``
    # give, so the hash is unchanged.
    routes: list[str] = []
    call_id = cseq = None
    for name, value in request.headers:
        if name == "Route":
            routes.append(value)
        elif name == "Call-ID":
            if call_id is None:
                call_id = value
        elif name == "CSeq" and cseq is None:
            cseq = value
    if routes:
        routes = _route_values(request, routes)
    if cseq is not None:
        number, _, method = cseq.partition(" ")
        if not (method and number.isdigit() and number.isascii() and len(number) <= 20
                and " " not in method and method.isprintable()):
            parsed = request.cseq  # not the canonical "<digits> <method>": the codec decides
            number = str(parsed[0]) if parsed else ""
        elif number[0] == "0" and len(number) > 1:
            number = str(int(number))  # str(int): no leading zeros
    material = "|".join(
        [
            request.uri or "",
            ",".join(routes),
            request.from_tag or "",
            request.to_tag or "",
            call_id or "",
            number if cseq is not None else "",
        ]
    )
    return _blake2s(material.encode("utf-8", "surrogateescape"), digest_size=6).hexdigest()


def _route_values(request: SipMessage, lines: list[str]) -> list[str]:
    """``request.get_all("Route")`` given its Route lines: each line stripped, empty ones
    dropped; a comma list (rare) is left to the codec to split."""
    for line in lines:
        if "," in line:
            return request.get_all("Route")
    return [v for line in lines if (v := line.strip(" \t"))]

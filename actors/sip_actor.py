"""``SipActor``: an asyncio actor that speaks SIP on its own UDP port.

It wraps the sans-IO pieces the way aioquic's asyncio layer wraps
``QuicConnection``: each datagram from the ``UdpEndpoint`` is parsed with the
codec and fed to a ``TransactionLayer`` right in the endpoint's callback on the
actor's loop; the layer's events become hook calls; its datagrams are sent; and
one ``call_at`` is kept armed for the layer's next deadline.

That wake-up is armed ``timer_slack`` after the deadline (default T1/25, 20 ms with
RFC 3261's T1), and is not moved when the next deadline gets later (it then fires
early, finds nothing due and re-arms): so one wake-up fires every timer that fell
due within the slack, and the thousands of lingering transactions of a busy actor
(Timers D, I, J, K, L, M end them) do not each cost a loop callback of their own.
The transaction layer's deadlines themselves stay exact; only the moment the actor
looks at them is late, by at most the slack.

SIP input is handled on the loop directly rather than through the actor's
inbox, so an ``async`` method of the actor (say, ``await``-ing the final
response of a call it placed) can wait while the responses it waits for are
being processed. Sync hooks therefore run atomically, in arrival order; an
``async def`` hook runs as a task of the actor, interleaving with other input
only at its ``await`` points, like any asyncio server's handlers. A hung peer
(socket open, nothing answered) is modelled at the transport seam.

Malformed input never kills the actor: a request that can still be answered
gets the codec's 4xx/5xx, anything else is counted in ``stats`` and dropped;
an exception in a hook is logged, counted and answered with 500 if it was a
request's hook.

Subclasses implement ``on_request`` and, as needed, ``on_response``,
``on_ack``, ``on_stray_response``, ``on_timeout``, ``on_transaction_terminated``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from actors.actor import AsyncioActor
from actors.clock import Clock, LoopClock
from actors.logs import get_logger
from actors.service_rate import ServiceRate
from actors.sip.headers import SipParseError, new_branch
from actors.sip.malformed import answer_malformed
from actors.sip.message import SipMessage
from actors.sip.timers import SipTimers
from actors.sip.transaction import (
    AckReceived,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TimedOut,
    Transaction,
    TransactionTerminated,
    TransportFailed,
)
from actors.sip.transaction_layer import TransactionLayer
from actors.transport import TransportSeam, UdpEndpoint

__all__ = ["SipActor"]

Address = tuple[str, int]

#: The default ``timer_slack`` as a fraction of T1 (20 ms for T1 = 500 ms; 4 % of Timer A).
DEFAULT_SLACK_FRACTION = 1 / 25

#: ``stats`` keys counting received requests by method (``rx_INVITE``...), built once: an
#: f-string per message costs a new string and its hash on the hot path. Methods seen on the
#: wire are added as they come, up to ``_RX_KEYS_MAX`` (any token is a legal method, so the
#: table stays bounded; beyond it the key is built per message as before).
_RX_KEYS: dict[str, str] = {
    m: f"rx_{m}"
    for m in ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE",
              "INFO", "SUBSCRIBE", "NOTIFY", "PUBLISH", "REFER", "MESSAGE")
}
_RX_KEYS_MAX = 64


def _rx_key(method: str) -> str:
    """The ``stats`` key for a received ``method`` not in ``_RX_KEYS`` yet."""
    key = f"rx_{method}"
    if len(_RX_KEYS) < _RX_KEYS_MAX:
        _RX_KEYS[method] = key
    return key


class SipActor(AsyncioActor):
    """A SIP element on one UDP port, transaction-stateful, hooks per event."""

    def __init__(
        self,
        name: str,
        bind: Address = ("127.0.0.1", 0),
        *,
        timers: SipTimers | None = None,
        trying_delay: float | None = 0.2,
        seam: TransportSeam | None = None,
        time_scale: float = 1.0,
        capacity: float | None = None,
        queue_limit: int = 100,
        timer_slack: float | None = None,
    ) -> None:
        """``capacity``: emulated service rate in new transactions per second (``None``:
        unlimited), with at most ``queue_limit`` waiting; beyond that, 503 + Retry-After.
        ``timer_slack``: how late (emulated seconds, >= 0) the actor may look at a due
        transaction timer so that timers due close together fire in one wake-up (``None``:
        T1/25)."""
        super().__init__()
        self.name = name
        self.bind = bind
        timers = timers or SipTimers()
        if timer_slack is None:
            timer_slack = timers.t1 * DEFAULT_SLACK_FRACTION
        elif isinstance(timer_slack, bool) or not isinstance(timer_slack, (int, float)) \
                or not 0 <= timer_slack < float("inf"):
            raise ValueError(f"timer_slack must be a number of seconds >= 0, got {timer_slack!r}")
        self.timer_slack = float(timer_slack)
        self.layer = TransactionLayer(timers=timers, trying_delay=trying_delay)
        self.stats: Counter[str] = Counter()
        self.capacity = ServiceRate(capacity, queue_limit)
        self.endpoint: UdpEndpoint | None = None
        self.clock: Clock | None = None
        self.log = get_logger(type(self).__name__, instance=name)
        self._seam = seam
        self._time_scale = time_scale
        self._timer_handle: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        # Running ``async def`` hooks -> the event each one handles (for _hook_failed).
        self._hook_tasks: dict[asyncio.Task[Any], Any] = {}
        self._pumping = False  # in _pump: the wake-up is re-armed once, when it ends

    # -- lifecycle (on the actor's loop) -------------------------------------

    async def on_start(self) -> None:
        self.clock = LoopClock(self.loop, time_scale=self._time_scale)
        self.endpoint = await UdpEndpoint.open(
            self.bind, self._datagram_received, seam=self._seam, name=self.name, clock=self.clock
        )
        self.address = self.endpoint.local_address[:2]
        self.log.debug("sip_listening", address=self.address)

    def on_stop(self) -> None:
        self._close()

    def on_failure(self, *exc_info: Any) -> None:
        self._close()

    def _close(self) -> None:
        for task in self._hook_tasks:
            task.cancel()
        if self._timer_handle is not None:
            self._timer_handle.cancel()
        if self.endpoint is not None:
            self.endpoint.close()

    def get_address(self) -> Address:
        """The ``(host, port)`` this actor receives SIP on (ask it through a proxy)."""
        return self.address

    @property
    def now(self) -> float:
        return self.clock.now()  # type: ignore[union-attr]

    # -- input: the endpoint's callback, on the actor's loop ---------------------

    def _datagram_received(self, data: bytes, source: Address) -> None:
        if (not data or data[0] in b"\r\n") and not data.strip(b"\r\n"):
            self.stats["keepalive"] += 1  # RFC 5626 CRLF keep-alive
            return
        try:
            message = SipMessage.parse(data)
        except SipParseError as error:
            answer = answer_malformed(data, error)
            if answer is None:
                self.stats["malformed_dropped"] += 1
                self.log.info("sip_malformed_dropped", source=source, error=str(error))
            else:
                self.stats["malformed_answered"] += 1
                self.log.info("sip_malformed_answered", source=source, status=error.status)
                self.endpoint.send(answer, source)  # type: ignore[union-attr]
            return
        self.stats["rx_request" if message.method is not None else "rx_response"] += 1
        self.layer.receive(message, source, self.clock.now())  # type: ignore[union-attr]
        self._pump()

    def _timer_fired(self) -> None:
        self._timer_handle = None
        self._timer_deadline = None
        self.layer.handle_timer(self.clock.now())  # type: ignore[union-attr]
        self._pump()

    # -- output ---------------------------------------------------------------

    def send_request(self, request: SipMessage, destination: Address) -> Transaction:
        """Start a client transaction; its datagrams leave at the end of this handler."""
        tx = self.layer.send_request(request, destination, self.clock.now())  # type: ignore[union-attr]
        self._flush()
        return tx

    def send_response(self, transaction: Transaction, response: SipMessage) -> None:
        transaction.send_response(response, self.clock.now())  # type: ignore[attr-defined, union-attr]
        self._flush()

    def send_stateless(self, message: SipMessage | bytes, destination: Address) -> None:
        self.layer.send_stateless(message, destination)
        self._flush()

    def new_via(self) -> str:
        """A Via header value for a request this actor originates or forwards."""
        host, port = self.address
        return f"SIP/2.0/UDP {host}:{port};branch={new_branch()};rport"

    def _flush(self) -> None:
        """Send what the layer queued, in order; re-arm the wake-up unless _pump will.
        (The end of ``_pump`` has its own copy of this.)"""
        datagrams = self.layer.datagrams_to_send()
        if datagrams:
            self.stats["tx"] += len(datagrams)
            endpoint = self.endpoint
            for data, destination in datagrams:  # usually one: call, don't bind, ``send``
                endpoint.send(data, destination)  # type: ignore[union-attr]
        if not self._pumping:
            self._arm_timer()

    def _arm_timer(self) -> None:
        """Make sure a wake-up is armed no later than the layer's next deadline plus the slack.
        A wake-up armed earlier than that is left alone (see the module docstring)."""
        deadline = self.layer.get_timer()
        if deadline is None:
            return  # a wake-up still armed fires, finds nothing due, and is not re-armed
        wake = deadline + self.timer_slack
        armed = self._timer_deadline
        if armed is not None:
            if armed <= wake:
                return
            self._timer_handle.cancel()  # type: ignore[union-attr]
        self._timer_deadline = wake
        self._timer_handle = self.clock.call_at(wake, self._timer_fired)  # type: ignore[union-attr]

    # -- events -> hooks ------------------------------------------------------------

    def _pump(self) -> None:
        """Hand the layer's events to the hooks until quiet, then send what is queued and
        re-arm the wake-up once. Datagrams keep their order: the ``send_*`` methods a hook
        calls flush everything queued before them."""
        layer = self.layer
        pumping, self._pumping = self._pumping, True
        try:
            while True:
                events = layer.events()
                if not events:
                    break
                limited = self.capacity.rate_per_s is not None  # .limited, minus a property call
                for event in events:
                    if limited and type(event) is RequestReceived:
                        self._admit(event)
                        continue
                    # _deliver, inlined: this loop runs for every event of every datagram.
                    try:
                        result = self._dispatch(event)
                    except Exception as error:  # noqa: BLE001
                        self._hook_failed(event, error)
                    else:
                        if result is not None and asyncio.iscoroutine(result):
                            self._run_hook(result, event)
        finally:
            self._pumping = pumping
        # _flush, inlined (one call less per datagram): send what is still queued, re-arm.
        datagrams = layer.datagrams_to_send()
        if datagrams:
            self.stats["tx"] += len(datagrams)
            endpoint = self.endpoint
            for data, destination in datagrams:
                endpoint.send(data, destination)  # type: ignore[union-attr]
        if not pumping:
            self._arm_timer()

    def _admit(self, event: RequestReceived) -> None:
        """Emulated capacity: queue the new request for its service slot, or answer 503."""
        finish = self.capacity.admit(self.now)
        if finish is None:
            self.stats["overload_rejected"] += 1
            busy = event.request.make_response(503)
            busy.set("Retry-After", str(self.capacity.retry_after(self.now)))
            event.transaction.send_response(busy, self.now)  # type: ignore[attr-defined]
        elif finish <= self.now:
            self._deliver(event)
        else:
            self.clock.call_at(finish, self._serve_queued, event)  # type: ignore[union-attr]

    def _serve_queued(self, event: RequestReceived) -> None:
        self._deliver(event)
        self._pump()

    def _deliver(self, event: Any) -> None:
        """Run the hook for ``event`` (the same as the loop body of ``_pump``)."""
        try:
            result = self._dispatch(event)
        except Exception as error:  # noqa: BLE001
            self._hook_failed(event, error)
        else:
            if result is not None and asyncio.iscoroutine(result):
                self._run_hook(result, event)

    def _run_hook(self, coro: Any, event: Any) -> None:
        task = self.loop.create_task(coro)
        self._hook_tasks[task] = event  # no closure per hook: _hook_done finds the event here
        task.add_done_callback(self._hook_done)

    def _hook_done(self, task: asyncio.Task[Any]) -> None:
        event = self._hook_tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            self._hook_failed(event, task.exception())  # type: ignore[arg-type]
            self._flush()

    def _hook_failed(self, event: Any, error: BaseException) -> None:
        """A bug in a hook must not kill the actor: log it, count it, answer 500."""
        self.stats["hook_errors"] += 1
        self.log.error("sip_hook_failed", hook_event=event.name, error=repr(error), exc_info=error)
        if type(event) is RequestReceived and event.request.method != "ACK":
            tx = event.transaction
            try:
                tx.send_response(event.request.make_response(500), self.now)
            except Exception:  # noqa: BLE001  (already answered: nothing more to say)
                pass

    def _dispatch(self, event: Any) -> Any:
        # Most frequent kinds first: every transaction has one request or response in and
        # one TransactionTerminated out.
        kind = type(event)
        if kind is RequestReceived:
            request = event.request
            method = request.method
            self.stats[_RX_KEYS.get(method) or _rx_key(method)] += 1
            return self.on_request(request, event.transaction, event.source)
        if kind is ResponseReceived:
            return self.on_response(event.response, event.transaction)
        if kind is TransactionTerminated:
            return self.on_transaction_terminated(event.transaction)
        if kind is AckReceived:
            return self.on_ack(event.request, event.transaction, event.source)
        if kind is StrayResponse:
            return self.on_stray_response(event.response, event.source)
        if kind is TimedOut:
            self.stats[f"timeout_{event.timer}"] += 1
            return self.on_timeout(event.transaction, event.timer)
        if kind is TransportFailed:
            self.stats["transport_error"] += 1
            return self.on_timeout(event.transaction, "transport")
        return None

    # -- hooks for subclasses (all on the actor's loop; may be async) --------------------

    def on_request(self, request: SipMessage, transaction: Transaction, source: Address) -> Any:
        """A new request in a new server transaction. Default: 501 Not Implemented."""
        self.send_response(transaction, request.make_response(501))

    def on_response(self, response: SipMessage, transaction: Transaction) -> Any:
        """A response matched to one of our client transactions."""

    def on_ack(self, request: SipMessage, transaction: Transaction | None, source: Address) -> Any:
        """An ACK: for a non-2xx (absorbed by its transaction) or for a 2xx (``transaction`` None)."""

    def on_stray_response(self, response: SipMessage, source: Address) -> Any:
        """A response no client transaction matches (e.g. a 2xx retransmission)."""

    def on_timeout(self, transaction: Transaction, timer: str) -> Any:
        """Timer B/F/H expired (or the transport failed) for ``transaction``."""

    def on_transaction_terminated(self, transaction: Transaction) -> Any:
        """A transaction ended and was removed from the layer."""

    def get_stats(self) -> dict[str, int]:
        """Counters: messages in/out by kind, malformed answered/dropped, timeouts."""
        out = dict(self.stats)
        if self.endpoint is not None:
            out.update({f"udp_{k}": v for k, v in self.endpoint.stats.as_dict().items()})
        return out

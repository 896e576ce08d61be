"""Overload bursts: real SIP OPTIONS requests at a given rate from an injector socket.

Each request is a complete out-of-dialog OPTIONS addressed to the module itself (its Request-URI
is the module's ``sip:host:port``), so every IMS module answers it (200, or 503 + Retry-After
when its emulated capacity is exhausted). Requests are paced on the clock: request ``i`` leaves
at ``start + i / rate``. Responses are parsed and counted by status; 1xx are ignored. Runs on
the loop it is started on.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from actors.clock import Cancellable, Clock
from actors.sip.headers import SipParseError, new_branch, new_call_id, new_tag
from actors.sip.message import SipMessage
from actors.transport import Address, UdpEndpoint

__all__ = ["OverloadBurst"]


class OverloadBurst:
    """``rate`` OPTIONS per second towards ``target`` until :meth:`stop`. See the module docstring."""

    def __init__(self, target: Address, rate: float, *, clock: Clock, name: str = "fault.overload") -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ValueError(f"rate must be > 0 requests per second, got {rate!r}")
        self.target = tuple(target[:2])
        self.rate = float(rate)
        self.clock = clock
        self.name = name
        self.sent = 0
        self.responses: Counter[int] = Counter()
        self.malformed = 0
        self._answered: set[str] = set()
        self._endpoint: UdpEndpoint | None = None
        self._timer: Cancellable | None = None
        self._start = 0.0
        self._all_answered = asyncio.Event()

    async def start(self) -> None:
        self._endpoint = await UdpEndpoint.open(
            ("127.0.0.1", 0), self._on_datagram, name=self.name, clock=self.clock, recv_buffer_size=1 << 20
        )
        self._start = self.clock.now()
        self._send_next()

    def _send_next(self) -> None:
        endpoint = self._endpoint
        if endpoint is None or endpoint.closing:
            return
        host, port = endpoint.local_address[:2]
        call_id = new_call_id(host)
        request = SipMessage.request(
            "OPTIONS",
            f"sip:{self.target[0]}:{self.target[1]}",
            [
                ("Via", f"SIP/2.0/UDP {host}:{port};branch={new_branch()};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:overload@{host}>;tag={new_tag()}"),
                ("To", f"<sip:{self.target[0]}:{self.target[1]}>"),
                ("Call-ID", call_id),
                ("CSeq", "1 OPTIONS"),
            ],
        )
        self._all_answered.clear()
        endpoint.send(bytes(request), self.target)
        self.sent += 1
        self._timer = self.clock.call_at(self._start + self.sent / self.rate, self._send_next)

    def _on_datagram(self, data: bytes, source: Address) -> None:
        try:
            message = SipMessage.parse(data)
        except SipParseError:
            self.malformed += 1
            return
        if message.is_request or message.status is None or message.status < 200:
            return
        call_id = message.call_id or ""
        if call_id in self._answered:  # a retransmitted final response
            return
        self._answered.add(call_id)
        self.responses[message.status] += 1
        if len(self._answered) >= self.sent:
            self._all_answered.set()

    async def stop(self, linger: float = 1.0) -> dict[str, Any]:
        """Stop sending; wait up to ``linger`` (real) seconds for the last answers; close; report."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._endpoint is not None and len(self._answered) < self.sent and linger > 0:
            try:
                await asyncio.wait_for(self._all_answered.wait(), linger)
            except TimeoutError:
                pass
        if self._endpoint is not None:
            self._endpoint.close()
        return self.report()

    def report(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "answered": sum(self.responses.values()),
            "responses": {str(k): v for k, v in sorted(self.responses.items())},
            "unanswered": self.sent - sum(self.responses.values()),
            "malformed": self.malformed,
        }

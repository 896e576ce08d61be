"""RFC 3261 13.3.1.4 at the UserAgent's UAS: the 2xx is re-sent (T1 doubling up to T2) until the
ACK comes, so a call whose first 200 was lost (a module failing over on its way) still
completes; with no ACK within 64*T1 the callee gives up and ends the call with a BYE."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from actors import Runtime, load_topology
from actors.sip.timers import SipTimers
from actors.transport import Address, SeamItem
from nf_modules.deployment import deploy
from nf_modules.user_agent import UserAgent
from tests.integration.test_ims_call_path import register_directly

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "default.toml"
WAIT = 30.0


class DropSip:
    """A seam that drops the first ``count`` datagrams of one direction that start with ``prefix``
    and carry ``needle`` (``count=None``: all of them)."""

    def __init__(self, direction: str, prefix: bytes, needle: bytes, count: int | None = 1) -> None:
        self.direction, self.prefix, self.needle, self.count = direction, prefix, needle, count
        self.dropped = 0

    def _filter(self, direction: str, data: bytes, addr: Address) -> list[SeamItem]:
        if (direction == self.direction and data.startswith(self.prefix) and self.needle in data
                and (self.count is None or self.dropped < self.count)):
            self.dropped += 1
            return []
        return [(0.0, data, addr)]

    def outbound(self, data: bytes, addr: Address, now: float) -> list[SeamItem]:
        return self._filter("outbound", data, addr)

    def inbound(self, data: bytes, addr: Address, now: float) -> list[SeamItem]:
        return self._filter("inbound", data, addr)


async def test_a_lost_first_200_is_resent_and_the_call_through_the_ims_completes() -> None:
    async with Runtime.attach():
        ims = await deploy(load_topology(TOPOLOGY).without("ue_pool").with_ephemeral_ports())
        lose_first_ok = DropSip("outbound", b"SIP/2.0 200", b" INVITE\r\n")
        alice = UserAgent.start("alice", "ue0001").proxy()
        bob = UserAgent.start("bob", "ue0002", seam=lose_first_ok).proxy()
        try:
            await register_directly(ims, "ue0002", await bob.get_address())
            result = await alice.call("ue0002", ims.addresses["pcscf"], timeout=WAIT)
            assert result.completed, result.timeline
            assert lose_first_ok.dropped == 1
            stats = await bob.get_stats()
            assert stats["ok_retransmitted"] >= 1
            assert stats.get("ack_timeouts", 0) == 0
            # the re-sent 200 arrived T1 (0.5 s) after the lost one
            assert result.answered_after is not None and result.answered_after >= SipTimers().t1
        finally:
            alice.stop()
            bob.stop()
            await ims.stop()


async def test_without_ack_the_callee_resends_t1_doubling_then_gives_up_with_bye() -> None:
    timers = SipTimers(t1=0.05, t2=4.0)
    async with Runtime.attach():
        no_ack = DropSip("inbound", b"ACK ", b"", count=None)
        alice = UserAgent.start("alice", "ue0001", timers=timers).proxy()
        bob = UserAgent.start("bob", "ue0002", timers=timers, seam=no_ack).proxy()
        try:
            bob_address = tuple(await bob.get_address())
            started = time.monotonic()
            call = alice.call(f"sip:ue0002@{bob_address[0]}:{bob_address[1]}", bob_address, hold=8.0, timeout=WAIT)
            deadline = started + WAIT
            while (await bob.get_stats()).get("bye_after_ack_timeout", 0) < 1:
                assert time.monotonic() < deadline, await bob.get_stats()
                await asyncio.sleep(0.05)
            gave_up_after = time.monotonic() - started
            stats = await bob.get_stats()
            # re-sent at 0.05, 0.15, 0.35, 0.75, 1.55, 3.15 s; given up at 64*T1 = 3.2 s
            assert stats["ok_retransmitted"] == 6
            assert stats["ack_timeouts"] == 1
            assert 64 * timers.t1 <= gave_up_after < 64 * timers.t1 + 2.0
            assert (await alice.get_stats()).get("ack_resent", 0) == 6  # alice ACKed every resend
            while (await alice.get_stats()).get("rx_BYE", 0) < 1:  # bob's BYE reached alice
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert len(await bob.dialogs) == 0
            del call  # alice is stopped while she holds the call: nothing more to learn from it
        finally:
            alice.stop()
            bob.stop()

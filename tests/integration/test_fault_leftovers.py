"""What a fault run leaves behind (real sockets on loopback): a crash closes every socket of the
instance (its HSS control peer too), a killed module declares nothing, a module's local
replacements stop with it, and the injector's taps skip endpoints an earlier run left open on a
loop that has since closed."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from pathlib import Path

import pytest
from pykka import ActorRegistry

from actors import Runtime, load_topology
from actors.sip.headers import new_branch, new_call_id, new_tag
from actors.sip.message import SipMessage
from actors.transport import UdpEndpoint, open_endpoints
from faults.injector import FaultInjector
from faults.plan import parse_plan
from faults.timeline import FAULT_INJECTED
from nf_modules.deployment import deploy
from nf_modules.ims_module import ImsModule
from nf_modules.user_agent import UserAgent
from tests.integration.test_ims_call_path import register_directly

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "default.toml"
SILC = "scscf_incoming_leg_control"
SOLC = "scscf_outgoing_leg_control"  # a SIP socket and an HSS control peer
WAIT = 20.0

pytestmark = pytest.mark.timeout(60)


def _open_named(prefix: str) -> list[str]:
    return [e.name for e in open_endpoints() if (e.name or "").startswith(prefix)]


def _leftover_endpoint() -> UdpEndpoint:
    """An endpoint opened on a loop (in this thread) that is closed without closing it."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(UdpEndpoint.open(("127.0.0.1", 0), lambda d, a: None, name="leftover"))
    finally:
        loop.close()


def _crash_plan(target: str) -> object:
    return parse_plan(f'name = "t"\nseed = 1\n[[fault]]\nkind = "crash"\ntarget = "{target}"\n', source="t.toml")


async def test_a_crash_closes_every_socket_of_the_instance_and_taps_skip_closed_loops() -> None:
    # An endpoint an earlier run left open on its own loop, which has closed since.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        leftover = pool.submit(_leftover_endpoint).result()
    assert leftover.loop.is_closed() and not leftover.closing
    try:
        async with Runtime.attach():
            ims = await deploy(load_topology(TOPOLOGY).without("ue_pool").with_ephemeral_ports())
            try:
                assert sorted(_open_named(SOLC)) == [SOLC, f"{SOLC}.control"]
                injector = FaultInjector.start(_crash_plan(SOLC), ims).proxy()
                timeline = await injector.get_timeline()
                (report,) = await injector.apply_now(0)
                assert "error" not in report, report
                assert report["closed"] and timeline.first(FAULT_INJECTED) is not None
                assert _open_named(SOLC) == []  # the SIP socket and the HSS control peer
                await injector.finish()
                await injector.actor_ref.stop(block=False)
            finally:
                await ims.stop()
    finally:
        try:
            leftover.close()  # out of the registry; its loop cannot close the transport any more
        except RuntimeError:
            pass
        leftover._transport._sock.close()  # noqa: SLF001


async def test_local_replacements_stop_with_the_module_that_started_them() -> None:
    async with Runtime.attach():
        ims = await deploy(load_topology(TOPOLOGY).without("ue_pool").with_ephemeral_ports())
        try:
            alice = UserAgent.start("alice", "ue0001").proxy()
            bob = UserAgent.start("bob", "ue0002", ring_delay=0.05).proxy()
            await register_directly(ims, "ue0002", await bob.get_address())
            await ims.stop_module(SILC)
            assert (await alice.call("ue0002", ims.addresses["pcscf"], timeout=WAIT)).completed
            replacement = f"{SILC}.local@scscf_session_controller"
            assert _open_named(replacement) == [replacement]
            refs = [r for r in ActorRegistry.get_all()
                    if getattr(r._actor_weakref(), "name", "") == replacement]  # noqa: SLF001
            assert len(refs) == 1
            await alice.actor_ref.stop(block=False)
            await bob.actor_ref.stop(block=False)
            # once the Session Controller has stopped, so has its replacement: nothing to close
            await ims.stop_module("scscf_session_controller")
            assert not refs[0].is_alive()
            assert _open_named(replacement) == []
        finally:
            await ims.stop()


async def test_a_killed_module_declares_no_neighbour_failed() -> None:
    """A crash kills the actor (no on_stop); its supervisor's timer is a loop callback that
    would otherwise declare the silent downstream failed and start a replacement."""
    async with Runtime.attach():
        async with await UdpEndpoint.open(("127.0.0.1", 0), lambda d, a: None, name="silent") as silent, \
                await UdpEndpoint.open(("127.0.0.1", 0), lambda d, a: None, name="client") as client:
            hop = silent.local_address[:2]
            ref = ImsModule.start("killed", downstream=hop, timer_a=0.2, fast_retry_interval=0.05,
                                  timer_b=0.2, supervised_hops=[hop])
            module = ref._actor_weakref()  # noqa: SLF001
            address = tuple(await ref.proxy().get_address())
            host, port = client.local_address[:2]
            message = SipMessage.request("MESSAGE", "sip:bob@ims.example", [
                ("Via", f"SIP/2.0/UDP {host}:{port};branch={new_branch()};rport"),
                ("Max-Forwards", "70"), ("From", f"<sip:alice@ims.example>;tag={new_tag()}"),
                ("To", "<sip:bob@ims.example>"), ("Call-ID", new_call_id(host)), ("CSeq", "1 MESSAGE"),
            ])
            client.send(bytes(message), address)
            deadline = time.monotonic() + WAIT
            while module.supervisor.in_flight() == 0:  # forwarded to the silent hop, watched
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            module.kill()
            await module.actor_terminated
            await asyncio.sleep(0.6)  # Timer A + Timer B of this module: 0.4 s
            assert [e["event"] for e in module.failover_log.events] == []
            assert module.stats["hops_failed"] == 0

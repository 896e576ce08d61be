"""Every fault kind, applied by the injector to the real IMS modules of the default topology.

Each test observes the fault from outside with real SIP over loopback (an OPTIONS to a module is
answered by the module itself), then reverts it and sees service come back.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from actors import Runtime, load_topology
from actors.sip.headers import new_branch, new_call_id, new_tag
from actors.sip.message import SipMessage
from actors.transport import Address, UdpEndpoint, endpoint_at
from faults.injector import FaultInjector
from faults.plan import parse_plan
from faults.timeline import DETECTED, DETECTION_TRIGGERED, FAILOVER_COMPLETE, FAULT_INJECTED, FAULT_REVERTED
from nf_modules.deployment import ImsDeployment, deploy

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "default.toml"
WAIT = 10.0
SC = "scscf_session_controller"
SILC = "scscf_incoming_leg_control"

pytestmark = pytest.mark.timeout(60)


class SipProbe:
    """A test client: sends OPTIONS to a module and collects every response by Call-ID."""

    def __init__(self, endpoint: UdpEndpoint) -> None:
        self.endpoint = endpoint
        self.responses: dict[str, list[tuple[float, SipMessage]]] = {}
        self.arrivals: list[str] = []
        self.sent_at: dict[str, float] = {}
        self._waiters: dict[str, asyncio.Future[None]] = {}
        endpoint.on_datagram = self._on_datagram

    @classmethod
    async def open(cls) -> SipProbe:
        return cls(await UdpEndpoint.open(("127.0.0.1", 0), None, name="probe"))

    def options(self, target: Address, via: Address | None = None) -> str:
        host, port = via or self.endpoint.local_address[:2]
        call_id = new_call_id(host)
        request = SipMessage.request("OPTIONS", f"sip:{target[0]}:{target[1]}", [
            ("Via", f"SIP/2.0/UDP {host}:{port};branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:probe@{host}>;tag={new_tag()}"),
            ("To", f"<sip:{target[0]}:{target[1]}>"),
            ("Call-ID", call_id),
            ("CSeq", "1 OPTIONS"),
        ])
        self._waiters[call_id] = asyncio.get_running_loop().create_future()
        self.sent_at[call_id] = asyncio.get_running_loop().time()
        self.endpoint.send(bytes(request), target)
        return call_id

    def _on_datagram(self, data: bytes, source: Address) -> None:
        try:
            message = SipMessage.parse(data)
        except Exception:  # noqa: BLE001
            return
        call_id = message.call_id or ""
        if message.is_request or (message.status or 0) < 200:
            return
        self.responses.setdefault(call_id, []).append((asyncio.get_running_loop().time(), message))
        self.arrivals.append(call_id)
        waiter = self._waiters.get(call_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def answer(self, call_id: str, timeout: float) -> tuple[int, float] | None:
        """The status and round-trip time of ``call_id``'s first final response, ``None`` if none."""
        try:
            await asyncio.wait_for(asyncio.shield(self._waiters[call_id]), timeout)
        except TimeoutError:
            return None
        at, message = self.responses[call_id][0]
        return message.status or 0, at - self.sent_at[call_id]

    async def ping(self, target: Address, timeout: float = WAIT) -> tuple[int, float] | None:
        return await self.answer(self.options(target), timeout)


async def until(condition: Any, timeout: float = WAIT) -> None:
    """Wait for ``condition()`` to become true, checking every 10 ms, up to ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def ims() -> AsyncIterator[ImsDeployment]:
    async with Runtime.attach():
        topology = load_topology(TOPOLOGY).without("ue_pool").with_ephemeral_ports()
        overrides = {"as_application_logic": {"capacity": 20.0, "queue_limit": 4}}
        deployment = await deploy(topology, overrides=overrides)
        yield deployment
        await deployment.stop()


@pytest.fixture
async def probe() -> AsyncIterator[SipProbe]:
    p = await SipProbe.open()
    yield p
    p.endpoint.close()


def injector_for(ims: ImsDeployment, fault_toml: str) -> Any:
    plan = parse_plan(f'name = "test"\nseed = 3\n[[fault]]\n{fault_toml}\n', source="test.toml")
    return FaultInjector.start(plan, ims).proxy()


async def stop(injector: Any) -> None:
    await injector.actor_ref.stop(block=False)


async def fault_of(injector: Any) -> Any:
    """The plan's (only) fault object: its seams' counters are read straight from it."""
    return (await injector.resolved)[0].faults[0]


def counted(fault: Any, counter: str) -> int:
    return sum(s[counter] for s in fault.stats().values())


async def until_stat(proxy: Any, key: str, value: int) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while (await proxy.get_stats()).get(key, 0) != value:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{key} never reached {value}")
        await asyncio.sleep(0.01)


async def test_crash_closes_the_socket_and_revert_restarts_the_module(ims: ImsDeployment, probe: SipProbe) -> None:
    address = ims.addresses[SILC]
    assert (await probe.ping(address))[0] == 200
    old_ref = ims.refs[SILC]
    injector = injector_for(ims, f'kind = "crash"\ntarget = "{SILC}"')
    (report,) = await injector.apply_now(0)
    assert report["terminated"] == "killed" and report["closed"]
    assert not old_ref.is_alive()
    assert endpoint_at(address) is None
    assert SILC not in ims.refs
    # The port is free: nothing is bound there any more.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(address)
    assert await probe.ping(address, timeout=0.5) is None
    (reverted,) = await injector.revert_all()
    assert reverted["restarted"] is True and tuple(reverted["address"]) == address
    assert (await probe.ping(address))[0] == 200
    assert ims.refs[SILC].is_alive()
    await stop(injector)


async def test_hang_keeps_the_socket_bound_but_answers_nothing(ims: ImsDeployment, probe: SipProbe) -> None:
    address = ims.addresses[SILC]
    injector = injector_for(ims, f'kind = "hang"\ntarget = "{SILC}"')
    await injector.apply_now(0)
    assert await probe.ping(address, timeout=0.5) is None
    assert endpoint_at(address) is not None and ims.refs[SILC].is_alive()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(OSError):
        s.bind(address)  # still bound by the hung module
    assert counted(await fault_of(injector), "blackholed") >= 1
    await injector.revert_all()
    assert (await probe.ping(address))[0] == 200
    await stop(injector)


async def send_from(ims: ImsDeployment, name: str, probe: SipProbe, target: Address) -> str:
    """An OPTIONS leaving module ``name``'s own socket (its Via: the answer returns there)."""
    endpoint = endpoint_at(ims.addresses[name])
    assert endpoint is not None
    saved = probe.endpoint
    probe.endpoint = endpoint  # send through the module's socket, with its address in the Via
    try:
        return probe.options(target)
    finally:
        probe.endpoint = saved


async def test_one_way_partition(ims: ImsDeployment, probe: SipProbe) -> None:
    pcscf, sc = ims.proxy("pcscf"), ims.proxy(SC)
    # forward: P-CSCF -> S-CSCF SC cut, so the SC never sees the request.
    injector = injector_for(ims, f'kind = "partition"\nlink = ["pcscf", "{SC}"]\ndirection = "forward"')
    fault = await fault_of(injector)
    await injector.apply_now(0)
    before = (await sc.get_stats()).get("rx_OPTIONS", 0)
    await send_from(ims, "pcscf", probe, ims.addresses[SC])
    await until(lambda: counted(fault, "dropped") == 1)
    assert (await sc.get_stats()).get("rx_OPTIONS", 0) == before
    await injector.revert_all()
    await stop(injector)
    # backward: the SC gets it, its answer back to the P-CSCF is cut.
    injector = injector_for(ims, f'kind = "partition"\nlink = ["pcscf", "{SC}"]\ndirection = "backward"')
    fault = await fault_of(injector)
    await injector.apply_now(0)
    responses_before = (await pcscf.get_stats()).get("rx_response", 0)
    await send_from(ims, "pcscf", probe, ims.addresses[SC])
    await until(lambda: counted(fault, "dropped") >= 1)
    assert (await sc.get_stats()).get("rx_OPTIONS", 0) == before + 1
    assert (await pcscf.get_stats()).get("rx_response", 0) == responses_before
    await injector.revert_all()
    # healed: the answer comes back to the P-CSCF.
    await send_from(ims, "pcscf", probe, ims.addresses[SC])
    await until_stat(pcscf, "rx_response", responses_before + 1)
    await stop(injector)


async def test_delay_with_jitter_is_measured(ims: ImsDeployment, probe: SipProbe) -> None:
    address = ims.addresses[SC]
    injector = injector_for(
        ims, f'kind = "delay"\ntarget = "{SC}"\ndirection = "inbound"\nparams = {{delay = "300ms", jitter = "20ms"}}'
    )
    await injector.apply_now(0)
    rtts = [(await probe.ping(address))[1] for _ in range(3)]
    assert all(0.28 <= rtt < 1.0 for rtt in rtts), rtts
    await injector.revert_all()
    status, rtt = await probe.ping(address)
    assert status == 200 and rtt < 0.25
    await stop(injector)


async def test_loss_is_counted(ims: ImsDeployment, probe: SipProbe) -> None:
    address = ims.addresses[SC]
    injector = injector_for(ims, f'kind = "loss"\ntarget = "{SC}"\ndirection = "inbound"\nparams = {{probability = 0.5}}')
    await injector.apply_now(0)
    call_ids = [probe.options(address) for _ in range(40)]
    answers = await asyncio.gather(*(probe.answer(c, 1.0) for c in call_ids))
    dropped = counted(await fault_of(injector), "dropped")
    assert 0 < dropped < 40
    assert sum(a is not None for a in answers) == 40 - dropped
    await injector.revert_all()
    assert (await probe.ping(address))[0] == 200
    await stop(injector)


async def test_duplication_is_counted_and_absorbed_as_retransmissions(ims: ImsDeployment, probe: SipProbe) -> None:
    address = ims.addresses[SC]
    injector = injector_for(ims, f'kind = "duplicate"\ntarget = "{SC}"\ndirection = "inbound"\nparams = {{probability = 1.0}}')
    await injector.apply_now(0)
    call_ids = [probe.options(address) for _ in range(5)]
    # Each request arrives twice; the second copy is a retransmission the server transaction
    # answers again, so every OPTIONS gets two 200s.
    await until(lambda: all(len(probe.responses.get(c, [])) == 2 for c in call_ids))
    assert counted(await fault_of(injector), "duplicated") == 5
    await injector.revert_all()
    call_id = probe.options(address)
    assert (await probe.answer(call_id, WAIT))[0] == 200
    await asyncio.sleep(0.2)  # no second copy may follow (a bounded look for an absence)
    assert len(probe.responses[call_id]) == 1
    await stop(injector)


async def test_reordering_swaps_answers(ims: ImsDeployment, probe: SipProbe) -> None:
    address = ims.addresses[SC]
    injector = injector_for(
        ims, f'kind = "reorder"\ntarget = "{SC}"\ndirection = "outbound"\nparams = {{probability = 1.0, max_hold = "2s"}}'
    )
    fault = await fault_of(injector)
    await injector.apply_now(0)
    first = probe.options(address)
    await until(lambda: counted(fault, "reordered") == 1)
    second = probe.options(address)
    await until(lambda: first in probe.arrivals and second in probe.arrivals)
    assert probe.arrivals.index(second) < probe.arrivals.index(first)
    await injector.revert_all()
    await stop(injector)


async def test_corruption_is_counted(ims: ImsDeployment, probe: SipProbe) -> None:
    address = ims.addresses[SC]
    sc = ims.proxy(SC)
    before = await sc.get_stats()
    injector = injector_for(ims, f'kind = "corrupt"\ntarget = "{SC}"\ndirection = "inbound"\nparams = {{probability = 1.0}}')
    fault = await fault_of(injector)
    await injector.apply_now(0)
    call_ids = [probe.options(address) for _ in range(20)]
    await until(lambda: counted(fault, "corrupted") == 20)
    after = await sc.get_stats()
    assert after["udp_delivered"] - before["udp_delivered"] == 20
    answered = await asyncio.gather(*(probe.answer(c, 1.0) for c in call_ids))
    # A flipped bit in a header the answer depends on (Via, Call-ID, CSeq...) loses the answer.
    assert sum(a is not None for a in answered) < 20
    await injector.revert_all()
    assert (await probe.ping(address))[0] == 200
    await stop(injector)


async def test_slowness_serves_one_message_at_a_time(ims: ImsDeployment, probe: SipProbe) -> None:
    address = ims.addresses[SC]
    injector = injector_for(ims, f'kind = "slowness"\ntarget = "{SC}"\nparams = {{service_time = "100ms"}}')
    await injector.apply_now(0)
    call_ids = [probe.options(address) for _ in range(5)]
    rtts = sorted([(await probe.answer(c, WAIT))[1] for c in call_ids])
    assert rtts[0] >= 0.09 and rtts[-1] >= 0.49, rtts  # queued: 0.1, 0.2, ... 0.5 s
    await injector.revert_all()
    call_ids = [probe.options(address) for _ in range(5)]
    rtts = sorted([(await probe.answer(c, WAIT))[1] for c in call_ids])
    assert rtts[-1] < 0.2, rtts
    await stop(injector)


async def test_overload_burst_gets_503_from_a_module_with_a_capacity(ims: ImsDeployment) -> None:
    plan = parse_plan(
        'name = "burst"\n[[fault]]\nkind = "overload"\ntarget = "as_application_logic"\nat = "0s"\n'
        'duration = "500ms"\nparams = {rate = 200, linger = "2s"}\n'
    )
    injector = FaultInjector.start(plan, ims).proxy()
    timeline = await injector.get_timeline()
    await injector.begin()
    await until(lambda: timeline.first(FAULT_REVERTED) is not None)
    report = timeline.first(FAULT_REVERTED).details
    assert report["sent"] >= 90
    assert report["responses"].get("503", 0) > 0 and report["responses"].get("200", 0) > 0
    assert report["unanswered"] == 0
    stats = await ims.proxy("as_application_logic").get_stats()
    assert stats["overload_rejected"] == report["responses"]["503"]
    await stop(injector)


async def test_call_triggered_crash_records_the_timeline_and_the_verdict(ims: ImsDeployment, probe: SipProbe) -> None:
    plan = parse_plan(
        f'name = "t"\n[[fault]]\nkind = "crash"\ntarget = "scscf.incoming_leg_control"\nat_call = 2\n'
        '[[check]]\ncheck = "detection_at"\nexpected_s = 0.2\ntolerance_s = 0.1\n'
        '[[check]]\ncheck = "no_hanging_mrf_dialogs"\n'
    )
    injector = FaultInjector.start(plan, ims).proxy()
    timeline = await injector.get_timeline()
    await injector.begin()
    assert await injector.call_started(1) == []
    await injector.call_established(1)
    (report,) = await injector.call_started(2)
    assert report["kind"] == "crash" and report["instance"] == SILC
    # The first datagram sent to the dead hop is the detection trigger.
    probe.options(ims.addresses[SILC])
    await until(lambda: timeline.first(DETECTION_TRIGGERED) is not None)
    trigger = timeline.first(DETECTION_TRIGGERED)
    assert trigger.details["sender"] == "probe" and tuple(trigger.details["to"]) == ims.addresses[SILC]
    # What the hop supervisors and the experiment report (the supervisors' own tests run them).
    fault_at = timeline.first(FAULT_INJECTED).at
    timeline.record(DETECTED, at=fault_at + 0.2, hop=SILC)
    timeline.record(FAILOVER_COMPLETE, at=fault_at + 0.25)
    timeline.call_established(2, at=fault_at + 0.3)
    await injector.call_ended(2, "completed")
    result = await injector.finish()
    r = result["results"]
    assert r["fault_at_s"] >= 0 and 0 <= r["detection_trigger_s"] < 0.2
    assert (r["detection_s"], r["failover_s"], r["recovery_s"]) == (0.2, 0.05, 0.3)
    assert r["calls_in_setup_at_fault"] == 1 and r["calls_in_setup_completed"] == 1
    verdict = {c["check"]: c["held"] for c in result["verdict"]["checks"]}
    assert verdict == {"detection_at": True, "no_hanging_mrf_dialogs": False}  # never reported
    assert [e["event"] for e in result["timeline"]["events"]].count(FAULT_INJECTED) == 1
    await stop(injector)


async def test_triggers_and_durations_run_on_the_injectors_clock_exactly(ims: ImsDeployment, probe: SipProbe) -> None:
    """On a virtual clock, a fault "at 10s for 5s" is applied at 10.0 and reverted at 15.0 exactly;
    an "at_call, on established" fault fires on that call's establishment, not its start."""
    from actors.clock import VirtualClock

    plan = parse_plan(
        f'name = "clocked"\n'
        f'[[fault]]\nkind = "hang"\ntarget = "{SILC}"\nat = "10s"\nduration = "5s"\n'
        f'[[fault]]\nkind = "delay"\ntarget = "{SC}"\nat_call = 1\non = "established"\nduration = "1s"\n'
        f'params = {{delay = "50ms"}}\n'
    )
    clock = VirtualClock(start=0.0)
    injector = FaultInjector.start(plan, ims, clock=clock).proxy()
    timeline = await injector.get_timeline()
    await injector.begin()
    assert await injector.call_started(1) == []
    (delayed,) = await injector.call_established(1)
    assert delayed["kind"] == "delay"
    clock.advance_to(9.999)
    assert [e.details["kind"] for e in timeline.events(FAULT_INJECTED)] == ["delay"]
    clock.advance_to(10.0)
    await until(lambda: len(timeline.events(FAULT_INJECTED)) == 2)
    assert await probe.ping(ims.addresses[SILC], timeout=0.3) is None
    clock.advance_to(15.0)
    await until(lambda: len(timeline.events(FAULT_REVERTED)) == 2)
    hang_on, hang_off = (timeline.first(e, kind="hang") for e in (FAULT_INJECTED, FAULT_REVERTED))
    assert (hang_on.at, hang_off.at) == (10.0, 15.0)
    assert timeline.first(FAULT_REVERTED, kind="delay").at == 1.0  # established at 0, 1 s long
    assert (await probe.ping(ims.addresses[SILC]))[0] == 200
    await stop(injector)

"""A replacement that fails in turn is replaced again: the in-service module supervises its
local instance like any neighbour, and the new instance answers for both failed addresses."""

from __future__ import annotations

import time

from pykka import ActorRegistry

from nf_modules.deployment import ImsDeployment, _stop
from tests.integration.test_failover import DETECTION, WAIT, _users, ims  # noqa: F401  (fixture)


def _replacements(prefix: str) -> list:
    found = []
    for ref in ActorRegistry.get_all():
        actor = ref._actor_weakref()  # noqa: SLF001
        if actor is not None and getattr(actor, "name", "").startswith(prefix) and ref.is_alive():
            found.append(ref)
    return found


async def test_a_failed_replacement_is_replaced_again(ims: ImsDeployment) -> None:  # noqa: F811
    alice, _ = await _users(ims)
    pcscf = ims.addresses["pcscf"]
    await ims.stop_module("scscf_incoming_leg_control")
    assert (await alice.call("ue0002", pcscf, timeout=WAIT)).completed
    [first] = _replacements("scscf_incoming_leg_control.local@")
    await _stop(first)  # the replacement crashes too

    started = time.monotonic()
    result = await alice.call("ue0002", pcscf, timeout=WAIT)
    assert result.completed, result.timeline
    assert time.monotonic() - started >= DETECTION
    events = [e for e in await ims.proxy("scscf_session_controller").get_failover_events()
              if e["event"] == "failover_complete"]
    assert len(events) == 2 and events[0]["replacement"] != events[1]["replacement"]
    failed = [e["failed"] for e in await ims.proxy("scscf_session_controller").get_failover_events()
              if e["event"] == "hop_failed"]
    assert failed == ["scscf_incoming_leg_control"] * 2  # the same module, at its second address
    routes = await ims.proxy("as_incoming_leg_control").get_routes()
    assert set(map(tuple, routes.values())) == {tuple(events[1]["replacement"])}
    assert len(routes) == 2  # the original and the first replacement both lead to the second
    assert (await alice.call("ue0002", pcscf, timeout=WAIT)).completed

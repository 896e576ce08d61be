"""The paper's experiment in small: the S-CSCF Incoming Leg Control crashes as call 2 is set up.

The injector applies a ``silc-crash``-style plan (at call 2 instead of 25) to the refactored
default topology; the hop supervisors detect the dead hop on the call's own INVITE (Timer A +
Timer B = 2 s) and fail over; the timeline gets the injector's and the modules' events and
gives the figures and the verdict of issue 5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actors import Runtime, load_topology
from faults.injector import FaultInjector
from faults.plan import load_plan, parse_plan
from faults.timeline import DETECTION_TRIGGERED, RESULT_KEYS
from nf_modules.deployment import deploy
from nf_modules.user_agent import UserAgent
from tests.integration.test_ims_call_path import register_directly

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "default.toml"
WAIT = 30.0

pytestmark = pytest.mark.timeout(60)


async def test_silc_crash_at_the_second_call_detected_failed_over_and_judged() -> None:
    builtin = load_plan("silc-crash").as_dict()
    (fault,) = builtin["faults"]
    text = (
        f'name = "silc-crash-small"\nseed = 1\n[[fault]]\nkind = "{fault["kind"]}"\n'
        f'target = "{fault["target"]}"\nat_call = 2\n'
        + "".join(
            "[[check]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in check.items())
            for check in builtin["checks"] if check["check"] in ("detection_at", "failover_within", "setup_calls_complete", "no_hanging_mrf_dialogs")
        )
    )
    plan = parse_plan(text)
    async with Runtime.attach():
        ims = await deploy(load_topology(TOPOLOGY).without("ue_pool").with_ephemeral_ports())
        try:
            alice = UserAgent.start("alice", "ue0001").proxy()
            bob = UserAgent.start("bob", "ue0002", ring_delay=0.05).proxy()
            await register_directly(ims, "ue0002", await bob.get_address())
            injector = FaultInjector.start(plan, ims).proxy()
            timeline = await injector.get_timeline()
            await injector.begin()
            for n in (1, 2, 3):
                await injector.call_started(n)
                result = await alice.call("ue0002", ims.addresses["pcscf"], timeout=WAIT)
                assert result.status == 200 and result.bye_status == 200, (n, result.timeline)
                await injector.call_established(n)
                await injector.call_ended(n, "completed")
            collected = await injector.collect_from_modules()
            assert collected["module_events"] >= 3
            report = await injector.finish()
            await injector.actor_ref.stop(block=False)
        finally:
            await ims.stop()
    r = report["results"]
    assert set(RESULT_KEYS) <= r.keys()
    trigger = timeline.first(DETECTION_TRIGGERED)
    assert trigger.details["sender"] == "scscf_session_controller"
    assert trigger.details["first_line"].startswith("INVITE ")
    assert 0 <= r["detection_trigger_s"] < 0.5
    # The supervisor's own trigger (its checkpoint of the forwarded INVITE) is the same moment.
    assert abs(timeline.first("module_detection_triggered").at - trigger.at) < 0.05
    assert 2.0 <= r["detection_s"] < 2.3
    assert 0 <= r["failover_s"] < 0.5
    assert r["detection_s"] <= r["recovery_s"] < r["detection_s"] + 1.0
    assert (r["calls_in_setup_at_fault"], r["calls_in_setup_completed"], r["calls_dropped"]) == (1, 1, 0)
    assert r["hanging_mrf_dialogs"] == 0
    held = {c["check"]: c["held"] for c in report["verdict"]["checks"]}
    assert held["setup_calls_complete"] is True
    assert held["no_hanging_mrf_dialogs"] is True
    assert set(held) == {"detection_at", "failover_within", "setup_calls_complete", "no_hanging_mrf_dialogs"}
    json.dumps(report)  # the whole report is JSON

"""Every built-in plan runs through ``run_fault`` (in-process, refactored mode, a tiny workload:
the fault at the 2nd of 3 calls, each held 1 s; time-triggered faults moved to the first
seconds): crash and hang of each failover case of issue 5, a partition, loss with delay, and an
overload burst. The figures are measured on real sockets, so each assertion can fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.fault import FaultConfig, run_fault
from faults.plan import BUILTIN_DIR
from faults.timeline import RESULT_KEYS

pytestmark = pytest.mark.timeout(90)


def _run(plan: str, **overrides: object) -> tuple[dict, list[dict]]:
    config = FaultConfig(plan=plan, mode="refactored", calls=3, hold=1.0, call_timeout=10.0, **overrides)  # type: ignore[arg-type]
    result = run_fault(config, write=False)
    assert set(RESULT_KEYS) <= result.metrics.keys()
    return result.metrics, result.summary["timeline"]["events"]


def _injected(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] == "fault_injected"]


@pytest.mark.parametrize(
    ("plan", "instance", "kind"),
    [
        ("ailc-crash", "as_incoming_leg_control", "crash"),
        ("solc-crash", "scscf_outgoing_leg_control", "crash"),
        ("mrfc-crash", "mrfc", "crash"),
        ("silc-hang", "scscf_incoming_leg_control", "hang"),
    ],
)
def test_a_failed_module_is_detected_replaced_and_the_call_in_setup_completes(plan: str, instance: str, kind: str) -> None:
    m, events = _run(plan, at_call=2)
    (fault,) = _injected(events)
    assert (fault["instance"], fault["kind"]) == (instance, kind)
    assert 0.9 <= m["fault_at_s"] <= 1.5
    assert m["detection_s"] is not None and 1.9 <= m["detection_s"] <= 3.0, m
    assert m["failover_s"] is not None and m["failover_s"] <= 0.5, m
    assert m["calls_in_setup_at_fault"] >= 1
    assert m["calls_in_setup_completed"] == m["calls_in_setup_at_fault"], m
    assert m["calls_dropped"] == 0 and m["hanging_mrf_dialogs"] == 0, m


def test_a_partition_is_applied_and_healed() -> None:
    m, events = _run("pcscf-scscf-partition", at_call=2)
    (fault,) = _injected(events)
    assert fault["kind"] == "partition"
    assert sorted(fault["link"]) == ["pcscf", "scscf_session_controller"]
    assert any(e["event"] == "fault_reverted" for e in events)
    assert m["calls"] == 3 and m["fault_at_s"] is not None


def test_loss_and_delay_on_a_link_are_carried_by_retransmissions() -> None:
    m, events = _run("lossy-link")
    assert sorted(f["kind"] for f in _injected(events)) == ["delay", "loss"]
    assert m["calls_completed"] == 3 and m["calls_dropped"] == 0
    assert m["verdict"]["checks"]["no_dropped_calls"]["held"] is True


def test_an_overload_burst_runs_for_its_duration(tmp_path: Path) -> None:
    text = (BUILTIN_DIR / "scscf-overload.toml").read_text().replace('at = "10s"', 'at = "1s"').replace(
        'duration = "10s"', 'duration = "1s"')
    assert 'at = "1s"' in text and 'duration = "1s"' in text
    plan = tmp_path / "short-overload.toml"
    plan.write_text(text)
    m, events = _run(str(plan))
    (fault,) = _injected(events)
    assert fault["kind"] == "overload" and fault["instance"] == "scscf_session_controller"
    reverted = [e for e in events if e["event"] == "fault_reverted"]
    assert len(reverted) == 1 and 1.9 <= reverted[0]["at_s"] <= 2.6
    assert m["calls"] == 3

"""Fault plans: parsing, validation naming the field, seeded selection against a topology."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors import load_topology
from faults.plan import PlanError, builtin_plans, load_plan, parse_duration, parse_plan, resolve

TOPOLOGY = load_topology(Path(__file__).resolve().parents[2] / "topologies" / "default.toml")


def plan(fault: str, extra: str = "") -> str:
    return f'name = "t"\nseed = 7\n[[fault]]\n{fault}\n{extra}'


def test_builtin_plans_load_and_resolve_on_the_default_topology() -> None:
    names = builtin_plans()
    for required in ("silc-crash", "ailc-crash", "solc-crash", "mrfc-crash", "silc-hang",
                     "pcscf-scscf-partition", "lossy-link"):
        assert required in names
    for name in names:
        resolved = resolve(load_plan(name), TOPOLOGY)
        assert resolved and all(r.faults for r in resolved)


def test_silc_crash_is_the_papers_experiment() -> None:
    p = load_plan("silc-crash")
    (spec,) = p.faults
    assert (spec.kind, spec.target, spec.at_call, spec.on, spec.duration_s) == (
        "crash", "scscf.incoming_leg_control", 25, "started", None)
    assert p.load["call_interval_s"] == 1.0
    (rf,) = resolve(p, TOPOLOGY)
    assert [f.instance for f in rf.faults] == ["scscf_incoming_leg_control"]
    assert {c.name for c in p.checks} >= {"detection_at", "failover_within", "no_hanging_mrf_dialogs"}


@pytest.mark.parametrize(("value", "seconds"), [
    (2, 2.0), (0.5, 0.5), ("250ms", 0.25), ("2s", 2.0), ("1.5 s", 1.5), ("1m", 60.0), (".5s", 0.5)])
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value, "x") == seconds


@pytest.mark.parametrize("toml_value", ['"2 hours"', '"fast"', '"-1s"', "-3", "true", '"1e400s"', '""', "inf"])
def test_malformed_durations_name_the_field(toml_value: str) -> None:
    with pytest.raises(PlanError, match=r"fault\[0\]\.duration"):
        parse_plan(plan(f'kind = "hang"\ntarget = "pcscf"\nduration = {toml_value}'))


@pytest.mark.parametrize(("body", "field"), [
    ('kind = "meteor"\ntarget = "pcscf"', r"fault\[0\]\.kind: unknown fault kind 'meteor'"),
    ('kind = "crash"', r"fault\[0\]: give exactly one of target"),
    ('kind = "partition"\ntarget = "pcscf"', r"fault\[0\]\.target: a partition fault needs a link"),
    ('kind = "crash"\nlink = ["pcscf", "hss"]', r"fault\[0\]\.link: a crash fault acts on an instance"),
    ('kind = "crash"\ntarget = "pcscf"\nmode = "some"', r"fault\[0\]\.mode"),
    ('kind = "crash"\ntarget = "pcscf"\nmode = "fixed"', r"fault\[0\]\.value: mode fixed needs a number"),
    ('kind = "crash"\ntarget = "pcscf"\nmode = "percent"\nvalue = 150', r"fault\[0\]\.value"),
    ('kind = "crash"\ntarget = "pcscf"\nat = "1s"\nat_call = 3', r"fault\[0\]: give at .* not both"),
    ('kind = "crash"\ntarget = "pcscf"\nat_call = 0', r"fault\[0\]\.at_call"),
    ('kind = "crash"\ntarget = "pcscf"\ndirection = "inbound"', r"fault\[0\]\.direction: a crash fault has no direction"),
    ('kind = "loss"\nlink = ["pcscf", "hss"]\ndirection = "inbound"', r"fault\[0\]\.direction"),
    ('kind = "loss"\ntarget = "pcscf"', r"fault\[0\]\.params\.probability: loss needs probability"),
    ('kind = "loss"\ntarget = "pcscf"\nparams = {probability = 2}', r"fault\[0\]\.params\.probability: expected a probability"),
    ('kind = "delay"\ntarget = "pcscf"\nparams = {delay = "soon"}', r"fault\[0\]\.params\.delay"),
    ('kind = "delay"\ntarget = "pcscf"\nparams = {delay = 1, spin = 2}', r"fault\[0\]\.params\.spin: delay takes no parameter"),
    ('kind = "overload"\ntarget = "pcscf"\nparams = {rate = 10}', r"fault\[0\]\.duration: a overload fault needs a duration"),
    ('kind = "hang"\ntarget = "pcscf"\ncolour = 1', r"fault\[0\]\.colour: unknown key"),
])
def test_bad_faults_name_the_field(body: str, field: str) -> None:
    with pytest.raises(PlanError, match=field):
        parse_plan(plan(body), source="bad.toml")


def test_bad_plans_name_the_field() -> None:
    with pytest.raises(PlanError, match="bad.toml: fault: expected at least one"):
        parse_plan('name = "x"', source="bad.toml")
    with pytest.raises(PlanError, match=r"bad.toml: check\[0\]\.check: unknown check"):
        parse_plan(plan('kind = "hang"\ntarget = "pcscf"', '[[check]]\ncheck = "sunny"'), source="bad.toml")
    with pytest.raises(PlanError, match="not valid TOML"):
        parse_plan("[[fault", source="bad.toml")
    with pytest.raises(PlanError, match="seed"):
        parse_plan('seed = "x"\n[[fault]]\nkind = "hang"\ntarget = "pcscf"')
    with pytest.raises(PlanError, match="no built-in plan 'nope'"):
        load_plan("nope")


def test_unknown_module_is_refused_naming_the_field() -> None:
    p = parse_plan(plan('kind = "crash"\ntarget = "scscf.imaginary"'), source="p.toml")
    with pytest.raises(PlanError, match=r"p.toml: fault\[0\]\.target: unknown module 'scscf.imaginary'"):
        resolve(p, TOPOLOGY)


def test_a_link_that_does_not_exist_is_refused() -> None:
    p = parse_plan(plan('kind = "partition"\nlink = ["pcscf", "hss"]'), source="p.toml")
    with pytest.raises(PlanError, match=r"fault\[0\]\.link: the topology has no link between pcscf and hss"):
        resolve(p, TOPOLOGY)


def test_backup_links_are_links_too_and_kinds_resolve_to_instances() -> None:
    p = parse_plan(plan('kind = "partition"\nlink = ["pcscf", "scscf.incoming_leg_control"]\ndirection = "forward"'))
    (rf,) = resolve(p, TOPOLOGY)
    (fault,) = rf.faults
    assert fault.link == ("pcscf", "scscf_incoming_leg_control") and fault.direction == "forward"


def test_faults_the_topology_cannot_carry() -> None:
    p = parse_plan(plan('kind = "overload"\ntarget = "hss"\nduration = "1s"\nparams = {rate = 5}'), source="p.toml")
    with pytest.raises(PlanError, match=r"fault\[0\]\.target: overload sends SIP, but hss"):
        resolve(p, TOPOLOGY)
    p = parse_plan(plan('kind = "crash"\ntarget = "pcscf"\nmode = "fixed"\nvalue = 2'), source="p.toml")
    with pytest.raises(PlanError, match=r"fault\[0\]\.value: fixed 2 but the topology has only 1"):
        resolve(p, TOPOLOGY)
    p = parse_plan(plan('kind = "hang"\ntarget = "pcscf"'), source="p.toml")
    with pytest.raises(PlanError, match=r"fault\[0\]\.target: pcscf does not run in this process"):
        resolve(p, TOPOLOGY, local={"hss"})


def test_an_instance_name_and_a_single_instance_kind_select_that_instance() -> None:
    for target in ("pcscf", "scscf_session_controller", "scscf.session_controller"):
        p = parse_plan(plan(f'kind = "hang"\ntarget = "{target}"'))
        (fault,) = resolve(p, TOPOLOGY)[0].faults
        assert fault.instance in ("pcscf", "scscf_session_controller")


def test_selection_modes_are_seeded_like_chaos_mesh() -> None:
    text = (Path(__file__).resolve().parents[2] / "topologies" / "default.toml").read_text()
    extra = "".join(
        f'\n[nf.silc{i}]\nkind = "scscf.incoming_leg_control"\nport = 0\n' for i in range(1, 10)
    )
    from actors.topology import parse_topology

    topology = parse_topology(text + extra)
    picks = []
    for _ in range(2):
        p = parse_plan(plan('kind = "hang"\ntarget = "scscf.incoming_leg_control"\nmode = "percent"\nvalue = 30'))
        picks.append([f.instance for f in resolve(p, topology)[0].faults])
    assert picks[0] == picks[1] and len(picks[0]) == 3
    p = parse_plan(plan('kind = "hang"\ntarget = "scscf.incoming_leg_control"\nmode = "fixed"\nvalue = 4'))
    assert len(resolve(p, topology)[0].faults) == 4
    p = parse_plan(plan('kind = "hang"\ntarget = "scscf.incoming_leg_control"\nmode = "all"'))
    assert len(resolve(p, topology)[0].faults) == 10
    p = parse_plan(plan('kind = "hang"\ntarget = "scscf.incoming_leg_control"\nmode = "percent"\nvalue = 1'))
    assert len(resolve(p, topology)[0].faults) == 1  # at least one instance for any percentage > 0
    p = parse_plan(plan('kind = "hang"\ntarget = "scscf.incoming_leg_control"\nmode = "one"'))
    seeded = {resolve(p, topology)[0].faults[0].instance for _ in range(3)}
    assert len(seeded) == 1

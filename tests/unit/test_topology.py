"""Topologies: the default file, the model's helpers, and errors that name the file and the field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from actors.topology import (
    IMS_KINDS,
    Link,
    NFInstance,
    Topology,
    TopologyError,
    load_topology,
    parse_topology,
    with_ephemeral_ports,
)

DEFAULT = Path(__file__).resolve().parents[2] / "topologies" / "default.toml"

CALL_PATH = [
    "ue_pool",
    "pcscf",
    "scscf_session_controller",
    "scscf_incoming_leg_control",
    "as_incoming_leg_control",
    "as_application_logic",
    "as_media_policy",
    "as_outgoing_leg_control",
    "scscf_outgoing_leg_control",
    "pcscf",
    "ue_pool",
]

# ---------------------------------------------------------------------- the default topology


@pytest.fixture(scope="module")
def default() -> Topology:
    return load_topology(DEFAULT, kinds=IMS_KINDS)


def test_default_topology_has_every_module_of_the_call_path(default):
    assert default.domain == "ims.example"
    assert default.mode in ("baseline", "refactored")
    assert isinstance(default.seed, int)
    assert {nf.kind for nf in default} == set(IMS_KINDS)
    assert len(default) == 12
    assert default.source == str(DEFAULT)
    assert dict(default.processes()) == {"main": tuple(default.nfs)}


def test_default_addresses_are_pcscf_5060_and_the_rest_5061_up(default):
    assert default.address_of("pcscf") == ("127.0.0.1", 5060)
    others = sorted(nf.port for nf in default if nf.name != "pcscf")
    assert others == list(range(5061, 5061 + 11))
    assert all(nf.host == "127.0.0.1" for nf in default)


def test_default_primary_links_follow_the_call_path(default):
    primary = {(link.src, link.dst) for link in default.links if link.role == "primary"}
    for src, dst in zip(CALL_PATH, CALL_PATH[1:]):
        assert (src, dst) in primary
    assert ("scscf_session_controller", "hss") in primary
    assert ("as_media_policy", "mrfc") in primary and ("mrfc", "mrfp") in primary
    assert default.downstream("scscf_session_controller") == ("scscf_incoming_leg_control", "hss")
    assert default.upstream("pcscf") == ("ue_pool", "scscf_outgoing_leg_control")
    assert set(default.neighbours("pcscf")) == {"ue_pool", "scscf_session_controller", "scscf_outgoing_leg_control"}


def test_default_backup_links_join_each_module_to_its_neighbours_neighbours(default):
    # The paper's example: the Session Controller reaches AS Incoming Leg Control directly.
    assert default.backups_around("scscf_session_controller", "scscf_incoming_leg_control") == (
        "as_incoming_leg_control",
    )
    assert default.backups_around("as_incoming_leg_control", "scscf_incoming_leg_control") == (
        "scscf_session_controller",
    )
    modules = CALL_PATH[1:-1]
    backups = {(link.src, link.dst, link.bypass) for link in default.links if link.role == "backup"}
    for before, middle, after in zip(modules, modules[1:], modules[2:]):
        assert (before, after, middle) in backups, (before, middle, after)
    assert len(backups) == len(modules) - 2
    for link in default.links_of("pcscf", "backup"):
        assert "ue_pool" not in link.ends


def test_default_topology_is_unlimited_and_table_ii_capacities_parse(default):
    assert all(default.capacity_of(nf.name) is None for nf in default)  # the demo runs unlimited
    table_ii = parse_topology(
        '[capacity]\npcscf = 500\n"scscf.session_controller" = 200\n'
        '[nf.p]\nkind = "pcscf"\n[nf.s]\nkind = "scscf.session_controller"\nport = 1\n[nf.h]\nkind = "hss"\nport = 2\n'
    )
    assert table_ii.capacity_of("p") == 500
    assert table_ii.capacity_of("s") == 200
    assert table_ii.capacity_of("h") is None  # kinds not listed are unlimited


def test_the_model_is_frozen(default):
    with pytest.raises(dataclasses.FrozenInstanceError):
        default.mode = "baseline"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        default["pcscf"].port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        default.nfs["x"] = default["pcscf"]  # type: ignore[index]
    with pytest.raises(TypeError):
        default["ue_pool"].options["users"] = 1  # type: ignore[index]
    assert hash(default["pcscf"]) == hash(default["pcscf"])


def test_ephemeral_helper_sets_every_port_to_zero_and_keeps_the_rest(default):
    eph = with_ephemeral_ports(default)
    assert {nf.port for nf in eph} == {0}
    assert [nf.name for nf in eph] == [nf.name for nf in default]
    assert [nf.kind for nf in eph] == [nf.kind for nf in default]
    assert eph.links == default.links and eph.mode == default.mode
    assert default.address_of("pcscf") == ("127.0.0.1", 5060)  # the original is unchanged
    bound = eph.with_addresses({"pcscf": ("127.0.0.1", 40000)})
    assert bound.address_of("pcscf") == ("127.0.0.1", 40000)
    with pytest.raises(KeyError):
        eph.with_addresses({"nope": ("127.0.0.1", 1)})


# ---------------------------------------------------------------------- parsing


MINIMAL = """
domain = "test.example"
mode = "baseline"
seed = 42

[capacity]
pcscf = 500
hss = "unlimited"

[nf.pcscf]
kind = "pcscf"
port = 5060
capacity = 250
[nf.pcscf.options]
retries = 5
timers = { t1 = 0.5, names = ["a", "b"] }

[nf.hss]
kind = "hss"
host = "::1"
port = 5060
process = "db"

[[link]]
from = "pcscf"
to = "hss"
delay_ms = 2.5
loss = 0.01
"""


def test_minimal_topology_from_text():
    topo = load_topology(MINIMAL)
    assert topo.source == "<string>"
    assert (topo.domain, topo.mode, topo.seed) == ("test.example", "baseline", 42)
    assert topo["pcscf"] == NFInstance(
        name="pcscf", kind="pcscf", host="127.0.0.1", port=5060, process="main", capacity=250.0,
        options=topo["pcscf"].options,
    )
    assert topo["pcscf"].options["timers"]["names"] == ("a", "b")
    assert topo["hss"].address == ("::1", 5060)  # same port, different host: fine
    assert topo.links == (Link("pcscf", "hss", "primary", None, 2.5, 0.01),)
    assert topo.capacity_of("pcscf") == 250.0  # per-instance override
    assert topo.capacity_of("hss") is None  # "unlimited"
    assert dict(topo.processes()) == {"main": ("pcscf",), "db": ("hss",)}


def test_defaults_fill_in_the_optional_settings():
    topo = parse_topology('[nf.a]\nkind = "x"\n')
    assert (topo.domain, topo.mode, topo.seed) == ("ims.example", "refactored", 0)
    assert topo["a"].address == ("127.0.0.1", 0) and topo["a"].process == "main"
    assert topo.links == () and dict(topo.capacity) == {}


def test_port_zero_may_repeat():
    topo = parse_topology('[nf.a]\nkind = "x"\nport = 0\n[nf.b]\nkind = "x"\nport = 0\n')
    assert [nf.port for nf in topo] == [0, 0]


def test_loading_a_file_by_str_and_by_path(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text(MINIMAL)
    assert load_topology(str(path)).source == str(path)
    assert load_topology(path)["hss"].process == "db"


def test_unreadable_file_is_a_topology_error(tmp_path):
    missing = tmp_path / "missing.toml"
    with pytest.raises(TopologyError, match=r"missing\.toml: cannot read"):
        load_topology(missing)


def test_registry_accepts_known_kinds_and_rejects_others():
    parse_topology('[nf.a]\nkind = "pcscf"\n', kinds={"pcscf"})
    with pytest.raises(TopologyError) as err:
        parse_topology('[nf.a]\nkind = "pcsfc"\n', source="k.toml", kinds={"pcscf", "hss"})
    assert str(err.value) == 'k.toml: nf.a.kind: unknown kind "pcsfc" (known: hss, pcscf)'
    with pytest.raises(TopologyError, match=r"^k\.toml: capacity\.mrf: unknown kind"):
        parse_topology('[capacity]\nmrf = 1\n[nf.a]\nkind = "pcscf"\n', source="k.toml", kinds={"pcscf"})


# ---------------------------------------------------------------------- errors


NF_A = '[nf.a]\nkind = "x"\n'
NF_AB = NF_A + '[nf.b]\nkind = "x"\n'

BAD = [
    pytest.param(
        '[nf.pcscf]\nkind = "pcscf"\nport = "abc"\n',
        'default.toml: nf.pcscf.port: expected an integer 0..65535, got "abc"',
        id="port-string",
    ),
    pytest.param(
        '[nf.pcscf]\nkind = "pcscf"\nport = 70000\n',
        "default.toml: nf.pcscf.port: expected an integer 0..65535, got 70000",
        id="port-range",
    ),
    pytest.param(
        '[nf.pcscf]\nkind = "pcscf"\nport = true\n',
        "default.toml: nf.pcscf.port: expected an integer 0..65535, got true",
        id="port-bool",
    ),
    pytest.param(
        "colour = 1\n" + NF_A,
        "default.toml: colour: unknown key (expected one of: description, domain, mode, seed, capacity, nf, link)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        '[nf.a]\nkind = "x"\nprot = 5\n',
        "default.toml: nf.a.prot: unknown key (expected one of: kind, host, port, process, capacity, options)",
        id="unknown-nf-key",
    ),
    pytest.param('[nf.a]\nport = 5\n', "default.toml: nf.a.kind: missing", id="missing-kind"),
    pytest.param('seed = 1\n', "default.toml: nf: missing: a topology needs at least one [nf.<name>] table", id="no-nf"),
    pytest.param(
        '[nf.a]\nkind = "x"\nport = 5060\n[nf.b]\nkind = "y"\nport = 5060\n',
        "default.toml: nf.b.port: 127.0.0.1:5060 is already used by nf.a (127.0.0.1:5060)",
        id="duplicate-host-port",
    ),
    pytest.param(
        '[nf.a]\nkind = "x"\nhost = "0.0.0.0"\nport = 5060\n[nf.b]\nkind = "y"\nport = 5060\n',
        "default.toml: nf.b.port: 127.0.0.1:5060 is already used by nf.a (0.0.0.0:5060)",
        id="duplicate-with-wildcard",
    ),
    pytest.param(
        '[nf.a]\nkind = "x"\nhost = "not a host!"\n',
        'default.toml: nf.a.host: expected an IP address or host name, got "not a host!"',
        id="bad-host",
    ),
    pytest.param(
        NF_A + '[[link]]\nfrom = "a"\nto = "ghost"\n',
        'default.toml: link[0].to: unknown instance "ghost"',
        id="link-to-unknown",
    ),
    pytest.param(
        NF_A + '[[link]]\nto = "a"\n',
        "default.toml: link[0].from: missing",
        id="link-missing-end",
    ),
    pytest.param(
        NF_A + '[[link]]\nfrom = "a"\nto = "a"\n',
        'default.toml: link[0].to: a link cannot join "a" to itself',
        id="self-link",
    ),
    pytest.param(
        NF_AB + '[[link]]\nfrom = "a"\nto = "b"\nrole = "spare"\n',
        'default.toml: link[0].role: expected "primary" or "backup", got "spare"',
        id="bad-role",
    ),
    pytest.param(
        NF_AB + '[[link]]\nfrom = "a"\nto = "b"\nloss = 1.5\n',
        "default.toml: link[0].loss: expected a number 0.0..1.0, got 1.5",
        id="loss-range",
    ),
    pytest.param(
        NF_AB + '[[link]]\nfrom = "a"\nto = "b"\n[[link]]\nfrom = "a"\nto = "b"\ndelay_ms = -3\n',
        "default.toml: link[1].delay_ms: expected a number >= 0.0, got -3",
        id="negative-delay",
    ),
    pytest.param(
        NF_AB + '[[link]]\nfrom = "a"\nto = "b"\n[[link]]\nfrom = "a"\nto = "b"\n',
        "default.toml: link[1]: duplicate primary link a -> b (same as link[0])",
        id="duplicate-link",
    ),
    pytest.param(
        NF_AB + '[nf.c]\nkind = "x"\n[[link]]\nfrom = "a"\nto = "b"\n'
        '[[link]]\nfrom = "a"\nto = "c"\nrole = "backup"\nbypass = "b"\n',
        'default.toml: link[1].bypass: "b" is not a primary neighbour of "c"',
        id="bypass-not-between",
    ),
    pytest.param(
        NF_AB + '[link]\nfrom = "a"\nto = "b"\n',
        "default.toml: link: expected an array of tables ([[link]]), got a table",
        id="link-not-array",
    ),
    pytest.param(
        'mode = "fast"\n' + NF_A,
        'default.toml: mode: expected "baseline" or "refactored", got "fast"',
        id="bad-mode",
    ),
    pytest.param(
        'seed = 1.5\n' + NF_A,
        "default.toml: seed: expected an integer, got 1.5",
        id="bad-seed",
    ),
    pytest.param(
        "[capacity]\npcscf = -500\n" + NF_A,
        'default.toml: capacity.pcscf: expected a positive number or "unlimited", got -500',
        id="negative-capacity",
    ),
    pytest.param(
        '[nf.a]\nkind = "x"\ncapacity = -1\n',
        'default.toml: nf.a.capacity: expected a positive number or "unlimited", got -1',
        id="negative-instance-capacity",
    ),
    pytest.param(
        '[nf.a]\nkind = "x"\noptions = 3\n',
        "default.toml: nf.a.options: expected a table, got 3",
        id="options-not-table",
    ),
    pytest.param(
        '[nf."1st"]\nkind = "x"\n',
        "default.toml: nf.1st: an instance name must be letters, digits, _ and -, not starting with a digit",
        id="bad-name",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_errors_name_the_file_and_the_field(text, message):
    with pytest.raises(TopologyError) as err:
        parse_topology(text, source="default.toml")
    assert str(err.value) == message
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('domain = "ims.example"\n\n[nf.a]\nkind = "x"\nport = = 5\n', 5, "Invalid value"),
        ('[nf.a]\nkind = "x"\n[nf.a]\nkind = "y"\n', 3, "Cannot declare ('nf', 'a') twice"),
        ('[nf.a]\nkind = "x\n', 2, "Illegal character '\\n'"),
    ],
    ids=["double-equals", "duplicate-table", "unterminated-string"],
)
def test_toml_syntax_errors_report_the_line(text, line, reason):
    # The column is tomllib's own and may move between Python versions; the line may not.
    with pytest.raises(TopologyError) as err:
        parse_topology(text, source="default.toml")
    message = str(err.value)
    assert message.startswith(f"default.toml: line {line}, column ")
    assert message.endswith(f": TOML syntax error: {reason}")


def test_errors_from_a_file_name_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('mode = "baseline"\n[nf.pcscf]\nkind = "pcscf"\nport = "abc"\n')
    with pytest.raises(TopologyError) as err:
        load_topology(path)
    assert str(err.value) == f'{path}: nf.pcscf.port: expected an integer 0..65535, got "abc"'

    path.write_text('mode = "baseline"\n[nf.pcscf\n')
    with pytest.raises(TopologyError, match=rf"^{path}: line 2, column 10: TOML syntax error"):
        load_topology(str(path))


def test_without_drops_instances_and_their_links() -> None:
    from actors.topology import load_topology

    full = load_topology(Path(__file__).resolve().parents[2] / "topologies" / "default.toml")
    smaller = full.without("ue_pool", "hss")
    assert "ue_pool" not in smaller.nfs and "hss" not in smaller.nfs
    assert len(smaller) == len(full) - 2
    assert all("ue_pool" not in link.ends and "hss" not in link.ends for link in smaller.links)
    with pytest.raises(KeyError, match="nobody"):
        full.without("nobody")

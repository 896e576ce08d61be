"""The constructor arguments ``deploy`` builds from a topology: modes and media options of the
MRFP, the MRFC and the AS Media Policy, and errors naming the offending field."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from actors import load_topology
from actors.topology import Topology
from nf_modules.deployment import _constructor_args
from nf_modules.media_scripts import ScriptLibrary

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "topologies" / "default.toml"
CHARGING = ROOT / "topologies" / "charging.toml"


def _args(topology: Topology, name: str, **options: Any) -> dict[str, Any]:
    nf = topology[name]
    if options:
        nf = dataclasses.replace(nf, options={**nf.options, **options})
    addresses = {n.name: n.address for n in topology}
    return _constructor_args(topology, nf, addresses)


@pytest.fixture(params=["baseline", "refactored"])
def topology(request: pytest.FixtureRequest) -> Topology:
    return dataclasses.replace(load_topology(DEFAULT), mode=request.param)


def test_baseline_topology_args_of_the_media_modules(topology: Topology) -> None:
    mrfp = _args(topology, "mrfp")
    assert mrfp == {"port_range": (20000, 29999), "mode": topology.mode}
    mrfc = _args(topology, "mrfc")
    assert mrfc["mode"] == topology.mode
    assert mrfc["mrfp"] == topology["mrfp"].address
    assert "domain" not in mrfc
    policy = _args(topology, "as_media_policy")
    assert policy["mode"] == topology.mode and policy["mrfc"] == topology["mrfc"].address
    assert not {"scripts", "script_capacity", "script_queue_limit", "script_server"} & set(policy)


def test_mrfp_media_options_become_engine_and_media_update_arguments(topology: Topology) -> None:
    args = _args(topology, "mrfp", metadata_interval=0.05, hold_limit=64, native=False, alpha=0.3,
                 predict_batch=3, refresh=1.5, deviation=0.1, predictor="delta")
    assert args["metadata_interval"] == 0.05 and args["hold_limit"] == 64 and args["native"] is False
    assert args["update_options"] == {"alpha": 0.3, "batch": 3, "refresh": 1.5, "deviation": 0.1,
                                      "predictor": "delta"}


def test_mrfc_and_media_policy_options(topology: Topology) -> None:
    mrfc = _args(topology, "mrfc", media_capacity=200, media_queue_limit=50, script_timeout=0.5)
    assert (mrfc["media_capacity"], mrfc["media_queue_limit"], mrfc["script_timeout"]) == (200.0, 50, 0.5)
    assert _args(topology, "mrfc", media_capacity=0)["media_capacity"] is None  # 0: unlimited
    scripts = {"call": {"rules": [{"name": "g711", "when": {"payload_size": [160, 240]},
                                   "then": {"codec": "PCMU", "bitrate_kbps": 64, "ptime_ms": 20}}]}}
    policy = _args(topology, "as_media_policy", script_capacity=100, script_queue_limit=10, script_server=False)
    assert (policy["script_capacity"], policy["script_queue_limit"], policy["script_server"]) == (100.0, 10, False)
    assert isinstance(_args(topology, "as_media_policy", scripts=scripts)["scripts"], ScriptLibrary)


@pytest.mark.parametrize(("name", "key", "value"), [
    ("mrfp", "metadata_interval", 0),
    ("mrfp", "hold_limit", 1.5),
    ("mrfp", "native", "yes"),
    ("mrfp", "alpha", 1.5),
    ("mrfp", "predict_batch", 0),
    ("mrfp", "refresh", -1),
    ("mrfp", "deviation", "x"),
    ("mrfp", "predictor", "oracle"),
    ("mrfc", "media_capacity", -5),
    ("mrfc", "media_queue_limit", 0),
    ("mrfc", "script_timeout", 0),
    ("as_media_policy", "script_capacity", "fast"),
    ("as_media_policy", "script_queue_limit", -1),
    ("as_media_policy", "script_server", 1),
    ("as_media_policy", "scripts", {"call": 3}),
    ("as_media_policy", "scripts", {"call": {"rules": "nonsense"}}),
])
def test_a_bad_media_option_is_refused_naming_the_field(topology: Topology, name: str, key: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"nf\.{name}\.options\.{key}"):
        _args(topology, name, **{key: value})


def test_charging_topology_gives_the_mrfp_its_pcrf() -> None:
    topology = load_topology(CHARGING)
    args = _args(topology, "mrfp", report_interval=0.5)
    assert args["pcrf"] == topology["pcrf"].address and args["report_interval"] == 0.5
    assert _args(topology, "pcscf")["pcrf"] == topology["pcrf"].address
    assert "pcrf" not in _args(dataclasses.replace(load_topology(DEFAULT)), "mrfp")

"""Failover pieces: the announcement (SIP NOTIFY over a backup link), the rerouted endpoint,
the event log, and the deployment's failover configuration from the topology's backup links."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors import load_topology
from actors.sip.message import SipMessage
from nf_modules.deployment import _constructor_args, _failover_config
from nf_modules.failover import (
    Announcement,
    FailoverLog,
    ReroutedEndpoint,
    build_announcement,
    is_announcement,
    parse_address,
    parse_announcement,
)
from nf_modules.scscf import ScscfIncomingLegControl

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "default.toml"


def test_announcement_round_trips_through_the_wire() -> None:
    sent = build_announcement(("127.0.0.1", 5061), ("127.0.0.1", 5065),
                              Announcement(("127.0.0.1", 5062), ("127.0.0.1", 40001), "scscf_ilc"))
    received = SipMessage.parse(bytes(sent))
    assert received.method == "NOTIFY" and received.uri == "sip:127.0.0.1:5065"
    assert is_announcement(received)
    assert parse_announcement(received) == Announcement(("127.0.0.1", 5062), ("127.0.0.1", 40001), "scscf_ilc")


@pytest.mark.parametrize("body, message", [
    (b"replacement=127.0.0.1:1\r\n", "without failed="),
    (b"failed=127.0.0.1:1\r\n", "without replacement="),
    (b"failed=nohost\r\nreplacement=127.0.0.1:1\r\n", "host:port"),
    (b"failed=127.0.0.1:99999\r\nreplacement=127.0.0.1:1\r\n", "host:port"),
    (b"garbage\r\n", "without '='"),
    (b"\xff\xfe", "ASCII"),
])
def test_bad_announcements_are_refused_with_a_reason(body: bytes, message: str) -> None:
    notify = build_announcement(("127.0.0.1", 1), ("127.0.0.1", 2),
                                Announcement(("127.0.0.1", 3), ("127.0.0.1", 4)))
    notify.body = body
    with pytest.raises(ValueError, match=message):
        parse_announcement(notify)


def test_other_notifies_are_not_announcements() -> None:
    notify = build_announcement(("h", 1), ("h", 2), Announcement(("h", 3), ("h", 4)))
    notify.set("Event", "presence")
    assert not is_announcement(notify)
    assert parse_address(" 10.0.0.1:5060 ") == ("10.0.0.1", 5060)


class _Endpoint:
    def __init__(self) -> None:
        self.sent: list = []
        self.seam = None
        self.stats = "stats"

    def send(self, data: bytes, addr: tuple) -> None:
        self.sent.append((data, addr))


def test_rerouted_endpoint_follows_deactivated_links_and_delegates_the_rest() -> None:
    inner = _Endpoint()
    routes: dict = {}
    endpoint = ReroutedEndpoint(inner, routes)
    endpoint.send(b"a", ("h", 1))
    routes[("h", 1)] = ("h", 9)  # the link table changes in place
    endpoint.send(b"b", ("h", 1))
    endpoint.send(b"c", ("h", 2))
    assert inner.sent == [(b"a", ("h", 1)), (b"b", ("h", 9)), (b"c", ("h", 2))]
    endpoint.seam = "fault"  # a fault injector setting the seam reaches the real endpoint
    assert inner.seam == "fault" and endpoint.stats == "stats" and endpoint.inner is inner


def test_failover_log_records_and_forwards_to_the_sink() -> None:
    seen: list = []
    log = FailoverLog("sc", sink=lambda event, **kw: seen.append((event, kw["at"], kw["failed"])))
    entry = log.record("hop_failed", 2.0, failed="scscf_ilc")
    assert entry["event"] == "hop_failed" and entry["module"] == "sc" and "wall" in entry
    assert seen == [("hop_failed", 2.0, "scscf_ilc")]


def test_deployment_builds_targets_and_announcement_peers_from_backup_links() -> None:
    topology = load_topology(TOPOLOGY)
    addresses = {nf.name: nf.address for nf in topology}
    config = _failover_config(topology, topology["scscf_session_controller"], addresses)
    silc = addresses["scscf_incoming_leg_control"]
    assert set(config["failover_targets"]) == {silc}  # the HSS is not a SIP neighbour
    target = config["failover_targets"][silc]
    assert target.cls is ScscfIncomingLegControl and target.name == "scscf_incoming_leg_control"
    assert target.announce_to() == (("as_incoming_leg_control", addresses["as_incoming_leg_control"]),)
    kwargs = target.kwargs()
    assert kwargs["downstream"] == addresses["as_incoming_leg_control"] and kwargs["mode"] == "refactored"
    assert addresses["pcscf"] in config["supervised_hops"] and silc in config["supervised_hops"]
    assert addresses["hss"] not in config["supervised_hops"]
    mp = _failover_config(topology, topology["as_media_policy"], addresses)
    assert {t.name for t in mp["failover_targets"].values()} == {"as_outgoing_leg_control", "mrfc"}


def test_detector_options_are_checked_and_named() -> None:
    text = TOPOLOGY.read_text().replace('[nf.scscf_session_controller]\nkind = "scscf.session_controller"',
                                        '[nf.scscf_session_controller]\nkind = "scscf.session_controller"\n'
                                        'options = { timer_a = 0.5, timer_b = "soon" }')
    topology = load_topology(text)
    addresses = {nf.name: nf.address for nf in topology}
    with pytest.raises(ValueError, match=r"nf.scscf_session_controller.options.timer_b"):
        _constructor_args(topology, topology["scscf_session_controller"], addresses)

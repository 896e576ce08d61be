"""SIPp against the whole emulated IMS: every module of ``topologies/default.toml`` (P-CSCF, the
S-CSCF's three modules, HSS, the AS's four modules, MRFC, MRFP, a UE pool of 50 users), deployed
in-process on ports of the test's block, the UE pool registered through the P-CSCF with digest.

1. SIPp's stock ``uac`` calls emulated UEs through the P-CSCF: ``sip:ue0002@<P-CSCF>`` and ACK/BYE
   without Route, which the P-CSCF routes by its dialog state.
2. ``scenarios/uac_auth.xml``: SIPp registers ``ue0010`` with digest through the P-CSCF, then
   calls emulated UEs, honouring the route set.
3. A SIPp UAS (``uas_record_route.xml``) takes a subscriber's calls once ``register_digest.xml``
   has registered its Contact with digest (the HSS delivers to the newest binding; the UE pool's
   older binding of that user stays), and the UE pool's users call it.
4. SIPp's stock ``uac`` calls that SIPp UAS through the IMS.

Each test captures on loopback from before the IMS starts: tshark must decode every datagram a SIP
module sends (registrations included) as SIP, without malformed packets or expert warnings, and
see every SIPp call's messages.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.interop.conftest import (
    HOST,
    Capture,
    ImsUnderTest,
    PortBlock,
    Sipp,
    SippResult,
    SippRun,
    assert_every_call_has,
    assert_sent_cleanly,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

DOMAIN = "ims.example"
PASSWORD = "secret"
RATE = 10  # calls/s per SIPp run

UAC_SENDS = ("INVITE", "ACK", "BYE")
UAS_SENDS = ("180 INVITE", "200 INVITE", "200 BYE")


@pytest.fixture
def ports() -> PortBlock:
    """A bigger block than the default: 12 modules, the MRFP's RTP ports and several SIPp runs."""
    return PortBlock(size=120)


@pytest.fixture
def ims(tshark_capture: Capture, ims_factory: Callable[..., ImsUnderTest]) -> ImsUnderTest:
    """The IMS, started once the capture runs, so the capture sees every datagram it sends."""
    return ims_factory()


def assert_ok(result: SippResult, calls: int) -> None:
    assert result.ok and result.successful == calls and result.failed == 0, result.report()


def assert_calls_over(ims: ImsUnderTest, calls: int) -> None:
    """Every call's P-CSCF dialog reached Morgue and its MRF dialog Ended; nothing is left open."""
    morgue = ims.wait_for(
        f"{calls} P-CSCF dialogs in Morgue",
        lambda: (d := ims.pcscf_dialogs())["Morgue"] == calls and d,
    )
    assert sum(morgue.values()) == calls, morgue
    mrf = ims.wait_for(f"{calls} MRF dialogs Ended", lambda: (d := ims.mrf_dialogs())["Ended"] == calls and d)
    assert sum(mrf.values()) == calls, mrf
    assert ims.ask("scscf_incoming_leg_control", "get_sessions") == 0
    assert ims.ask("as_media_policy", "get_calls") == {}
    assert not ims.dead()


def assert_clean_capture(capture: Capture, ims: ImsUnderTest, sipp: dict[int, tuple[int, tuple[str, ...]]]) -> None:
    """tshark decodes everything the modules sent (registrations included) as clean SIP, and each
    SIPp port in ``sipp`` (port -> (calls, labels)) sent that many calls with those messages."""
    decoded = capture.decode(ims.sip_nodes)
    assert_sent_cleanly(decoded, ims.sip_nodes)
    for port, (calls, labels) in sipp.items():
        assert_every_call_has(decoded, port, calls, labels)


def register_contact(
    sipp: Sipp, ims: ImsUnderTest, user: str, contact: tuple[str, int], expires: int = 600
) -> SippResult:
    """``register_digest.xml``: one REGISTER exchange binding ``sip:user@contact`` with digest."""
    host, port = contact
    return sipp.run(
        "register_digest", ims.pcscf.address, calls=1, rate=1, timeout=15,
        extra=["-key", "user", user, "-key", "domain", DOMAIN, "-key", "contact", f"{host}:{port}",
               "-key", "expires", str(expires), "-au", user, "-ap", PASSWORD],
    )  # fmt: skip


def sipp_uas_for(sipp: Sipp, ims: ImsUnderTest, user: str, calls: int) -> SippRun:
    """A SIPp UAS that answers ``user``'s next ``calls`` calls: started, then registered as ``user``."""
    uas = sipp.start("uas_record_route", calls=calls, timeout=30)
    registered = register_contact(sipp, ims, user, uas.address)
    assert registered.ok, registered.report()
    newest = ims.bindings(user)[-1]
    assert newest["contact"] == f"sip:{user}@{HOST}:{uas.port}", ims.bindings(user)
    return uas


def test_stock_uac_calls_emulated_ues(ims: ImsUnderTest, sipp: Sipp, tshark_capture: Capture) -> None:
    """Stock ``uac`` with ``-s ueNNNN``: R-URI ``sip:ueNNNN@<P-CSCF>``, ACK and BYE without Route."""
    callees = {"ue0002": 10, "ue0017": 3, "ue0050": 3}
    before = ims.stats("ue_pool")

    runs = {
        user: sipp.start("uac", ims.pcscf.address, calls=n, rate=RATE, service=user, timeout=30)
        for user, n in callees.items()
    }
    results = {user: run.wait() for user, run in runs.items()}

    for user, result in results.items():
        assert_ok(result, callees[user])
    total = sum(callees.values())
    assert_calls_over(ims, total)
    after = ims.stats("ue_pool")
    assert after.get("calls_answered_in", 0) - before.get("calls_answered_in", 0) == total
    assert_clean_capture(tshark_capture, ims, {runs[u].port: (n, UAC_SENDS) for u, n in callees.items()})


def test_sipp_registers_with_digest_then_calls(
    ims: ImsUnderTest, sipp: Sipp, tshark_capture: Capture, tmp_path: Path
) -> None:
    """``uac_auth.xml``: each call REGISTERs ue0010 (401, digest, 200), then calls an emulated UE."""
    callees = ["ue0002", "ue0003", "ue0040", "ue0049", "ue0002"]
    inf = tmp_path / "callees.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(f"{c};\n" for c in callees))
    user = "ue0010"

    run = sipp.start(
        "uac_auth", ims.pcscf.address, calls=len(callees), rate=RATE, timeout=30,
        extra=["-key", "user", user, "-key", "domain", DOMAIN, "-au", user, "-ap", PASSWORD, "-inf", str(inf)],
    )  # fmt: skip
    result = run.wait()

    assert_ok(result, len(callees))
    bindings = ims.bindings(user)
    contacts = [b["contact"] for b in bindings]
    assert contacts[-1] == f"sip:{user}@{HOST}:{run.port}", bindings  # SIPp's, newest
    assert f"sip:{user}@{HOST}:{ims.nodes['ue_pool'].port}" in contacts  # the pool's stays
    assert bindings[-1]["path"] == [f"<sip:{HOST}:{ims.pcscf.port};lr>"]
    assert 590 <= bindings[-1]["expires"] <= 600
    sc = ims.stats("scscf_session_controller")
    assert sc["register_challenged"] >= 50 + len(callees) and not sc.get("register_forbidden"), sc
    assert_calls_over(ims, len(callees))
    decoded = tshark_capture.decode(ims.sip_nodes)
    assert_sent_cleanly(decoded, ims.sip_nodes)
    by_call = decoded.by_call(run.port)  # the REGISTERs' Call-IDs are reg///<the call's>
    registers = {c: labels for c, labels in by_call.items() if c.startswith("reg///")}
    invites = {c: labels for c, labels in by_call.items() if c not in registers}
    assert len(registers) == len(invites) == len(callees), by_call
    assert all(labels == ["REGISTER", "REGISTER"] for labels in registers.values()), registers
    assert all(set(UAC_SENDS) <= set(labels) for labels in invites.values()), invites
    answers = [p.label for p in decoded.sip(ims.pcscf.port) if p.dst_port == run.port and p.status]
    assert answers.count("401 REGISTER") == answers.count("200 REGISTER") == len(callees), answers


def test_emulated_ues_call_a_registered_sipp_uas(ims: ImsUnderTest, sipp: Sipp, tshark_capture: Capture) -> None:
    """SIPp registers ue0020 (its Contact: a SIPp UAS) and answers the calls the UE pool places to it."""
    calls = 8
    uas = sipp_uas_for(sipp, ims, "ue0020", calls)

    callers = [(f"ue{i:04d}", "ue0020") for i in range(1, calls + 1)]
    results = ims.pool.call_many(callers, concurrency=4, timeout=10).get(timeout=50)
    result = uas.wait()

    failed = [f"{r.call_id}: INVITE {r.status}, BYE {r.bye_status}, {r.timeline}" for r in results if not r.completed]
    assert not failed, "\n".join(failed) + "\n" + result.report()
    assert_ok(result, calls)
    assert len(ims.bindings("ue0020")) == 2  # the pool's older binding stays; SIPp's took the calls
    assert ims.stats("ue_pool").get("calls_received", 0) == 0
    assert_calls_over(ims, calls)
    assert_clean_capture(tshark_capture, ims, {uas.port: (calls, UAS_SENDS)})


def test_sipp_uac_calls_sipp_uas_through_the_ims(ims: ImsUnderTest, sipp: Sipp, tshark_capture: Capture) -> None:
    """Stock ``uac`` -> P-CSCF -> S-CSCF -> AS (MRF) -> S-CSCF -> P-CSCF -> SIPp UAS registered as ue0030."""
    calls = 10
    uas = sipp_uas_for(sipp, ims, "ue0030", calls)

    uac = sipp.start("uac", ims.pcscf.address, calls=calls, rate=RATE, service="ue0030", timeout=30)
    uac_result = uac.wait()
    uas_result = uas.wait()

    assert_ok(uac_result, calls)
    assert_ok(uas_result, calls)
    assert ims.stats("ue_pool").get("calls_received", 0) == 0  # none went to the pool's binding
    assert_calls_over(ims, calls)
    assert_clean_capture(tshark_capture, ims, {uac.port: (calls, UAC_SENDS), uas.port: (calls, UAS_SENDS)})

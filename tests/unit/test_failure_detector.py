"""The paper's failure detector (Fig. 8 / Algorithm 2): exact timelines on a hand-held clock."""

import math

import pytest

from actors.sip.failure_detector import (
    FAILURE_DETECTOR_TABLE,
    DetectorState,
    Failover,
    FailureDetector,
    FailureDetectorConfig,
    FailureDetectorStateError,
    HopFailed,
    HopMonitor,
)
from actors.sip.message import SipMessage

HOP = ("127.0.0.1", 5071)
OTHER_HOP = ("127.0.0.1", 5072)
REQ = b"INVITE sip:bob@ims.example SIP/2.0\r\n...\r\n\r\n"


def run(det, until, answer_at=None):
    """Step the clock to each deadline (and to ``answer_at``, where the response arrives).
    Returns [(time, number of datagrams sent at that time)] and the events."""
    sends, events = [], []
    while True:
        t = det.get_timer()
        if answer_at is not None and (t is None or answer_at < t):
            det.response_received(answer_at)
            answer_at = None
            continue
        if t is None or t > until:
            break
        det.handle_timer(t)
        out = det.datagrams_to_send()
        assert all(d == (REQ, HOP) for d in out)
        if out:
            sends.append((t, len(out)))
        events += det.events()
    return sends, events


def forwarded(config=FailureDetectorConfig(), at=0.0):
    det = FailureDetector(REQ, HOP, config=config, key="branch-1")
    assert det.state is DetectorState.SIP_RECEIVED and det.get_timer() is None
    det.forward(at)
    assert det.datagrams_to_send() == [(REQ, HOP)]
    assert det.state is DetectorState.SIP_FORWARDED
    return det


def test_answered_at_0_3_is_done_without_resend():
    det = forwarded()
    assert det.timer_deadlines() == {"A": 1.0}
    det.response_received(0.3)
    assert det.state is DetectorState.DONE
    assert det.get_timer() is None and det.datagrams_to_send() == [] and det.events() == []
    assert det.resends == 0 and det.answered_at == 0.3
    det.handle_timer(5.0)
    assert det.datagrams_to_send() == []


def test_answered_at_1_3_after_two_resends():
    det = forwarded()
    sends, events = run(det, 10.0, answer_at=1.3)
    assert sends == [(1.0, 1), (1.2, 1)]
    assert det.state is DetectorState.DONE and det.resends == 2
    assert events == [] and det.get_timer() is None


def test_never_answered_five_resends_then_failover_at_2_0_without_resend():
    det = forwarded()
    sends, events = run(det, 100.0)
    assert [t for t, _ in sends] == pytest.approx([1.0, 1.2, 1.4, 1.6, 1.8], abs=1e-12)
    assert all(n == 1 for _, n in sends)
    assert det.resends == 5
    [ev] = events
    assert isinstance(ev, Failover) and ev.name == "failover"
    assert ev.next_hop == HOP and ev.key == "branch-1" and ev.request == REQ
    assert ev.at == 2.0 and ev.resends == 5 and ev.reason == "timer_b"
    assert det.state is DetectorState.FAILED and det.failed_at == 2.0
    assert det.get_timer() is None


def test_fast_retry_deadlines_step_by_step():
    det = forwarded()
    det.handle_timer(1.0)
    assert det.state is DetectorState.FAST_RETRY and det.fast_retry_at == 1.0
    assert det.datagrams_to_send() == [(REQ, HOP)]  # resent at once on entering Fast Retry
    assert det.timer_deadlines() == {"retry": 1.2, "B": 2.0}
    det.handle_timer(1.1999)  # early: nothing
    assert det.datagrams_to_send() == []
    for k in (1, 2, 3, 4):
        t = det.get_timer()
        assert t == pytest.approx(1.0 + 0.2 * k, abs=1e-12)
        det.handle_timer(t)
        assert det.datagrams_to_send() == [(REQ, HOP)]
    assert det.timer_deadlines() == {"B": 2.0}  # no resend scheduled at the instant B expires
    det.handle_timer(2.0)
    assert det.datagrams_to_send() == []
    assert [e.name for e in det.events()] == ["failover"]


def test_a_100_trying_counts_as_a_response():
    det = forwarded()
    det.handle_timer(1.0)
    det.datagrams_to_send()
    trying = SipMessage.parse(
        b"SIP/2.0 100 Trying\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
        b"To: <sip:b@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n")
    assert trying.status == 100  # what the owner got; the detector only needs "a response"
    det.response_received(1.05)
    assert det.state is DetectorState.DONE and det.get_timer() is None


@pytest.mark.parametrize("config, resends, failover_at", [
    (FailureDetectorConfig(timer_a=0.5, retry_interval=0.25, timer_b=0.75),
     [0.5, 0.75, 1.0], 1.25),
    (FailureDetectorConfig(timer_a=1.0, retry_interval=0.3, timer_b=1.0),
     [1.0, 1.3, 1.6, 1.9], 2.0),
    (FailureDetectorConfig(timer_a=2.0, retry_interval=5.0, timer_b=1.0),
     [2.0], 3.0),
    (FailureDetectorConfig(timer_a=1.0, retry_interval=0.1, timer_b=1.0),
     [1.0 + 0.1 * k for k in range(10)], 2.0),
])
def test_custom_timer_values(config, resends, failover_at):
    det = forwarded(config)
    sends, events = run(det, 100.0)
    assert [t for t, _ in sends] == pytest.approx(resends, abs=1e-9)
    assert det.resends == len(resends) == config.fast_retries
    [ev] = events
    assert ev.at == pytest.approx(failover_at, abs=1e-9)


def test_forward_time_offsets_everything():
    det = forwarded(at=100.0)
    sends, events = run(det, 1000.0)
    assert [t for t, _ in sends] == pytest.approx([101.0, 101.2, 101.4, 101.6, 101.8], abs=1e-9)
    assert events[0].at == 102.0


@pytest.mark.parametrize("field", ["timer_a", "retry_interval", "timer_b"])
@pytest.mark.parametrize("bad", [0, -0.2, math.nan, math.inf, "1", None, True])
def test_config_validation_names_the_field(field, bad):
    with pytest.raises(ValueError, match=field):
        FailureDetectorConfig(**{field: bad})


def test_illegal_transitions_raise():
    det = FailureDetector(REQ, HOP)
    with pytest.raises(FailureDetectorStateError, match="SIP_RECEIVED"):
        det.response_received(0.0)
    det.forward(0.0)
    with pytest.raises(FailureDetectorStateError, match="SIP_FORWARDED"):
        det.forward(0.1)
    # every state/input pair not in the table is an error; the table has no rows from a
    # finished state back into an active one
    for (state, _), (new, _) in FAILURE_DETECTOR_TABLE.items():
        if state in (DetectorState.DONE, DetectorState.FAILED):
            assert new is state


def test_late_timers_enter_fast_retry_at_now_and_never_burst():
    det = forwarded()
    det.handle_timer(1.5)  # Timer A was due at 1.0
    assert det.state is DetectorState.FAST_RETRY and det.fast_retry_at == 1.5
    assert det.datagrams_to_send() == [(REQ, HOP)]
    assert det.timer_deadlines() == pytest.approx({"retry": 1.7, "B": 2.5})
    det.handle_timer(2.05)  # the retry due at 1.7 is late: one resend, next slot after now
    assert len(det.datagrams_to_send()) == 1
    assert det.timer_deadlines() == pytest.approx({"retry": 2.1, "B": 2.5})
    det.handle_timer(3.0)  # retry and B both due: B wins, no resend
    assert det.datagrams_to_send() == []
    assert det.state is DetectorState.FAILED and det.resends == 2


def test_late_response_after_failover_is_counted_not_raised():
    det = forwarded()
    run(det, 100.0)
    det.response_received(2.5)
    assert det.state is DetectorState.FAILED and det.late_responses == 1
    assert det.events() == []


def test_sip_message_is_encoded_once():
    msg = SipMessage.parse(
        b"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1"
        b"\r\nTo: <sip:b@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n")
    det = FailureDetector(msg, HOP)
    det.forward(0.0)
    assert det.datagrams_to_send() == [(bytes(msg), HOP)]


# -------------------------------------------------------------------------------- HopMonitor


def test_hop_monitor_declares_a_hop_failed_once_and_fails_siblings_over():
    mon = HopMonitor()
    mon.forward("r1", REQ, HOP, 0.0)
    mon.forward("r2", REQ, HOP, 0.5)
    mon.forward("r3", REQ, OTHER_HOP, 0.0)
    assert len(mon.datagrams_to_send()) == 3
    assert mon.get_timer() == 1.0
    assert mon.in_flight() == 3 and mon.in_flight(HOP) == 2
    assert mon.response_received("r3", 0.4)  # OTHER_HOP is alive
    sends = []
    while (t := mon.get_timer()) is not None and t < 2.0 - 1e-9:
        mon.handle_timer(t)
        sends += [round(t, 9)] * len(mon.datagrams_to_send())
    assert sends == [1.0, 1.2, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9]
    assert mon.events() == [] and mon.failed_hops() == frozenset()
    mon.handle_timer(mon.get_timer())  # 2.0: r1's Timer B
    assert mon.datagrams_to_send() == []
    events = mon.events()
    assert [type(e) for e in events] == [HopFailed, Failover, Failover]
    assert events[0].next_hop == HOP and events[0].at == 2.0 and events[0].key == "r1"
    assert (events[1].key, events[1].reason, events[1].resends) == ("r1", "timer_b", 5)
    assert (events[2].key, events[2].reason, events[2].resends) == ("r2", "hop_failed", 3)
    assert mon.failed_hops() == frozenset({HOP}) and mon.is_failed(HOP)
    assert not mon.is_failed(OTHER_HOP) and mon.failed_at(HOP) == 2.0
    assert mon.in_flight() == 0 and mon.get_timer() is None
    assert not mon.response_received("r2", 2.1)  # already failed over

    # another request to the failed hop fails over without a second HopFailed
    mon.forward("r4", REQ, HOP, 3.0)
    while (t := mon.get_timer()) is not None:
        mon.handle_timer(t)
    assert [(type(e), e.key) for e in mon.events()] == [(Failover, "r4")]
    mon.mark_recovered(HOP)
    assert mon.failed_hops() == frozenset()
    mon.forward("r5", REQ, HOP, 10.0)
    while (t := mon.get_timer()) is not None:
        mon.handle_timer(t)
    assert [type(e) for e in mon.events()] == [HopFailed, Failover]


def test_hop_monitor_answered_requests_are_dropped():
    mon = HopMonitor(config=FailureDetectorConfig(timer_a=0.5))
    mon.forward("a", REQ, HOP, 0.0)
    mon.forward("b", REQ, HOP, 0.1)
    assert mon.get_timer() == 0.5
    assert mon.response_received("a", 0.2)
    assert mon.get_timer() == 0.6 and mon.detector("a") is None
    assert mon.detector("b").state is DetectorState.SIP_FORWARDED
    assert not mon.response_received("a", 0.3)
    assert not mon.response_received("never", 0.3)
    with pytest.raises(ValueError, match="already in flight"):
        mon.forward("b", REQ, HOP, 0.4)


# ------------------------------------------------------------------------------- properties

from hypothesis import given, settings, strategies as st  # noqa: E402

_seconds = st.floats(min_value=0.01, max_value=10.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(a=_seconds, interval=_seconds, b=_seconds, start=st.floats(0, 1e6))
def test_never_answered_timeline_holds_for_any_config(a, interval, b, start):
    cfg = FailureDetectorConfig(timer_a=a, retry_interval=interval, timer_b=b)
    det = FailureDetector(REQ, HOP, config=cfg)
    det.forward(start)
    det.datagrams_to_send()
    resend_times = []
    while (t := det.get_timer()) is not None:
        det.handle_timer(t)
        resend_times += [t] * len(det.datagrams_to_send())
    [ev] = det.events()
    entry = start + a
    assert resend_times[0] == entry
    assert len(resend_times) == det.resends == cfg.fast_retries
    assert all(x < y for x, y in zip(resend_times, resend_times[1:]))
    assert all(t < ev.at for t in resend_times)  # never a resend at or after Timer B
    assert ev.at == entry + b
    # resends are exactly on the grid entry + k * interval, strictly before B (1e-9 slack)
    assert resend_times == [entry + k * interval for k in range(len(resend_times))]
    assert len(resend_times) * interval >= b - 1e-6

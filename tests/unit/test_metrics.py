"""experiments.metrics: call outcomes, transaction times, media ingestion, per-module stats."""

from __future__ import annotations

import pytest

from experiments.histogram import Histogram
from experiments.metrics import MediaMetrics, SipMetrics, module_metrics, normalise_media_stats, retransmissions
from nf_modules.mediacore import pure_packet
from nf_modules.ue_media import MediaResult, aggregate
from nf_modules.user_agent import CallResult


def call(status: int, answered: float | None = None, ringing: float | None = None, bye: int = 0,
         timeline: list[tuple[float, str]] | None = None) -> CallResult:
    result = CallResult("c", status=status, answered_after=answered, ringing_after=ringing, bye_status=bye)
    result.timeline = timeline or []
    return result


def test_call_outcomes_by_status_and_timeouts() -> None:
    sip = SipMetrics()
    ok = sip.record_call(call(200, 0.060, 0.010, 200, [(0.060, "INVITE 200"), (1.075, "BYE 200")]), hold=1.0)
    sip.record_call(call(486, None, 0.010, 0, [(0.020, "INVITE 486")]))
    sip.record_call(call(0))
    sip.record_call(call(408, timeline=[(32.0, "INVITE 408")]))
    sip.record_call(call(200, 0.070, 0.012, 481, [(0.070, "INVITE 200"), (0.5, "BYE 481")]), hold=0.4)
    summary = sip.summary()
    assert ok == {"call_id": "c", "status": 200, "bye_status": 200, "completed": True, "setup_ms": 60.0, "ringing_ms": 10.0}
    assert (summary["calls"], summary["completed"], summary["failed"], summary["timeouts"]) == (5, 1, 4, 2)
    assert summary["by_status"] == {"0": 1, "200": 2, "408": 1, "486": 1}
    assert summary["success_rate"] == 0.2
    assert summary["setup_ms"]["p50"] == pytest.approx(60.0, abs=0.1)
    assert summary["setup_ms"]["max"] == pytest.approx(70.0)
    assert summary["ringing_ms"]["p50"] == pytest.approx(10.0, abs=0.1)
    invite = summary["transactions_ms"]["INVITE"]
    assert invite["count"] == 4 and invite["max"] == pytest.approx(32000)
    bye = summary["transactions_ms"]["BYE"]
    assert bye["count"] == 2
    assert bye["p50"] == pytest.approx(15.0, abs=0.1)  # 1.075 - 0.060 - 1.0
    assert bye["max"] == pytest.approx(30.0, abs=0.1)  # 0.5 - 0.070 - 0.4


def test_bye_time_uses_the_time_scale_and_skips_the_callees_bye() -> None:
    sip = SipMetrics()
    sip.record_call(call(200, 0.05, None, 200, [(0.05, "INVITE 200"), (1.06, "BYE 200")]), hold=2.0, time_scale=2.0)
    sip.record_call(call(200, 0.05, None, 200, [(0.05, "INVITE 200"), (0.3, "BYE from the callee")]), hold=2.0)
    assert sip.transactions["BYE"].count == 1
    assert sip.transactions["BYE"].max == pytest.approx(10.0)


def test_unfinished_calls_count_as_failed_and_registration_rate() -> None:
    sip = SipMetrics()
    sip.record_call(call(200, 0.05, None, 200))
    sip.unfinished = 3
    sip.record_registration({"users": 100, "registered": 100, "failed": 0, "elapsed_s": 0.5})
    summary = sip.summary()
    assert (summary["calls"], summary["completed"], summary["failed"]) == (4, 1, 3)
    assert summary["registration"]["rate_per_s"] == 200.0


def test_media_stats_keys_are_normalised() -> None:
    flat = normalise_media_stats({"p50": 1, "p90": 2, "p99": 3, "max": 9, "jitter_ms": 0.5, "loss": 0.01, "packets": 100})
    nested = normalise_media_stats({"latency_ms": {"p50": 1, "p90": 2, "p99": 3, "max": 9}, "jitter": 0.5,
                                    "loss_pct": 1.0, "packets_received": 100})
    assert flat == nested == {"latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 9.0}, "jitter_ms": 0.5,
                              "loss": 0.01, "packets": 100}
    with_samples = normalise_media_stats({"latencies_ms": [1.0, 2.0, 3.0]})
    assert Histogram.from_dict(with_samples["histogram"]).count == 3


def test_media_overall_from_quantiles_is_marked_approximate() -> None:
    media = MediaMetrics()
    media.add_many([
        {"call_id": "a", "role": "uac", "latency_ms": {"p50": 1, "p90": 2, "p99": 3, "max": 4}, "jitter_ms": 0.2,
         "loss": 0.0, "packets_received": 100},
        {"call_id": "a", "role": "uas", "latency_ms": {"p50": 10, "p90": 20, "p99": 30, "max": 40}, "jitter_ms": 0.4,
         "loss": 0.5, "packets_received": 100},
    ])
    summary = media.summary()
    assert summary is not None
    assert set(media.calls) == {"a/uac", "a/uas"}
    assert summary["calls"] == 2 and summary["packets"] == 200 and summary["approximate"] is True
    assert summary["latency_ms"]["p50"] == pytest.approx(4.0, abs=0.01)  # rank 100 of 200: the first call's max
    assert summary["latency_ms"]["max"] == pytest.approx(40.0)
    assert summary["loss"] == pytest.approx(100 / 300)  # 100 lost of 300 expected
    assert summary["latency_under_100ms"] == 1.0


def test_media_overall_prefers_exact_histograms_and_the_pools_counts() -> None:
    exact = Histogram()
    exact.record_all([5.0] * 90 + [500.0] * 10)
    media = MediaMetrics()
    media.add_call("x", {"histogram": exact.to_dict(), "packets": 100, "loss": 0.0})
    assert media.summary()["approximate"] is False  # type: ignore[index]
    assert media.summary()["latency_under_100ms"] == 0.9  # type: ignore[index]
    # leg-averaged percentiles from the pool do not replace a distribution we have; its counts do
    media.set_overall({"latency_ms": {"p50": 2, "p90": 3, "p99": 4, "max": 5}, "loss": 0.002, "packets_received": 1000})
    summary = media.summary()
    assert summary is not None
    assert summary["latency_ms"]["p99"] == pytest.approx(500.0) and summary["approximate"] is False
    assert summary["loss"] == 0.002 and summary["packets"] == 1000
    # an aggregate histogram from the pool is exact and wins
    whole = Histogram()
    whole.record_all([1.0] * 1000)
    media.set_overall({"histogram": whole.to_dict(), "loss": 0.0, "packets_received": 1000})
    assert media.summary()["latency_ms"]["max"] == 1.0  # type: ignore[index]


def test_pool_aggregate_alone_is_used_but_marked_approximate() -> None:
    media = MediaMetrics()
    media.set_overall({"latency_ms": {"p50": 2, "p90": 3, "p99": 4, "max": 5}, "loss": 0.0, "packets_received": 10})
    summary = media.summary()
    assert summary is not None
    assert summary["latency_ms"] == {"p50": 2.0, "p90": 3.0, "p99": 4.0, "max": 5.0} and summary["approximate"] is True


def _engine_leg(call_id: str, latencies_us: list[int], *, buckets: bool = True) -> dict:
    """A UE leg as ``MediaResult.as_dict()`` gives it: the engine's percentiles (the pure twin's
    latency histogram, identical to the C one) and, with ``buckets``, its non-empty buckets."""
    h = pure_packet.Histogram()
    for us in latencies_us:
        h.record(us)
    leg = {"call_id": call_id, "role": "uas", "packets_received": h.total, "loss": 0.0, "jitter_ms": 0.1,
           "latency_ms": {k: h.percentile(q) / 1000 for k, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}}
    if buckets:
        leg["latency_histogram"] = [(low / 1000, high / 1000, n) for low, high, n in h.buckets()]
    return leg


def test_engine_buckets_merge_into_the_percentiles_of_every_packet() -> None:
    a = _engine_leg("a", [1000] * 99 + [100_000])
    b = _engine_leg("b", [2000] * 100)
    media = MediaMetrics()
    media.add_many([a, b])
    summary = media.summary()
    assert summary is not None and summary["approximate"] is False
    # 200 packets: 99 at 1 ms, 100 at 2 ms, 1 at 100 ms; engine buckets [2000, 2015] us, max exact
    assert summary["latency_ms"]["p50"] == pytest.approx(2.0, rel=1 / 64)
    assert summary["latency_ms"]["p99"] == pytest.approx(2.0, rel=1 / 64)
    assert summary["latency_ms"]["max"] == 100.0
    assert media.latency.count == 200
    # the pool's packet-weighted mean of the legs' percentiles says 1.5 ms for both
    legs = [MediaResult(call_id=leg["call_id"], user="u", role="uas", local_port=0, remote=None, packets_sent=0,
                        packets_received=leg["packets_received"], bytes_received=0, lost=0, loss=0.0, jitter_ms=0.1,
                        latency_ms=leg["latency_ms"], rr_sent=0, rr_received=0, peer_fraction_lost=None, duration_s=1.0,
                        latency_histogram=tuple(leg["latency_histogram"])) for leg in (a, b)]
    assert aggregate(legs)["latency_ms"]["p50"] == pytest.approx(1.5, abs=0.02)
    from_results = MediaMetrics()
    from_results.add_many([leg.as_dict() for leg in legs])
    assert from_results.summary() == summary


def test_engine_buckets_beat_the_quantile_mixture() -> None:
    # leg a: 89 at 1 ms, 11 at 50 ms (its p90 is 50 ms); leg b: 100 at 2 ms. Of all 200 packets
    # the p90 (rank 180) is 2 ms; the mixture puts 40 % of leg a at its p90 and says 50 ms.
    values = ([1000] * 89 + [50_000] * 11, [2000] * 100)
    exact, mixture = MediaMetrics(), MediaMetrics()
    exact.add_many([_engine_leg("a", values[0]), _engine_leg("b", values[1])])
    mixture.add_many([_engine_leg("a", values[0], buckets=False), _engine_leg("b", values[1], buckets=False)])
    assert exact.summary()["latency_ms"]["p90"] == pytest.approx(2.0, rel=1 / 64)  # type: ignore[index]
    assert exact.summary()["latency_ms"]["p99"] == pytest.approx(50.0, rel=1 / 64)  # type: ignore[index]
    assert exact.summary()["approximate"] is False  # type: ignore[index]
    assert mixture.summary()["latency_ms"]["p90"] == pytest.approx(50.0, rel=1 / 64)  # type: ignore[index]
    assert mixture.summary()["approximate"] is True  # type: ignore[index]
    # one leg without buckets makes the whole approximate again
    mixed = MediaMetrics()
    mixed.add_many([_engine_leg("a", values[0]), _engine_leg("b", values[1], buckets=False)])
    assert mixed.summary()["approximate"] is True  # type: ignore[index]


def test_engine_buckets_at_their_upper_bound_capped_at_the_exact_max() -> None:
    h = Histogram()
    h.record_buckets([(1.0, 1.007, 3), (99.328, 100.351, 1)], max_value=100.0)
    assert (h.count, h.max, h.percentile(50)) == (4, 100.0, pytest.approx(1.007))
    for bad in ([(1.0, 2.0)], [(2.0, 1.0, 1)], [(1.0, 2.0, 0)], [(1.0, float("nan"), 1)], ["abc"]):
        with pytest.raises(ValueError):
            Histogram().record_buckets(bad)  # type: ignore[arg-type]
    # a malformed bucket list is not a histogram: the leg falls back to its percentiles
    assert "histogram" not in normalise_media_stats({"latency_ms": {"p50": 1.0}, "latency_histogram": [(1, 2)]})


def test_no_media_is_none() -> None:
    assert MediaMetrics().summary() is None


def test_module_metrics_and_retransmissions() -> None:
    stats = {
        "pcscf": {"udp_datagrams_in": 10, "udp_datagrams_out": 12, "malformed_dropped": 1, "overload_rejected": 2,
                  "udp_seam_dropped_in": 3, "media_dropped": 4, "capacity": {"queue_length": 5, "admitted": 10, "busy_time": 0.02}},
        "ue_pool": {"rx_request": 3, "rx_response": 4, "tx": 9, "ok_retransmitted": 2, "ack_resent": 1},
        "broken": "not a dict",
    }
    modules = module_metrics(stats)  # type: ignore[arg-type]
    assert modules["pcscf"] == {"msgs_in": 10, "msgs_out": 12, "drops": 10, "queue_length": 5, "service_time_ms": 2.0}
    assert modules["ue_pool"] == {"msgs_in": 7, "msgs_out": 9, "drops": 0, "queue_length": None, "service_time_ms": None}
    assert "broken" not in modules
    assert retransmissions(stats) == 3  # type: ignore[arg-type]


def test_max_cps_counts_only_seconds_where_every_call_completed_fast() -> None:
    from experiments.load import max_cps

    assert max_cps({}) == 0
    assert max_cps({
        0: [(True, 50.0), (True, 60.0)],
        1: [(True, 50.0), (False, None), (True, 40.0)],  # one call failed
        2: [(True, 300.0), (True, 60.0), (True, 70.0), (True, 80.0)],  # p99 over 250 ms
        3: [(True, 100.0)] * 3,
    }) == 3

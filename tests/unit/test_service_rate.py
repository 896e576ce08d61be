"""ServiceRate: a deterministic single-server queue with a bounded queue, exact instants."""

import math

import pytest

from actors.service_rate import DEFAULT_QUEUE_LIMIT, ServiceRate


def test_items_arriving_together_finish_one_service_time_apart():
    rate = ServiceRate(200, queue_limit=10)
    assert [rate.admit(0.0) for _ in range(4)] == [0.005, 0.01, 0.015, 0.02]
    assert rate.admitted == 4 and rate.rejected == 0


def test_an_item_arriving_to_an_idle_server_finishes_one_service_time_later():
    rate = ServiceRate(200, queue_limit=10)
    assert rate.admit(1.0) == 1.005
    assert rate.admit(2.0) == 2.005  # the server went idle at 1.005


def test_an_item_arriving_while_busy_waits_for_the_previous_one():
    rate = ServiceRate(100, queue_limit=10)
    assert rate.admit(0.0) == 0.01
    assert rate.admit(0.004) == 0.02  # starts at 0.01, not at 0.004
    assert rate.admit(0.02) == 0.03  # arrives exactly as the server frees: served at once


def test_queue_limit_rejects_then_admits_once_the_first_item_finishes():
    rate = ServiceRate(200, queue_limit=3)
    assert [rate.admit(0.0) for _ in range(3)] == [0.005, 0.01, 0.015]
    assert rate.admit(0.0) is None
    assert rate.admit(0.004) is None  # the first is still in service
    assert rate.queue_length(0.004) == 3
    assert rate.admit(0.005) == 0.02  # the first finished at 0.005: a slot is free
    assert rate.queue_length(0.005) == 3
    assert rate.admit(0.005) is None
    assert (rate.admitted, rate.rejected) == (4, 3)


def test_queue_length_counts_unfinished_items():
    rate = ServiceRate(10, queue_limit=5)
    for _ in range(3):
        rate.admit(0.0)  # finish at 0.1, 0.2, 0.3
    assert rate.queue_length(0.0) == 3
    assert rate.queue_length(0.1) == 2
    assert rate.queue_length(0.25) == 1
    assert rate.queue_length(0.3) == 0


def test_no_float_drift_over_a_long_busy_period():
    rate = ServiceRate(500, queue_limit=100_000)
    finishes = [rate.admit(0.0) for _ in range(10_000)]
    assert finishes[-1] == 20.0
    assert finishes[2999] == 6.0


def test_retry_after_is_the_time_until_a_slot_frees_rounded_up():
    rate = ServiceRate(0.5, queue_limit=2)  # 2 s of service per item
    assert rate.retry_after(0.0) == 1  # a slot is free now
    assert rate.admit(0.0) == 2.0
    assert rate.admit(0.0) == 4.0
    assert rate.admit(0.0) is None
    assert rate.retry_after(0.0) == 2
    assert rate.retry_after(0.5) == 2  # ceil(1.5)
    assert rate.retry_after(1.0) == 1  # exactly 1 s left
    assert rate.retry_after(1.9) == 1  # at least 1
    assert rate.retry_after(2.0) == 1  # the slot is free


def test_retry_after_is_at_least_one_second_when_the_wait_is_short():
    rate = ServiceRate(200, queue_limit=1)
    rate.admit(0.0)
    assert rate.admit(0.0) is None
    assert rate.retry_after(0.0) == 1


def test_unlimited_admits_everything_at_once():
    rate = ServiceRate(None)
    assert not rate.limited and rate.service_time == 0.0
    assert [rate.admit(3.25) for _ in range(1000)] == [3.25] * 1000
    assert rate.queue_length(3.25) == 0
    assert rate.retry_after(3.25) == 1
    assert rate.busy_time(4.0) == 0.0
    assert rate.admitted == 1000 and rate.rejected == 0


def test_default_is_unlimited_with_the_default_queue_limit():
    rate = ServiceRate()
    assert rate.rate_per_s is None and rate.queue_limit == DEFAULT_QUEUE_LIMIT
    assert ServiceRate(500).limited


def test_busy_time_and_utilisation():
    rate = ServiceRate(10, queue_limit=10)  # 0.1 s per item
    rate.admit(0.0)
    rate.admit(0.0)  # busy 0 .. 0.2
    assert rate.busy_time(0.1) == pytest.approx(0.1)
    assert rate.busy_time(0.2) == pytest.approx(0.2)
    assert rate.busy_time(1.0) == pytest.approx(0.2)
    assert rate.utilisation(1.0) == pytest.approx(0.2)
    assert rate.utilisation(0.0) == 0.0
    rate.admit(1.0)  # busy 1.0 .. 1.1
    assert rate.utilisation(2.0) == pytest.approx(0.3 / 2.0)
    stats = rate.stats(2.0)
    assert stats["admitted"] == 3 and stats["rejected"] == 0
    assert stats["queue_length"] == 0
    assert stats["busy_time"] == pytest.approx(0.3)


def test_utilisation_counts_from_the_first_instant_seen():
    rate = ServiceRate(10, queue_limit=10)
    rate.admit(100.0)
    assert rate.utilisation(101.0) == pytest.approx(0.1)


def test_rejections_do_not_consume_service():
    rate = ServiceRate(10, queue_limit=1)
    rate.admit(0.0)
    for _ in range(5):
        assert rate.admit(0.0) is None
    assert rate.busy_time(1.0) == pytest.approx(0.1)
    assert rate.admit(0.1) == pytest.approx(0.2)


def test_time_must_not_go_backwards():
    rate = ServiceRate(10)
    rate.admit(1.0)
    with pytest.raises(ValueError, match="earlier"):
        rate.admit(0.5)
    with pytest.raises(ValueError, match="earlier"):
        rate.queue_length(0.5)
    with pytest.raises(ValueError, match="earlier"):
        ServiceRate(None).admit(math.nan)


@pytest.mark.parametrize("bad", [0, -1, -0.5, math.inf, math.nan, True, "200", [200]])
def test_bad_rate_is_a_value_error_naming_the_field(bad):
    with pytest.raises(ValueError, match="rate_per_s"):
        ServiceRate(bad)


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, None, "10"])
def test_bad_queue_limit_is_a_value_error_naming_the_field(bad):
    with pytest.raises(ValueError, match="queue_limit"):
        ServiceRate(200, queue_limit=bad)


def test_table_ii_capacities_serve_their_rate_over_a_second():
    """P-CSCF 500 tran/s: 1000 requests at t=0 with a 1000-deep queue finish by t=2 exactly."""
    pcscf = ServiceRate(500, queue_limit=1000)
    finishes = [pcscf.admit(0.0) for _ in range(1000)]
    assert sum(1 for f in finishes if f <= 1.0) == 500
    assert finishes[-1] == 2.0
    scscf = ServiceRate(200, queue_limit=50)
    admitted = [scscf.admit(0.0) for _ in range(60)]
    assert admitted.count(None) == 10

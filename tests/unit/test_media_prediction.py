"""Algorithm 1's predictors (paper 004 VI-A) with exact values, and the closest-set match."""

import math

import pytest

from nf_modules.media_prediction import (
    METADATA_KEYS,
    DeltaPredictor,
    SmoothingPredictor,
    closest,
    distance,
    metadata_set,
)


def test_delta_predictor_adds_the_deviation_and_the_prediction_error():
    p = DeltaPredictor()
    # first set: no previous value, no prediction yet: delta = 0, i = 0
    assert p.observe({"payload_size": 160.0, "jitter_ms": 1.0}) == {"payload_size": 160.0, "jitter_ms": 1.0}
    # delta = 10 / 1, i = actual - predicted = 10 / 1: m_new = delta + m + i
    assert p.error({"payload_size": 170.0, "jitter_ms": 2.0}) == {"payload_size": 10.0, "jitter_ms": 1.0}
    assert p.observe({"payload_size": 170.0, "jitter_ms": 2.0}) == {"payload_size": 190.0, "jitter_ms": 4.0}
    # delta = 10 / 1, i = 180 - 190 = -10 / 3 - 4 = -1
    assert p.observe({"payload_size": 180.0, "jitter_ms": 3.0}) == {"payload_size": 180.0, "jitter_ms": 3.0}
    assert p.previous == {"payload_size": 180.0, "jitter_ms": 3.0}


def test_smoothing_predictor_forecasts_a_batch_from_level_and_trend():
    p = SmoothingPredictor(alpha=0.5, batch=3)
    assert p.forecast() == []
    p.observe({"payload_size": 100.0})
    assert p.forecast() == [{"payload_size": 100.0}] * 3  # one observation: no trend yet
    p.observe({"payload_size": 110.0})
    # level = .5*110 + .5*(100 + 0) = 105; trend = .5*(105 - 100) + .5*0 = 2.5
    assert (p.level, p.trend) == ({"payload_size": 105.0}, {"payload_size": 2.5})
    assert p.forecast() == [{"payload_size": 107.5}, {"payload_size": 110.0}, {"payload_size": 112.5}]
    p.observe({"payload_size": 120.0})
    # level = .5*120 + .5*(105 + 2.5) = 113.75; trend = .5*8.75 + .5*2.5 = 5.625
    assert p.forecast() == [{"payload_size": 119.375}, {"payload_size": 125.0}, {"payload_size": 130.625}]


def test_alpha_one_follows_the_last_observation_and_default_batch_is_five():
    p = SmoothingPredictor(alpha=1.0)
    for x in (10.0, 20.0, 40.0):
        p.observe({"packet_rate": x})
    assert p.level == {"packet_rate": 40.0} and p.trend == {"packet_rate": 20.0}
    assert [s["packet_rate"] for s in p.forecast()] == [60.0, 80.0, 100.0, 120.0, 140.0]


@pytest.mark.parametrize("alpha", [0, -0.1, 1.5, math.nan, True, "0.5"])
def test_bad_alpha_is_refused_by_name(alpha):
    with pytest.raises(ValueError, match="alpha"):
        SmoothingPredictor(alpha=alpha)


@pytest.mark.parametrize("batch", [0, -1, 2.5, True])
def test_bad_batch_is_refused_by_name(batch):
    with pytest.raises(ValueError, match="batch"):
        SmoothingPredictor(batch=batch)


def test_distance_is_relative_and_closest_picks_the_nearest_first_on_ties():
    assert distance({"payload_size": 160.0}, {"payload_size": 200.0}) == 0.2
    assert distance({"jitter_ms": 0.0}, {"jitter_ms": 0.5}) == 0.5  # below 1: absolute
    sets = [{"payload_size": 240.0}, {"payload_size": 170.0}, {"payload_size": 150.0}]
    assert closest({"payload_size": 160.0}, sets) == (1, 10.0 / 170.0)
    assert closest({"payload_size": 160.0}, []) == (-1, math.inf)
    assert closest({"payload_size": 160.0}, [{"payload_size": 150.0}, {"payload_size": 150.0}])[0] == 0


def test_metadata_set_takes_the_known_values_and_names_a_bad_one():
    record = {"payload_size": 160, "packet_rate": 50.0, "jitter_ms": 0.5, "ssrc": 7, "held": False}
    assert metadata_set(record) == {"payload_size": 160.0, "packet_rate": 50.0, "jitter_ms": 0.5}
    assert tuple(metadata_set(record)) == METADATA_KEYS
    for bad in (None, "x", math.inf, True):
        with pytest.raises(ValueError, match="packet_rate"):
            metadata_set({**record, "packet_rate": bad})

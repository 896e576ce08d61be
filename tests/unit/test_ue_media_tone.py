"""Tone detection for the media tests (Goertzel power at one frequency, the dominant frequency
over a grid: a small DFT), and its own checks. Other media tests import the two helpers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

RATE = 8000


def tone_power(samples: Sequence[int], rate: int, freq: float) -> float:
    """Goertzel: the power of ``freq`` in ``samples`` (normalised by the length)."""
    coefficient = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coefficient * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - coefficient * s1 * s2) / max(1, len(samples)) ** 2


def dominant_frequency(samples: Sequence[int], rate: int, low: float = 100, high: float = 3500, step: float = 5) -> float:
    """The frequency on a ``step`` Hz grid in ``[low, high]`` with the most power (over the
    first half second at most)."""
    window = samples[: rate // 2]
    grid = [low + i * step for i in range(int((high - low) / step) + 1)]
    return max(grid, key=lambda f: tone_power(window, rate, f))


def _sine(freq: float, n: int) -> list[int]:
    return [round(16000 * math.sin(2 * math.pi * freq * i / RATE)) for i in range(n)]


@pytest.mark.parametrize("freq", [300, 440, 1000, 2500])
def test_dominant_frequency_finds_the_tone(freq: int) -> None:
    assert dominant_frequency(_sine(freq, 4000), RATE) == pytest.approx(freq, abs=5)


def test_goertzel_separates_tones_and_silence() -> None:
    samples = _sine(440, 4000)
    assert tone_power(samples, RATE, 440) > 100 * tone_power(samples, RATE, 1000)
    assert tone_power([0] * 4000, RATE, 440) == 0

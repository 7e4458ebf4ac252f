"""Kinship against merge gain: the gains, and Pearson's r with its Fisher-z interval."""

import math

import numpy as np
import pytest

from exme.pipeline.kinship_report import merge_gains, pearson_with_interval


def test_pearson_r_and_its_interval_follow_fishers_z():
    x, y = [1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5]
    r, low, high = pearson_with_interval(x, y)
    assert r == pytest.approx(np.corrcoef(x, y)[0, 1])
    spread = 1.959964 / math.sqrt(len(x) - 3)
    assert (low, high) == pytest.approx(
        (math.tanh(math.atanh(r) - spread), math.tanh(math.atanh(r) + spread))
    )
    assert all(math.isnan(bound) for bound in pearson_with_interval([1, 2, 3], [1, 3, 2])[1:])  # n < 4


def test_the_gain_is_the_merge_minus_the_mean_of_its_parents():
    gains = merge_gains({"a": 0.2, "b": 0.4, "m": 0.5}, {"m": ("a", "b")})
    assert gains["m"] == pytest.approx(0.2)

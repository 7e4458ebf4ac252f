"""Kinship against merge gain: the gains, and Pearson's r with its Fisher-z interval."""

import math
import re

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


def test_the_markdown_report_gives_each_merges_kinship_and_gain_and_the_best_score_per_generation():
    import pandas as pd

    from exme.pipeline.greedy import Pool, PoolModel
    from exme.pipeline.kinship_report import best_per_generation, gain_markdown, greedy_markdown

    merges = {"m1": ("a", "b"), "m2": ("a", "c"), "m3": ("b", "c"), "m4": ("a", "d")}
    gains = merge_gains(
        {"a": 0.2, "b": 0.4, "c": 0.1, "d": 0.3, "m1": 0.5, "m2": 0.1, "m3": 0.2, "m4": 0.3}, merges
    )
    kinships = pd.Series({"m1": 0.9, "m2": 0.3, "m3": 0.5, "m4": 0.6})
    text = gain_markdown(kinships, gains, merges, "pcc")
    r, low, high = pearson_with_interval(kinships[gains.index], gains)
    assert f"Pearson r = {r:.2f} (95% CI {low:.2f} to {high:.2f}, n = 4)" in text
    assert re.search(r"\| m1 +\| a \+ b +\| +0\.9000 \| +0\.2000 \|", text)
    pool = Pool(
        (PoolModel("a", score=0.2), PoolModel("b", score=0.4), PoolModel("g1-m1", ("a", "b"), 1, 0.5),
         PoolModel("g2-m1", ("g1-m1", "a"), 2, 0.45)),
        generation=2,
    )  # fmt: skip
    assert best_per_generation(pool) == [0.4, 0.5, 0.5]
    assert re.search(r"\| +2 \| +0\.5000 \|", greedy_markdown({"greedy": pool}))

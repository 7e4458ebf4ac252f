"""Paired differences: bootstrap intervals, sign-flip and McNemar p-values and Holm's correction,
checked against closed forms and brute-force enumeration on small synthetic data."""

import itertools
import math

import numpy as np
import pytest

from exme.errors import ExmeError
from exme.pipeline.paired import bootstrap, compare, holm, interval, mcnemar_p, sign_flip_p
from exme.pipeline.targets import MEAN_TASK


def test_a_true_difference_of_zero_gives_zero_and_p_one():
    """The same model against itself, and a model that wins and loses as often: Δ = 0, p = 1."""
    values = np.array([[1, 0, 1, 1, 0, 0, 1, 0]], dtype=float)
    same = compare({"t": values}, {"t": values})
    assert same["t"]["difference"] == 0 and same["t"]["interval"] == (0, 0) and same["t"]["p"] == 1
    swapped = compare({"t": values}, {"t": 1 - values})  # wins 4, loses 4
    assert (
        swapped["t"]["difference"] == 0 and swapped["t"]["p"] == 1 and swapped["t"]["test"] == "McNemar exact"
    )
    low, high = swapped["t"]["interval"]
    assert low < 0 < high


def test_a_clear_gain_has_an_interval_above_zero_and_mcnemars_exact_p():
    reference = np.zeros((1, 40))
    model = reference.copy()
    model[0, :30] = 1  # 30 items only the model gets right, none only the reference
    result = compare({"t": model}, {"t": reference})["t"]
    assert result["difference"] == 0.75 and result["interval"][0] > 0.5
    assert result["p"] == pytest.approx(2 / 2**30) and result["test"] == "McNemar exact"


def test_mcnemar_is_the_two_sided_binomial_test_of_the_discordant_items():
    model = np.array([1, 1, 1, 1, 1, 0, 1, 0])
    reference = np.array([0, 0, 0, 0, 0, 1, 1, 0])  # b = 5, c = 1
    expected = 2 * (math.comb(6, 0) + math.comb(6, 1)) / 2**6
    assert mcnemar_p(model, reference) == pytest.approx(expected)
    # On 0/1 data the exact sign-flip test is the same test.
    assert sign_flip_p([model - reference]) == pytest.approx(expected)


def test_the_sign_flip_p_value_is_the_brute_force_one():
    """Two tasks of 3 and 5 items, each weighing 1/2: every one of the 2^8 sign patterns."""
    tasks = [np.array([0.5, -0.2, 0.9]), np.array([0.3, 0.1, -0.4, 0.8, 0.2])]
    weights = [1 / (2 * 3)] * 3 + [1 / (2 * 5)] * 5
    terms = np.array(weights) * np.concatenate(tasks)
    observed = abs(terms.sum())
    flips = [abs(np.dot(signs, terms)) for signs in itertools.product((-1, 1), repeat=len(terms))]
    expected = np.mean([flip >= observed - 1e-12 for flip in flips])
    assert sign_flip_p(tasks) == pytest.approx(expected)
    # With too many items to enumerate (2^14 > 1000), random flips estimate the same p-value.
    rng = np.random.default_rng(3)
    many = [rng.normal(0.2, 1, size=14)]
    exact = sign_flip_p(many, resamples=2**14)
    assert sign_flip_p(many, resamples=1000) == pytest.approx(exact, abs=0.05)


def test_one_seed_bootstrap_matches_the_closed_form_mean_and_variance():
    """Resampling n items: the resampled mean has mean d̄ and variance σ̂²/n (plug-in σ̂²)."""
    rng = np.random.default_rng(0)
    d = rng.normal(0.1, 1.0, size=(1, 60))
    resampled = bootstrap({"t": d}, resamples=20_000)["t"]
    closed_form_sd = d.std() / math.sqrt(d.size)
    assert resampled.mean() == pytest.approx(d.mean(), abs=4 * closed_form_sd / math.sqrt(20_000))
    assert resampled.std() == pytest.approx(closed_form_sd, rel=0.03)


def test_the_mean_over_tasks_weighs_tasks_equally_and_resamples_within_each():
    """Tasks of 2 and 4 items: each bootstrap sample of the mean is the mean of the tasks' samples,
    and items never move between tasks (task a's samples take only its values)."""
    differences = {"a": np.array([[1.0, 1.0]]), "b": np.array([[0.0, 0.0, 0.0, 1.0]])}
    resampled = bootstrap(differences, resamples=500)
    assert set(resampled["a"]) == {1.0}
    np.testing.assert_allclose(resampled[MEAN_TASK], (resampled["a"] + resampled["b"]) / 2)
    assert compare(differences, {t: np.zeros_like(d) for t, d in differences.items()})[MEAN_TASK][
        "difference"
    ] == pytest.approx((1 + 0.25) / 2)


def test_several_seeds_are_resampled_too():
    """Differences constant within a seed (1, 2, 6): only the seeds vary, and the resampled means are
    those of the 3^3 ordered draws of seeds, with their exact mean and variance."""
    d = np.repeat(np.array([[1.0], [2.0], [6.0]]), 5, axis=1)
    resampled = bootstrap({"t": d}, resamples=20_000)["t"]
    draws = [np.mean(draw) for draw in itertools.product([1.0, 2.0, 6.0], repeat=3)]
    assert set(np.round(resampled, 9)) <= set(np.round(draws, 9))
    assert resampled.mean() == pytest.approx(np.mean(draws), abs=0.03)
    assert resampled.var() == pytest.approx(np.var(draws), rel=0.05)


def test_the_interval_covers_the_true_difference_about_95_percent_of_the_time():
    """200 simulated paired evaluations of 100 items, true accuracies 0.6 and 0.5 (correlated)."""
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(200):
        shared = rng.random(100)
        model = (shared < 0.6).astype(float)  # right wherever the reference is, and on 10% more
        reference = (shared < 0.5).astype(float)
        noise = rng.random(100) < 0.2  # some items flip for the model alone, keeping its mean 0.6
        model[noise] = (rng.random(noise.sum()) < 0.6).astype(float)
        low, high = interval(
            bootstrap({"t": (model - reference)[None, :]}, resamples=1000, seed=int(rng.integers(1 << 30)))[
                "t"
            ]
        )
        true = 0.6 * 0.8 + 0.6 * 0.2 - 0.5  # the model's expected accuracy minus the reference's
        covered += low <= true <= high
    assert 0.9 <= covered / 200 <= 0.99


def test_reruns_give_the_same_interval_and_p():
    rng = np.random.default_rng(2)
    model, reference = rng.random((2, 40)), rng.random((2, 40))
    assert compare({"t": model}, {"t": reference}) == compare({"t": model}, {"t": reference})


def test_holms_adjustment():
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04, then monotone.
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]


def test_models_scored_on_different_items_are_an_error():
    with pytest.raises(ExmeError, match="different items"):
        compare({"t": np.zeros((1, 3))}, {"t": np.zeros((1, 4))})

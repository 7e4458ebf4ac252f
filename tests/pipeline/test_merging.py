"""The merge systems' recipes, run through the engine, equal their closed forms on tiny models."""

import numpy as np
import pytest
import torch

from exme.errors import ExmeError
from exme.merge.execute import build_state_dict
from exme.pipeline.merging import (
    MergeInputs,
    Source,
    check_system,
    get_system,
    merge_recipe,
    mixup_lambdas,
    point_values,
)
from tests.tiny_models import load_folder

SETTINGS = {
    "concentration": 0.5,
    "draws": 3,
    "scaling": 0.8,
    "dare": False,
    "dare_density": 0.8,
    "ties_density": 0.5,
}


@pytest.fixture(scope="module")
def models(family):
    inputs = MergeInputs(
        str(family.base), (Source("a", str(family.ft_a)), Source("b", str(family.ft_b))), seed=7
    )
    weights = {
        name: load_folder(path)
        for name, path in (("base", family.base), ("a", family.ft_a), ("b", family.ft_b))
    }
    return inputs, weights


def merged(method, inputs, settings, point):
    recipe = merge_recipe(method, "checkpoint", inputs, settings, point)
    return recipe, build_state_dict(recipe, device="cpu")


def test_mixup_draws_are_reproducible_from_the_seed_and_beta_distributed_for_two_models():
    first, again = mixup_lambdas(3, 0.5, 5, 2), mixup_lambdas(3, 0.5, 5, 2)
    assert first == again and first != mixup_lambdas(4, 0.5, 5, 2)
    assert all(abs(sum(draw) - 1) < 1e-12 for draw in first)
    lambdas = np.array(mixup_lambdas(0, 2.0, 20000, 2))[:, 0]
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)).
    assert abs(lambdas.mean() - 0.5) < 0.01 and abs(lambdas.var() - 1 / 20) < 0.003
    with pytest.raises(ExmeError, match="concentration"):
        mixup_lambdas(0, 0.0, 2, 2)


def test_m3_averaging_and_task_arithmetic_equal_their_closed_forms(models):
    inputs, weights = models
    lam = mixup_lambdas(7, 0.5, 3, 2)[1][0]
    recipe, average = merged("m3_linear", inputs, SETTINGS, "d1")
    assert recipe.metadata == {
        "source": "a+b",
        "method": "m3_linear",
        "draw": 1,
        "lambda": lam,
        "track": "checkpoint",
    }
    _, task_arithmetic = merged("m3_task_arithmetic", inputs, SETTINGS, "d1")
    for name, base in weights["base"].items():
        a, b = weights["a"][name], weights["b"][name]
        torch.testing.assert_close(average[name], lam * a + (1 - lam) * b, rtol=1e-5, atol=1e-6)
        expected = base + 0.8 * (lam * (a - base) + (1 - lam) * (b - base))
        torch.testing.assert_close(task_arithmetic[name], expected, rtol=1e-5, atol=1e-6)


def ties_closed_form(base, deltas, lambdas, density, scale):
    trimmed = []
    for delta in deltas:
        keep = int(density * delta.numel())
        threshold = delta.abs().flatten().sort(descending=True).values[keep - 1]
        trimmed.append(torch.where(delta.abs() >= threshold, delta, torch.zeros_like(delta)))
    weighted = [lam * delta for lam, delta in zip(lambdas, trimmed, strict=True)]
    elected = torch.sign(sum(weighted))
    masks = [(torch.sign(delta) == elected) & (delta != 0) for delta in trimmed]
    numerator = sum(w * m for w, m in zip(weighted, masks, strict=True))
    denominator = sum(lam * m for lam, m in zip(lambdas, masks, strict=True))
    return base + scale * numerator / torch.where(denominator == 0, 1.0, denominator)


def test_m3_ties_weights_agreeing_entries_by_lambda(models):
    inputs, weights = models
    lam = mixup_lambdas(7, 0.5, 3, 2)[2][0]
    _, ties = merged("m3_ties", inputs, SETTINGS, "d2")
    for name, base in weights["base"].items():
        deltas = [weights["a"][name] - base, weights["b"][name] - base]
        expected = ties_closed_form(base, deltas, [lam, 1 - lam], 0.5, 0.8)
        torch.testing.assert_close(ties[name], expected, rtol=1e-5, atol=1e-6)


def test_m3_after_dare_uses_the_seeded_drop_on_each_task_vector(models):
    inputs, weights = models
    recipe, _ = merged("m3_task_arithmetic", inputs, {**SETTINGS, "dare": True}, "d0")
    assert recipe.merge_method == "dare_linear" and recipe.random_seed == 7
    assert [entry.parameters["density"] for entry in recipe.models] == [0.8, 0.8]


def test_baselines_and_their_coefficients(models):
    inputs, weights = models
    _, average = merged("linear", inputs, {}, None)
    _, task_arithmetic = merged("task_arithmetic", inputs, {"scaling_grid": [0.5]}, "s0.5")
    for name, base in weights["base"].items():
        a, b = weights["a"][name], weights["b"][name]
        torch.testing.assert_close(average[name], (a + b) / 2, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            task_arithmetic[name], base + 0.5 * (a - base + b - base), rtol=1e-5, atol=1e-6
        )
    with pytest.raises(ExmeError, match="grid point"):
        merge_recipe("task_arithmetic", "checkpoint", inputs, {"scaling_grid": [0.5]}, None)


def test_a_method_that_cannot_merge_the_tracks_models_is_refused():
    check_system("slerp", 2, "tracks.checkpoint")
    with pytest.raises(ExmeError, match="tracks.expert: slerp merges exactly 2 models, the track has 3"):
        check_system("slerp", 3, "tracks.expert")
    with pytest.raises(ExmeError, match="unknown merge method 'fancy'"):
        check_system("fancy", 2, "tracks.expert")


def test_se_merging_is_the_static_merge_with_its_rescaling_in_the_metadata(models):
    inputs, weights = models
    settings = {"scaling": 0.5, "temperatures": [0.1, 1.0], "layers": [1, 2], "similarity": "cosine"}
    # The grid: every temperature with every layer.
    assert get_system("se_merging").points(settings) == ["t0.1l1", "t0.1l2", "t1l1", "t1l2"]
    assert point_values("t0.1l2") == {"t": 0.1, "l": 2.0}
    recipe, static = merged("se_merging", inputs, settings, "t0.1l2")
    assert recipe.merge_method == "task_arithmetic"
    assert recipe.metadata == {
        "source": "a+b", "method": "se_merging", "scaling": 0.5, "temperature": 0.1, "layer": 2,
        "similarity": "cosine", "track": "checkpoint",
    }  # fmt: skip
    for name, base in weights["base"].items():
        expected = base + 0.5 * (weights["a"][name] - base + weights["b"][name] - base)
        torch.testing.assert_close(static[name], expected, rtol=1e-5, atol=1e-6)

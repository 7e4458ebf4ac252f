"""DARE (and DELLA) drop task-vector entries at random with a reproducible, seeded mask."""

from __future__ import annotations

import pytest
import torch

from exme.merge.execute import build_state_dict
from exme.merge.methods.registry import MethodInputs, get_method
from exme.merge.recipe import recipe_from_dict
from tests.tiny_models import load_folder

DENSITY = 0.3


def _dare_linear(delta: torch.Tensor, *, rescale: bool, seed: int = 0) -> torch.Tensor:
    base = torch.zeros_like(delta)
    inputs = MethodInputs(
        tensor_name="w",
        tensors=[delta.clone()],  # the method may overwrite its inputs
        base=base,
        generator_for=lambda index: torch.Generator().manual_seed(seed + index),
    )
    method = get_method("dare_linear")
    return method(
        inputs, weight=[1.0], density=[DENSITY], normalize=False, rescale=rescale,
        int8_mask=False, **{"lambda": 1.0},
    )  # fmt: skip


@pytest.fixture(scope="module")
def large_delta() -> torch.Tensor:
    return torch.randn(512, 512, generator=torch.Generator().manual_seed(3))


def test_dare_keeps_about_density_of_entries_unchanged_without_rescale(large_delta):
    result = _dare_linear(large_delta, rescale=False)
    kept = result != 0
    assert abs(kept.float().mean().item() - DENSITY) < 0.01
    assert torch.equal(result[kept], large_delta[kept])


def test_dare_rescale_scales_kept_entries_by_about_one_over_density(large_delta):
    result = _dare_linear(large_delta, rescale=True)
    kept = result != 0
    scale = result[kept] / large_delta[kept]
    assert torch.allclose(scale, scale[0].expand_as(scale))  # one factor for the whole tensor
    assert scale[0].item() == pytest.approx(1 / DENSITY, rel=0.03)
    # mergekit's rescale restores the L1 norm of the task vector exactly.
    assert result.abs().sum().item() == pytest.approx(large_delta.abs().sum().item(), rel=1e-5)


def test_dare_mask_depends_only_on_the_seed(large_delta):
    first = _dare_linear(large_delta, rescale=True, seed=5)
    assert torch.equal(first, _dare_linear(large_delta, rescale=True, seed=5))
    assert not torch.equal(first, _dare_linear(large_delta, rescale=True, seed=6))


def _random_drop_recipe(family, method: str, seed: int | None) -> dict:
    recipe = {
        "merge_method": method,
        "base_model": str(family.base),
        "models": [
            {"model": str(family.ft_a), "parameters": {"weight": 0.5, "density": 0.5}},
            {"model": str(family.ft_b), "parameters": {"weight": 0.5, "density": 0.5}},
        ],
    }
    return recipe if seed is None else {**recipe, "random_seed": seed}


@pytest.mark.parametrize("method", ["dare_ties", "dare_linear", "della", "della_linear"])
def test_random_drop_merge_is_reproducible_and_changes_with_random_seed(family, method):
    def merge(seed):
        return build_state_dict(recipe_from_dict(_random_drop_recipe(family, method, seed)), device="cpu")

    first, again, other = merge(1), merge(1), merge(2)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert any(not torch.equal(first[name], other[name]) for name in first)
    # Different tensors and different models get different masks.
    base, tuned = load_folder(family.base), first
    q, k = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"
    assert not torch.equal(tuned[q] == base[q], tuned[k] == base[k])

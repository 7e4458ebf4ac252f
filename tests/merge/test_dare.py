"""DARE (and DELLA) drop task-vector entries at random with a reproducible, seeded mask."""

from __future__ import annotations

import hashlib

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


def _kept_masks(family, method: str, device: str) -> dict[str, torch.Tensor]:
    """Where a one-model merge without rescale differs from the base: the mask drawn for each tensor."""
    recipe = {
        "merge_method": method,
        "base_model": str(family.base),
        "random_seed": 1,
        "models": [{"model": str(family.ft_a), "parameters": {"weight": 1.0, "density": 0.5}}],
        "parameters": {"rescale": False},
    }
    merged = build_state_dict(recipe_from_dict(recipe), device=device)
    base = load_folder(family.base)
    return {name: (merged[name].cpu() != base[name]) for name in sorted(merged)}


def _digest(masks: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name, mask in masks.items():
        digest.update(name.encode())
        digest.update(mask.numpy().tobytes())
    return digest.hexdigest()


# The masks of the tiny family's one-model merges at random_seed 1, recorded on the CPU when each
# device drew from a generator of its own: drawn from a CPU generator on every device, they are the same.
# (With one model, TIES's sign consensus keeps every entry: dare_ties has dare_linear's masks.)
DARE_MASKS = "4d1bc1cd0e7f2890da438c4588fc0c00a4358275bff28397e0042e4a97b10f08"
DELLA_MASKS = "daba596dc80a44e0fedf84ffab4bdf9abee1d7cbcd85160cd25f3ea16d2d82f9"
CPU_MASKS = {
    "dare_linear": DARE_MASKS, "dare_ties": DARE_MASKS, "della_linear": DELLA_MASKS, "della": DELLA_MASKS,
}  # fmt: skip


@pytest.mark.parametrize("method", sorted(CPU_MASKS))
def test_random_drop_masks_on_the_cpu_are_those_recorded(family, method):
    assert _digest(_kept_masks(family, method, "cpu")) == CPU_MASKS[method]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", sorted(CPU_MASKS))
def test_random_drop_masks_on_cuda_equal_the_cpu(family, method):
    assert _digest(_kept_masks(family, method, "cuda")) == CPU_MASKS[method]

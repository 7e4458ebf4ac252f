"""The engine's results equal mergekit 0.1.5's for the methods both implement."""

from __future__ import annotations

import pytest
import torch

from exme.merge.execute import build_state_dict
from exme.merge.recipe import recipe_from_dict

FAMILIES = {
    "fp32": dict(),
    "fp32-sharded": dict(sharded=True),
    "fp32-tied": dict(tied=True),
    "fp32-tied-base-only": dict(tied_base_only=True),
    "bf16-sharded-tied": dict(dtype=torch.bfloat16, sharded=True, tied=True),
    "bf16": dict(dtype=torch.bfloat16),
    "fp32-4-layers": dict(layers=4),
}


def _recipe(method: str, family) -> dict:
    two_models = [
        {"model": str(family.ft_a), "parameters": {"weight": 0.7}},
        {"model": str(family.ft_b), "parameters": {"weight": 0.5}},
    ]
    with_base = {"base_model": str(family.base), "models": two_models}
    recipes = {
        "linear": {"merge_method": "linear", "models": two_models},
        "linear-unnormalized": {
            "merge_method": "linear",
            "models": two_models,
            "parameters": {"normalize": False},
        },
        "task_arithmetic": {"merge_method": "task_arithmetic", **with_base,
                            "parameters": {"lambda": 0.9}},
        "ties": {"merge_method": "ties", **with_base, "parameters": {"density": 1.0}},
        "ties-sparse": {"merge_method": "ties", **with_base, "parameters": {"density": 0.4}},
        "ties-negative-weight": {
            "merge_method": "ties",
            "base_model": str(family.base),
            "models": [two_models[0], {"model": str(family.ft_b), "parameters": {"weight": -0.4}}],
        },
        "dare_linear": {"merge_method": "dare_linear", **with_base, "parameters": {"density": 1.0}},
        "dare_ties": {"merge_method": "dare_ties", **with_base, "parameters": {"density": 1.0}},
        "gradients": {
            "merge_method": "task_arithmetic",
            "base_model": str(family.base),
            "models": [
                {"model": str(family.ft_a), "parameters": {"weight": [0.1, 0.9, 0.4]}},
                {
                    "model": str(family.ft_b),
                    "parameters": {
                        "weight": [{"filter": "mlp", "value": [1.0, 0.0]}, {"value": 0.5}]
                    },
                },
            ],
            "parameters": {"normalize": [False, True]},
        },
        "slerp": {
            "merge_method": "slerp",
            "base_model": str(family.base),
            "models": [{"model": str(family.base)}, {"model": str(family.ft_a)}],
            "parameters": {"t": 0.3},
        },
    }  # fmt: skip
    return recipes[method]


def _with_dtypes(recipe: dict, dtype: torch.dtype) -> dict:
    if dtype == torch.bfloat16:  # both tools: fp32 arithmetic, rounded once to bf16
        return {**recipe, "dtype": "float32", "out_dtype": "bfloat16"}
    return {**recipe, "dtype": "float32"}


def _assert_equal_up_to_rounding(ours: dict, theirs: dict, dtype: torch.dtype) -> None:
    assert ours.keys() == theirs.keys()
    for name, expected in theirs.items():
        actual = ours[name]
        assert actual.dtype == expected.dtype == dtype, name
        if dtype == torch.float32:
            assert (actual - expected).abs().max() <= 1e-6, name
        else:  # at most one bf16 ulp apart (fp32 sums in another order may round the other way)
            ulp = torch.finfo(torch.bfloat16).eps * expected.float().abs().clamp_min(1e-30)
            too_far = (actual.float() - expected.float()).abs() > ulp * 1.01
            assert not too_far.any(), f"{name}: {int(too_far.sum())} entries differ by > 1 ulp"


@pytest.mark.parametrize("family_name", FAMILIES)
@pytest.mark.parametrize(
    "method",
    [
        "linear",
        "linear-unnormalized",
        "task_arithmetic",
        "ties",
        "ties-sparse",
        "ties-negative-weight",
        "dare_linear",
        "dare_ties",
        "gradients",
        "slerp",
    ],
)
def test_merge_matches_mergekit(method, family_name, make_family, run_mergekit):
    options = FAMILIES[family_name]
    dtype = options.get("dtype", torch.float32)
    recipe = _with_dtypes(_recipe(method, make_family(**options)), dtype)
    ours = build_state_dict(recipe_from_dict(recipe), device="cpu")
    _assert_equal_up_to_rounding(ours, run_mergekit(recipe), dtype)

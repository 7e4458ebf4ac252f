"""EXPO and ExMe give exactly their formulas, and the written folder is a working model."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from exme.merge.execute import build_state_dict, merge_to_dir
from exme.merge.recipe import recipe_from_dict
from tests.tiny_models import load_folder


def _extrapolate_recipe(family, **extra) -> dict:
    return {
        "merge_method": "extrapolate",
        "base_model": str(family.base),
        "models": [{"model": str(family.ft_a), "parameters": {"alpha": 0.3}}],
        **extra,
    }


def _exme_recipe(family) -> dict:
    return {
        "merge_method": "exme",
        "base_model": str(family.base),
        "models": [
            {"model": str(family.ft_a), "parameters": {"alpha": 0.3, "weight": 0.6}},
            {"model": str(family.ft_b), "parameters": {"alpha": 0.5, "weight": 0.4}},
        ],
    }


def test_extrapolate_is_theta_plus_alpha_times_delta_from_base(family):
    merged = build_state_dict(recipe_from_dict(_extrapolate_recipe(family)), device="cpu")
    base, tuned = load_folder(family.base), load_folder(family.ft_a)
    assert merged.keys() == tuned.keys()
    for name, theta in tuned.items():
        expected = theta + 0.3 * (theta - base[name])
        assert (merged[name] - expected).abs().max() <= 1e-6, name


def test_exme_is_weighted_sum_of_extrapolated_models(family):
    merged = build_state_dict(recipe_from_dict(_exme_recipe(family)), device="cpu")
    base, a, b = (load_folder(p) for p in (family.base, family.ft_a, family.ft_b))
    for name in base:
        expo_a = a[name] + 0.3 * (a[name] - base[name])
        expo_b = b[name] + 0.5 * (b[name] - base[name])
        assert (merged[name] - (0.6 * expo_a + 0.4 * expo_b)).abs().max() <= 1e-6, name


def test_exme_normalize_divides_by_the_weight_sum(family):
    recipe = _exme_recipe(family)
    plain = build_state_dict(recipe_from_dict(recipe), device="cpu")
    halved = build_state_dict(
        recipe_from_dict({**recipe, "parameters": {"normalize": True}} | {
            "models": [
                {**m, "parameters": {**m["parameters"], "weight": 2 * m["parameters"]["weight"]}}
                for m in recipe["models"]
            ]
        }),
        device="cpu",
    )  # fmt: skip
    for name, tensor in plain.items():
        assert (halved[name] - tensor).abs().max() <= 1e-6, name


def test_global_alpha_applies_to_every_model(family):
    per_model = build_state_dict(recipe_from_dict(_extrapolate_recipe(family)), device="cpu")
    recipe = _extrapolate_recipe(family, parameters={"alpha": 0.3})
    recipe["models"] = [{"model": str(family.ft_a)}]
    global_alpha = build_state_dict(recipe_from_dict(recipe), device="cpu")
    assert all(torch.equal(per_model[n], global_alpha[n]) for n in per_model)


def test_filtered_parameter_applies_per_tensor_name(family):
    recipe = _extrapolate_recipe(family)
    recipe["models"][0]["parameters"]["alpha"] = [
        {"filter": "mlp", "value": 1.0},
        {"value": 0.0},
    ]
    merged = build_state_dict(recipe_from_dict(recipe), device="cpu")
    base, tuned = load_folder(family.base), load_folder(family.ft_a)
    mlp = "model.layers.0.mlp.up_proj.weight"
    attention = "model.layers.0.self_attn.q_proj.weight"
    assert torch.allclose(merged[mlp], 2 * tuned[mlp] - base[mlp], atol=1e-6)
    assert torch.equal(merged[attention], tuned[attention])


def test_written_exme_model_gives_the_logits_of_the_hand_computed_weights(family, tmp_path):
    recipe = recipe_from_dict(_exme_recipe(family))
    out = merge_to_dir(recipe, tmp_path / "merged", show_progress=False)
    base, a, b = (load_folder(p) for p in (family.base, family.ft_a, family.ft_b))
    expected = {
        name: 0.6 * (1.3 * a[name] - 0.3 * base[name]) + 0.4 * (1.5 * b[name] - 0.5 * base[name])
        for name in base
    }
    reference = AutoModelForCausalLM.from_pretrained(family.base)
    reference.load_state_dict(expected)
    merged = AutoModelForCausalLM.from_pretrained(out)
    tokens = torch.arange(12).reshape(2, 6)
    with torch.no_grad():
        difference = merged(tokens).logits - reference(tokens).logits
    assert difference.abs().max() <= 1e-5

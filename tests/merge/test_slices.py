"""`slices`: layers taken from ranges of the sources, renumbered in the output, as mergekit does."""

from __future__ import annotations

import json
import re

import pytest
import torch
from transformers import AutoModelForCausalLM

from exme.errors import ExmeError
from exme.merge.execute import build_state_dict, merge_to_dir
from exme.merge.recipe import recipe_from_dict
from tests.merge.test_mergekit_parity import assert_equal_up_to_rounding
from tests.tiny_models import load_folder


def _source(model, first, end, **parameters) -> dict:
    source = {"model": str(model), "layer_range": [first, end]}
    return {**source, "parameters": parameters} if parameters else source


def _frankenmerge(models) -> dict:
    return {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [_source(models["ft_a"], 0, 3)]},
            {"sources": [_source(models["ft_b"], 1, 4)]},
        ],
        "dtype": "float32",
    }


def _gradient_slerp(models) -> dict:
    return {
        "merge_method": "slerp",
        "base_model": str(models["ft_a"]),
        "slices": [{"sources": [_source(models["ft_a"], 0, 4), _source(models["ft_b"], 0, 4)]}],
        "parameters": {
            "t": [
                {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
                {"value": 0.5},
            ]
        },
        "dtype": "float32",
    }


def _shifted_linear(models) -> dict:
    """Two slices of different ranges per source, with parameters at three levels."""
    return {
        "merge_method": "linear",
        "slices": [
            {
                "sources": [_source(models["ft_a"], 0, 2, weight=0.8), _source(models["ft_b"], 2, 4)],
                "parameters": {"weight": 0.2},
            },
            {"sources": [_source(models["ft_c"], 1, 3), _source(models["ft_a"], 2, 4)]},
        ],
        "parameters": {"weight": [1.0, 3.0]},
        "dtype": "float32",
    }


def _ties_slices(models) -> dict:
    return {
        "merge_method": "ties",
        "base_model": str(models["base"]),
        "slices": [
            {
                "sources": [
                    _source(models["base"], 0, 2),
                    _source(models["ft_a"], 0, 2, weight=0.6, density=0.5),
                    _source(models["ft_b"], 2, 4, weight=0.4, density=0.7),
                ]
            },
            {
                "sources": [_source(models["base"], 2, 4), _source(models["ft_c"], 2, 4)],
                "parameters": {"weight": 1.0, "density": 0.3},
            },
        ],
        "dtype": "float32",
    }


@pytest.mark.parametrize("shape", [_frankenmerge, _gradient_slerp, _shifted_linear, _ties_slices])
def test_slices_match_mergekit(shape, four_layer_models, run_mergekit):
    recipe = shape(four_layer_models)
    ours = build_state_dict(recipe_from_dict(recipe), device="cpu")
    assert_equal_up_to_rounding(ours, run_mergekit(recipe), torch.float32)


def test_frankenmerge_renumbers_layers_and_sets_the_layer_count(four_layer_models, tmp_path):
    out = merge_to_dir(recipe_from_dict(_frankenmerge(four_layer_models)), tmp_path / "stacked")
    merged, a, b = (
        load_folder(out),
        load_folder(four_layer_models["ft_a"]),
        load_folder(four_layer_models["ft_b"]),
    )
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 6
    suffix = "self_attn.q_proj.weight"
    for layer, (source, source_layer) in enumerate([(a, 0), (a, 1), (a, 2), (b, 1), (b, 2), (b, 3)]):
        assert torch.equal(
            merged[f"model.layers.{layer}.{suffix}"], source[f"model.layers.{source_layer}.{suffix}"]
        )
    assert torch.equal(merged["model.embed_tokens.weight"], a["model.embed_tokens.weight"])
    assert torch.equal(merged["model.norm.weight"], b["model.norm.weight"])
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 6
    with torch.no_grad():
        assert torch.isfinite(model(torch.arange(8)[None]).logits).all()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: [s.update(layer_range=[2, 5]) for s in r["slices"][1]["sources"]], "outside its 4 layers"),
        (lambda r: r["slices"][0]["sources"][1].update(layer_range=[0, 3]), "same number of layers"),
        (lambda r: r["slices"][1]["sources"].pop(0), "must be one of the slice's sources"),
        (lambda r: r["slices"][0]["sources"][1]["parameters"].update(density=1.5), "must be in [0, 1]"),
        (lambda r: r["slices"][0].update(residual_weight=0.5), "unsupported key(s) residual_weight"),
    ],
)
def test_bad_slices_are_named(change, expected, four_layer_models):
    recipe = _ties_slices(four_layer_models)
    change(recipe)
    with pytest.raises(ExmeError, match=re.escape(expected)):
        build_state_dict(recipe_from_dict(recipe), device="cpu")

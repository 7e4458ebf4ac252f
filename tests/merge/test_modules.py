"""mergekit's `modules`: a merge of its own for each module of a vision-language model (text decoder,
vision tower, projector), from its own models or slices, with its own parameters."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from exme.errors import ExmeError
from exme.merge.execute import build_state_dict, merge_to_dir
from exme.merge.modules import MODULE_LAYOUTS, modules_of
from exme.merge.multi import load_recipe
from exme.merge.recipe import recipe_from_dict
from tests.merge.test_mergekit_parity import assert_equal_up_to_rounding
from tests.tiny_models import load_folder, load_model


def _source(model, first: int, end: int, **parameters) -> dict:
    return {
        "model": str(model),
        "layer_range": [first, end],
        **({"parameters": parameters} if parameters else {}),
    }


def _stacked(models) -> dict:
    """The text decoder merged linearly with a gradient over its 2 layers, the vision tower stacked
    from two fine-tunes' layers (3 + 2 of them) and the projector from one fine-tune."""
    a, b = str(models["ft_a"]), str(models["ft_b"])
    return {
        "merge_method": "linear",
        "modules": {
            "text_decoder": {
                "models": [{"model": a, "parameters": {"weight": [0.2, 0.9]}}, {"model": b}],
                "parameters": {"weight": 0.5},
            },
            "vision_tower": {
                "slices": [{"sources": [_source(a, 0, 3)]}, {"sources": [_source(b, 1, 3)]}],
            },
            "multi_modal_projector": {"models": [{"model": b}]},
        },
        "parameters": {"weight": 1.0},
    }


def test_modules_match_mergekit_and_set_each_modules_layer_count(
    vision_language_models, run_mergekit, tmp_path
):
    recipe = _stacked(vision_language_models)
    ours = build_state_dict(recipe_from_dict(recipe), device="cpu")
    assert_equal_up_to_rounding(ours, run_mergekit(recipe), torch.float32)

    out = merge_to_dir(recipe_from_dict(recipe), tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    assert config["vision_config"]["depth"] == 5
    assert config["num_hidden_layers"] == config["text_config"]["num_hidden_layers"] == 2
    b = load_folder(vision_language_models["ft_b"])
    assert torch.equal(ours["visual.blocks.4.mlp.fc1.weight"], b["visual.blocks.2.mlp.fc1.weight"])
    assert torch.equal(ours["visual.merger.mlp.0.weight"], b["visual.merger.mlp.0.weight"])
    model = load_model(out)
    assert model.config.vision_config.depth == 5
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.arange(6)[None]).logits).all()
    # the written recipe is the same merge
    assert load_recipe(out / "merge_recipe.yml") == recipe_from_dict(recipe)
    assert yaml.safe_load((out / "mergekit_config.yml").read_text())["modules"] == recipe["modules"]


def test_every_tensor_of_each_known_layout_has_one_module():
    names = ["model.layers.0.mlp.up_proj.weight", "lm_head.weight", "visual.blocks.1.attn.qkv.weight",
             "visual.merger.mlp.0.weight", "model.visual.merger.ln_q.weight"]  # fmt: skip
    assert list(modules_of(names, MODULE_LAYOUTS["qwen2_vl"], "qwen2_vl").values()) == [
        "text_decoder", "text_decoder", "vision_tower", "multi_modal_projector", "multi_modal_projector"
    ]  # fmt: skip
    gemma = ["language_model.model.layers.0.mlp.up_proj.weight", "model.language_model.norm.weight",
             "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",
             "multi_modal_projector.mm_soft_emb_norm.weight"]  # fmt: skip
    assert list(modules_of(gemma, MODULE_LAYOUTS["gemma3"], "gemma3").values()) == [
        "text_decoder", "text_decoder", "vision_tower", "multi_modal_projector"
    ]  # fmt: skip
    with pytest.raises(
        ExmeError, match="tensor 'audio.w' belongs to none of the modules of model_type 'qwen2_vl'"
    ):
        modules_of(["audio.w"], MODULE_LAYOUTS["qwen2_vl"], "qwen2_vl")


def _modules(recipe: dict) -> dict:
    return recipe["modules"]


def _first_model(recipe: dict, module: str) -> str:
    return recipe["modules"][module]["models"][0]["model"]


def _slice_the_projector(recipe: dict) -> None:
    projector = _modules(recipe)["multi_modal_projector"]
    projector["slices"] = [{"sources": [_source(projector.pop("models")[0]["model"], 0, 2)]}]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: _modules(r).update(audio_tower=_modules(r)["multi_modal_projector"]),
         "model_type 'qwen2_vl' has no module 'audio_tower' (its modules: text_decoder, vision_tower, "
         "multi_modal_projector)"),
        (lambda r: _modules(r).pop("multi_modal_projector"),
         "'modules' has no entry for module 'multi_modal_projector', which holds tensors such as "
         "'visual.merger."),
        (lambda r: r.update(models=_modules(r)["text_decoder"]["models"]),
         "exactly one of a non-empty 'models' or 'slices' list or 'modules'"),
        (lambda r: _modules(r)["vision_tower"].update(models=[{"model": "x"}]),
         "in module 'vision_tower': give one of a non-empty 'models' or 'slices' list"),
        (lambda r: _modules(r)["vision_tower"].update(residual_weight=1),
         "in module 'vision_tower': unknown key(s) residual_weight"),
        (_slice_the_projector, "in module 'multi_modal_projector', slice 1: layer_range [0, 2] of model"),
        (lambda r: _modules(r)["vision_tower"]["slices"][1]["sources"][0].update(layer_range=[1, 4]),
         "in module 'vision_tower', slice 2: layer_range [1, 4] of model"),
        (lambda r: _modules(r)["text_decoder"].update(parameters={"weight": -1, "normalize": 2}),
         "parameter 'normalize' in module 'text_decoder'"),
        (lambda r: _modules(r)["text_decoder"]["models"].append({"model": _first_model(r, "text_decoder")}),
         "in module 'text_decoder': a model is listed twice in 'models'"),
        (lambda r: r.update(modules=[1]), "'modules' must be a mapping of module names to merges"),
    ],
    ids=["unknown-module", "missing-module", "models-and-modules", "models-and-slices", "unknown-key",
         "projector-has-no-layers", "outside-the-tower", "bad-module-parameter", "listed-twice",
         "not-a-mapping"],
)  # fmt: skip
def test_bad_modules_are_errors_naming_the_problem(change, expected, vision_language_models):
    recipe = _stacked(vision_language_models)
    change(recipe)
    with pytest.raises(ExmeError, match=re.escape(expected)):
        build_state_dict(recipe_from_dict(recipe), device="cpu")


def test_modules_of_a_model_without_known_modules_are_an_error_naming_its_model_type(four_layer_models):
    models = [{"model": str(four_layer_models["ft_a"]), "parameters": {"weight": 1.0}}]
    recipe = {"merge_method": "linear", "modules": {"text_decoder": {"models": models}}}
    with pytest.raises(ExmeError, match="has model_type 'llama', whose modules exme does not know"):
        build_state_dict(recipe_from_dict(recipe), device="cpu")

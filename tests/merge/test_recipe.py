"""Recipes round-trip through YAML and dicts; mergekit's shapes of keys are accepted."""

from __future__ import annotations

import re

import pytest

from exme.errors import ExmeError
from exme.merge.multi import load_recipe
from exme.merge.recipe import TokenizerSettings, recipe_from_dict, write_recipe

EXME = {
    "merge_method": "exme",
    "base_model": "results/demo/base",
    "models": [
        {"model": "results/demo/sft/step-40", "parameters": {"alpha": 0.3, "weight": 0.5}},
        {"model": "results/demo/sft/step-80", "parameters": {"alpha": 0.2, "weight": 0.5}},
    ],
    "dtype": "float32",
}


def test_recipe_round_trips_through_a_yaml_file(tmp_path):
    recipe = recipe_from_dict(EXME)
    write_recipe(recipe, tmp_path / "recipe.yml")
    assert load_recipe(tmp_path / "recipe.yml") == recipe
    assert recipe.to_dict() == EXME
    assert [p.name for p in tmp_path.iterdir()] == ["recipe.yml"]


def test_tokenizer_section_and_tokenizer_source_give_the_same_settings():
    section = recipe_from_dict({**EXME, "tokenizer": {"source": "base"}})
    assert section.tokenizer_settings == TokenizerSettings("base")
    assert recipe_from_dict({**EXME, "tokenizer_source": "base"}).tokenizer_settings == TokenizerSettings(
        "base"
    )
    assert (
        recipe_from_dict({**EXME, "tokenizer": {}}).tokenizer_settings.source == "union"
    )  # mergekit's default
    assert section.to_dict()["tokenizer"] == {"source": "base"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"tokenizer": {"source": "base"}, "tokenizer_source": "base"}, "either 'tokenizer' or"),
        ({"tokenizer": {"source": "base", "pad": 8}}, "tokenizer must be a mapping of"),
        ({"tokenizer": {"pad_to_multiple_of": 0}}, "pad_to_multiple_of must be a positive integer"),
        ({"tokenizer": {"tokens": {"<x>": {"source": {"kind": "one"}}}}}, "tokens['<x>'].source must be"),
        ({"chat_template": "chatlm"}, "chat_template must be one of auto, chatml"),
        ({"models": [], "slices": []}, "exactly one of a non-empty 'models' or 'slices'"),
        ({"modules": {"text_decoder": {"models": EXME["models"]}}}, "or 'slices' list or 'modules'"),
        ({"dtype": "float8"}, "dtype must be one of"),
        ({"parameters": {"normalize": "yes"}}, "'normalize' in the global parameters must be a bool"),
        ({"random_seed": 1.5}, "random_seed must be an integer"),
        ({"models": EXME["models"][:1] * 2}, "listed twice"),
    ],
)
def test_invalid_recipes_are_refused_with_the_key_named(change, expected):
    with pytest.raises(ExmeError, match=re.escape(expected)):
        recipe_from_dict({**EXME, **change})


def test_global_parameter_given_per_model_is_refused():
    models = [{**m, "parameters": {**m["parameters"], "normalize": True}} for m in EXME["models"]]
    with pytest.raises(ExmeError, match="'normalize' of 'exme' is global"):
        recipe_from_dict({**EXME, "models": models})


def test_extrapolate_takes_exactly_one_model():
    with pytest.raises(ExmeError, match="exactly 1 non-base model"):
        recipe_from_dict({**EXME, "merge_method": "extrapolate"})

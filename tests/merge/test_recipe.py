"""Recipes round-trip through YAML and dicts; mergekit's shapes of keys are accepted."""

from __future__ import annotations

import pytest

from exme.errors import ExmeError
from exme.merge.recipe import load_recipe, recipe_from_dict, write_recipe

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


def test_tokenizer_source_synonym_is_accepted():
    recipe = recipe_from_dict({**EXME, "tokenizer": {"source": "base"}})
    assert recipe.tokenizer_model == "results/demo/base"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"tokenizer": {"source": "union"}}, "'union' is not supported"),
        ({"tokenizer": {"source": "base", "tokens": {}}}, "only 'tokenizer: {source: MODEL}'"),
        ({"dtype": "float8"}, "dtype must be one of"),
        ({"parameters": {"normalize": "yes"}}, "'normalize' in the global parameters must be a bool"),
        ({"random_seed": 1.5}, "random_seed must be an integer"),
        ({"models": EXME["models"][:1] * 2}, "listed twice"),
    ],
)
def test_invalid_recipes_are_refused_with_the_key_named(change, expected):
    with pytest.raises(ExmeError, match=expected.replace("(", r"\(").replace("{", r"\{")):
        recipe_from_dict({**EXME, **change})


def test_global_parameter_given_per_model_is_refused():
    models = [{**m, "parameters": {**m["parameters"], "normalize": True}} for m in EXME["models"]]
    with pytest.raises(ExmeError, match="'normalize' of 'exme' is global"):
        recipe_from_dict({**EXME, "models": models})


def test_extrapolate_takes_exactly_one_model():
    with pytest.raises(ExmeError, match="exactly 1 non-base model"):
        recipe_from_dict({**EXME, "merge_method": "extrapolate"})

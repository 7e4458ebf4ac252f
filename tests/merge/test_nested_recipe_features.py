"""Nested recipes with mergekit's features: whole-tensor methods, slices (of nested recipes and in
them), vocabulary unions over a nested recipe, integer buffers, and the output folder's provenance.
Each gives the weights of the merges written out step by step; what cannot compose is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from exme.errors import ExmeError
from exme.merge.execute import build_state_dict, merge_to_dir
from exme.merge.plan import plan_merge
from exme.merge.provenance import MERGEKIT_CONFIG_FILE
from exme.merge.recipe import recipe_from_dict
from tests.tiny_models import load_folder, write_yaml


def _models(method: str, base: Path | None, weights: dict[Path, float], **extra) -> dict:
    recipe = {
        "merge_method": method,
        "models": [{"model": str(model), "parameters": {"weight": w}} for model, w in weights.items()],
        **extra,
    }
    return {**recipe, "base_model": str(base)} if base else recipe


def _frankenmerge(first: Path, second: Path) -> dict:
    """Six layers from two four-layer models."""
    return {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": str(first), "layer_range": [0, 3]}]},
            {"sources": [{"model": str(second), "layer_range": [1, 4]}]},
        ],
    }


def _assert_same_weights(nested: dict, step_by_step_folder: Path) -> None:
    expected = load_folder(step_by_step_folder)
    assert nested.keys() == expected.keys()
    for name, tensor in expected.items():
        assert nested[name].dtype == tensor.dtype, name
        assert torch.equal(nested[name], tensor), name


@pytest.mark.parametrize("method", ["ties", "della", "breadcrumbs_ties"])
def test_whole_tensor_methods_over_nested_recipes_equal_the_step_by_step_merge(
    four_layer_models, method, tmp_path
):
    base = four_layer_models["base"]
    inner = _models("task_arithmetic", base, {four_layer_models["ft_a"]: 0.6, four_layer_models["ft_b"]: 0.6})
    inner_file = write_yaml(tmp_path / "inner.yml", inner)
    extra = {"parameters": {"density": 0.5}, "random_seed": 3}
    outer = _models(method, base, {inner_file: 1.0, four_layer_models["ft_c"]: 0.5}, **extra)
    nested = build_state_dict(recipe_from_dict(outer), device="cpu")

    inner_folder = merge_to_dir(recipe_from_dict(inner), tmp_path / "inner")
    written = _models(method, base, {inner_folder: 1.0, four_layer_models["ft_c"]: 0.5}, **extra)
    _assert_same_weights(nested, merge_to_dir(recipe_from_dict(written), tmp_path / "out"))


def test_slices_of_a_nested_recipe_equal_the_step_by_step_merge(four_layer_models, tmp_path):
    inner = _models("linear", None, {four_layer_models["ft_a"]: 0.5, four_layer_models["ft_b"]: 0.5})
    inner_file = write_yaml(tmp_path / "inner.yml", inner)
    out = merge_to_dir(recipe_from_dict(_frankenmerge(inner_file, four_layer_models["ft_c"])), tmp_path / "o")

    inner_folder = merge_to_dir(recipe_from_dict(inner), tmp_path / "inner")
    written = _frankenmerge(inner_folder, four_layer_models["ft_c"])
    _assert_same_weights(load_folder(out), merge_to_dir(recipe_from_dict(written), tmp_path / "written"))
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 6


def test_a_nested_frankenmerge_is_a_model_of_its_own_depth(four_layer_models, tmp_path):
    frankenmerges = [
        _frankenmerge(four_layer_models["ft_a"], four_layer_models["ft_b"]),
        _frankenmerge(four_layer_models["ft_b"], four_layer_models["ft_c"]),
    ]
    files = [write_yaml(tmp_path / f"franken{i}.yml", recipe) for i, recipe in enumerate(frankenmerges)]
    outer = {"merge_method": "slerp", "base_model": str(files[0]), "models": [{"model": str(files[1])}],
             "parameters": {"t": [0, 0.5, 1]}}  # fmt: skip
    out = merge_to_dir(recipe_from_dict(outer), tmp_path / "out")

    folders = [merge_to_dir(recipe_from_dict(r), tmp_path / f"f{i}") for i, r in enumerate(frankenmerges)]
    written = {**outer, "base_model": str(folders[0]), "models": [{"model": str(folders[1])}]}
    _assert_same_weights(load_folder(out), merge_to_dir(recipe_from_dict(written), tmp_path / "written"))
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 6


def test_a_vocabulary_union_over_a_nested_recipe_equals_the_step_by_step_merge(vocabulary_models, tmp_path):
    inner = _models("linear", None, {vocabulary_models["base"]: 0.5, vocabulary_models["tuned"]: 0.5})
    inner_file = write_yaml(tmp_path / "inner.yml", inner)
    outer = _models(
        "linear", None, {inner_file: 0.5, vocabulary_models["other"]: 0.5}, tokenizer_source="union"
    )
    out = merge_to_dir(recipe_from_dict(outer), tmp_path / "out")

    inner_folder = merge_to_dir(recipe_from_dict(inner), tmp_path / "inner")
    written = _models("linear", None, {inner_folder: 0.5, vocabulary_models["other"]: 0.5},
                      tokenizer_source="union")  # fmt: skip
    written_folder = merge_to_dir(recipe_from_dict(written), tmp_path / "written")
    _assert_same_weights(load_folder(out), written_folder)
    assert (out / "tokenizer.json").read_text() == (written_folder / "tokenizer.json").read_text()


def test_a_nested_recipe_that_merges_vocabularies_is_refused(vocabulary_models, tmp_path):
    inner = _models("linear", None, {vocabulary_models["base"]: 0.5, vocabulary_models["other"]: 0.5},
                    tokenizer_source="union")  # fmt: skip
    inner_file = write_yaml(tmp_path / "inner.yml", inner)
    outer = _models("linear", None, {inner_file: 0.5, vocabulary_models["tuned"]: 0.5})
    with pytest.raises(ExmeError, match=f"recipe {inner_file} re-indexes the vocabulary"):
        plan_merge(recipe_from_dict(outer))


def test_integer_buffers_pass_through_nested_recipes(family, tmp_path):
    copies = []
    for name, model in (("a", family.ft_a), ("b", family.ft_b), ("base", family.base)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_bytes((model / "config.json").read_bytes())
        tensors = {**load_file(model / "model.safetensors"), "model.position_ids": torch.arange(6)[None]}
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
        copies.append(folder)
    inner_file = write_yaml(tmp_path / "inner.yml", _models("linear", None, {copies[0]: 1.0, copies[1]: 1.0}))
    merged = build_state_dict(recipe_from_dict(_models("task_arithmetic", copies[2], {inner_file: 2.0})))
    assert torch.equal(merged["model.position_ids"], torch.arange(6)[None])
    base, a, b = load_folder(copies[2]), load_folder(copies[0]), load_folder(copies[1])
    expected = 2 * (a["model.norm.weight"] + b["model.norm.weight"]) / 2 - base["model.norm.weight"]
    torch.testing.assert_close(merged["model.norm.weight"], expected)


def test_a_recipe_of_recipes_keeps_its_metadata_and_has_no_mergekit_config(family, tmp_path):
    inner_file = write_yaml(
        tmp_path / "inner.yml", _models("linear", None, {family.ft_a: 1.0, family.ft_b: 1.0})
    )
    outer = _models("task_arithmetic", family.base, {inner_file: 1.0}, metadata={"track": "nested"})
    out = merge_to_dir(recipe_from_dict(outer), tmp_path / "out")
    assert yaml.safe_load((out / "merge_recipe.yml").read_text())["metadata"] == {"track": "nested"}
    assert not (out / MERGEKIT_CONFIG_FILE).exists()
    assert "mergekit-yaml" not in (out / "README.md").read_text()

    plain_recipe = _models("task_arithmetic", family.base, {family.ft_a: 1.0}, metadata={"track": "plain"})
    plain = merge_to_dir(recipe_from_dict(plain_recipe), tmp_path / "plain")
    assert "metadata" not in yaml.safe_load((plain / MERGEKIT_CONFIG_FILE).read_text())
    assert yaml.safe_load((plain / "merge_recipe.yml").read_text())["metadata"] == {"track": "plain"}

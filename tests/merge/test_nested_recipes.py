"""A recipe may name other recipes as models: it gives the weights of the merges written out step by
step, computing the nested merges on the fly, and cycles or missing files are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from exme.errors import ExmeError
from exme.merge.blocks import row_blocks, splittable
from exme.merge.execute import build_state_dict, merge_to_dir
from exme.merge.plan import plan_merge
from exme.merge.recipe import recipe_from_dict
from tests.tiny_models import load_folder, write_yaml


def _slerp(first: Path, second: Path, t: float) -> dict:
    return {
        "merge_method": "slerp",
        "base_model": str(first),
        "models": [{"model": str(first)}, {"model": str(second)}],
        "parameters": {"t": t},
    }


def _task_arithmetic(base: Path, weights: dict[Path, float]) -> dict:
    return {
        "merge_method": "task_arithmetic",
        "base_model": str(base),
        "models": [{"model": str(model), "parameters": {"weight": w}} for model, w in weights.items()],
    }


def _linear(weights: dict[Path, float]) -> dict:
    return {
        "merge_method": "linear",
        "models": [{"model": str(model), "parameters": {"weight": w}} for model, w in weights.items()],
    }


def _assert_same_weights(nested: dict, step_by_step_folder: Path) -> None:
    expected = load_folder(step_by_step_folder)
    assert nested.keys() == expected.keys()
    for name, tensor in expected.items():
        assert nested[name].dtype == tensor.dtype, name
        assert torch.equal(nested[name], tensor), name


def test_slerp_of_a_slerp_equals_the_merges_written_out_step_by_step(family, tmp_path):
    inner = _slerp(family.ft_a, family.ft_b, 0.3)
    inner_file = write_yaml(tmp_path / "inner.yaml", inner)
    nested = build_state_dict(recipe_from_dict(_slerp(inner_file, family.base, 0.6)), device="cpu")

    inner_folder = merge_to_dir(recipe_from_dict(inner), tmp_path / "inner")
    outer_folder = merge_to_dir(recipe_from_dict(_slerp(inner_folder, family.base, 0.6)), tmp_path / "outer")
    _assert_same_weights(nested, outer_folder)


def test_linear_of_two_task_arithmetic_recipes_equals_the_step_by_step_merge(family, tmp_path):
    first = _task_arithmetic(family.base, {family.ft_a: 0.7})
    second = _task_arithmetic(family.base, {family.ft_a: 0.5, family.ft_b: 0.5})
    files = [write_yaml(tmp_path / f"ta{i}.yml", recipe) for i, recipe in enumerate((first, second))]
    nested = build_state_dict(recipe_from_dict(_linear({files[0]: 0.4, files[1]: 0.6})), device="cpu")

    folders = [merge_to_dir(recipe_from_dict(r), tmp_path / f"ta{i}") for i, r in enumerate((first, second))]
    outer_folder = merge_to_dir(
        recipe_from_dict(_linear({folders[0]: 0.4, folders[1]: 0.6})), tmp_path / "out"
    )
    _assert_same_weights(nested, outer_folder)


def test_elementwise_nested_merges_are_computed_a_block_of_rows_at_a_time(family, tmp_path, monkeypatch):
    monkeypatch.setattr("exme.merge.blocks.BLOCK_ELEMENTS", 100)  # less than a row of the embedding
    inner = _task_arithmetic(family.base, {family.ft_a: 0.5, family.ft_b: 0.5})
    inner_file = write_yaml(tmp_path / "inner.yml", inner)
    outer = recipe_from_dict(_task_arithmetic(family.base, {inner_file: 1.5}))  # extrapolating a merge
    embedding = next(job for job in plan_merge(outer).jobs if job.output.name == "model.embed_tokens.weight")
    assert splittable(embedding.locations) and len(row_blocks(embedding.output.shape, split=True)) > 1
    nested = build_state_dict(outer, device="cpu")

    inner_folder = merge_to_dir(recipe_from_dict(inner), tmp_path / "inner")
    outer_recipe = _task_arithmetic(family.base, {inner_folder: 1.5})
    _assert_same_weights(nested, merge_to_dir(recipe_from_dict(outer_recipe), tmp_path / "outer"))


def test_a_nested_merge_of_whole_tensors_is_not_split(family, tmp_path):
    inner_file = write_yaml(tmp_path / "inner.yml", _slerp(family.ft_a, family.ft_b, 0.5))
    outer = recipe_from_dict(_task_arithmetic(family.base, {inner_file: 1.0}))
    assert not splittable(plan_merge(outer).jobs[0].locations)


def test_a_recipe_named_twice_in_a_tree_is_one_model_and_gives_the_step_by_step_weights(
    family, tmp_path, monkeypatch
):
    # shared.yml feeds both a slerp (whole tensors) and a task arithmetic (blocks of rows): its
    # blocks are computed once and handed to both, which must not see each other's in-place edits.
    monkeypatch.setattr("exme.merge.blocks.BLOCK_ELEMENTS", 100)
    shared = _task_arithmetic(family.base, {family.ft_a: 0.5, family.ft_b: 0.5})
    shared_file = write_yaml(tmp_path / "shared.yml", shared)
    slerped = write_yaml(tmp_path / "slerped.yml", _slerp(shared_file, family.ft_a, 0.4))
    extended = write_yaml(tmp_path / "extended.yml", _task_arithmetic(family.base, {shared_file: 1.5}))
    top = recipe_from_dict(_linear({slerped: 0.5, extended: 0.5, shared_file: 1.0}))
    plan = plan_merge(top)
    assert plan.models[0].plan.base is plan.models[1].plan.models[0] is plan.models[2]
    nested = build_state_dict(top, device="cpu")

    shared_folder = merge_to_dir(recipe_from_dict(shared), tmp_path / "shared")
    slerped_folder = merge_to_dir(recipe_from_dict(_slerp(shared_folder, family.ft_a, 0.4)), tmp_path / "s")
    extended_recipe = _task_arithmetic(family.base, {shared_folder: 1.5})
    extended_folder = merge_to_dir(recipe_from_dict(extended_recipe), tmp_path / "e")
    top_recipe = _linear({slerped_folder: 0.5, extended_folder: 0.5, shared_folder: 1.0})
    _assert_same_weights(nested, merge_to_dir(recipe_from_dict(top_recipe), tmp_path / "top"))


def test_a_merged_recipe_of_recipes_takes_config_and_tokenizer_from_its_leaf_folders(
    family, tokenizer_model, tmp_path
):
    inner = write_yaml(tmp_path / "inner.yaml", _slerp(tokenizer_model, family.ft_a, 0.5))
    out = merge_to_dir(recipe_from_dict(_slerp(inner, family.ft_b, 0.5)), tmp_path / "out")
    plan = plan_merge(recipe_from_dict(_slerp(inner, family.ft_b, 0.5)))
    assert plan.config_folder == plan.tokenizer_folder == tokenizer_model
    assert (out / "tokenizer.json").read_bytes() == (tokenizer_model / "tokenizer.json").read_bytes()
    assert (out / "config.json").exists()


def test_a_cycle_of_recipes_is_an_error_naming_it(family, tmp_path):
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    write_yaml(first, _slerp(second, family.ft_a, 0.5))
    write_yaml(second, _slerp(first, family.ft_b, 0.5))
    with pytest.raises(ExmeError, match="includes itself") as error:
        plan_merge(recipe_from_dict(_linear({first: 1.0})))
    assert f"{first} -> {second} -> {first}" in str(error.value)


def test_a_recipe_naming_itself_is_an_error(family, tmp_path):
    recipe_file = tmp_path / "self.yml"
    write_yaml(recipe_file, _slerp(recipe_file, family.ft_a, 0.5))
    with pytest.raises(ExmeError, match=f"recipe {recipe_file} includes itself"):
        plan_merge(recipe_from_dict(_linear({recipe_file: 1.0})))


def test_a_missing_nested_recipe_is_named(family, tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ExmeError, match=f"recipe file {missing} does not exist"):
        plan_merge(recipe_from_dict(_slerp(family.ft_a, missing, 0.5)))


def test_an_invalid_nested_recipe_is_named(family, tmp_path):
    bad = write_yaml(tmp_path / "bad.yaml", {"merge_method": "average", "models": [{"model": "x"}]})
    with pytest.raises(ExmeError, match=f"recipe {bad}: unknown merge_method 'average'"):
        plan_merge(recipe_from_dict(_slerp(family.ft_a, bad, 0.5)))


def test_nested_shapes_are_checked_like_folders(family, make_family, tmp_path):
    wider = make_family(layers=3)  # another architecture depth: a tensor the others lack
    inner = write_yaml(tmp_path / "inner.yaml", _slerp(wider.ft_a, wider.ft_b, 0.5))
    with pytest.raises(ExmeError, match="model.layers.2") as error:
        plan_merge(recipe_from_dict(_slerp(family.ft_a, inner, 0.5)))
    assert str(inner) in str(error.value)

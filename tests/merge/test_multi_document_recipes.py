"""Multi-document recipes (mergekit-multi's): named merges that later ones use as models, computed
as they are read, with only the final merge written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from exme.errors import ExmeError
from exme.merge.cli import main
from exme.merge.execute import build_state_dict, merge_to_dir
from exme.merge.plan import plan_merge
from exme.merge.recipe import load_recipe, recipe_from_dict
from tests.tiny_models import load_folder


def _slerp(first: str, second: str, t: float, **extra) -> dict:
    models = [{"model": first}, {"model": second}]
    return {"merge_method": "slerp", "base_model": first, "models": models, "parameters": {"t": t}, **extra}


def _linear(weights: dict[str | Path, float], **extra) -> dict:
    models = [{"model": str(model), "parameters": {"weight": w}} for model, w in weights.items()]
    return {"merge_method": "linear", "models": models, **extra}


def _write(path: Path, *documents: dict) -> Path:
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


def _stages(family) -> tuple[dict, dict]:
    halfway = _slerp(str(family.base), str(family.ft_a), 0.5, name="halfway")
    return halfway, _linear({"halfway": 0.6, family.ft_b: 0.4})


def test_final_merge_equals_the_merges_written_out_step_by_step(family, tmp_path):
    halfway, final = _stages(family)
    merged = build_state_dict(load_recipe(_write(tmp_path / "multi.yml", halfway, final)), device="cpu")

    halfway_folder = merge_to_dir(recipe_from_dict(halfway), tmp_path / "halfway")
    expected = build_state_dict(recipe_from_dict(_linear({halfway_folder: 0.6, family.ft_b: 0.4})))
    assert merged.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(merged[name], tensor), name


def test_the_final_merge_may_be_named_and_a_stage_may_be_used_twice(family, tmp_path):
    halfway, _ = _stages(family)
    other = _slerp("halfway", str(family.ft_b), 0.3, name="other")
    final = _linear({"other": 0.5, "halfway": 0.5}, name="final")
    recipe = load_recipe(_write(tmp_path / "multi.yml", final, other, halfway))
    assert recipe.name == "final"
    assert list(recipe.stages) == ["other", "halfway"]
    plan = plan_merge(recipe)
    assert plan.folders["halfway"] is plan.folders["other"].plan.folders["halfway"]  # one model


def test_the_written_folder_reruns_with_exme_and_with_mergekit_multi(family, tmp_path, monkeypatch):
    from click.testing import CliRunner
    from mergekit.scripts.multimerge import main as mergekit_multi

    halfway, final = _stages(family)
    assert main(["merge", str(_write(tmp_path / "multi.yml", halfway, final)), str(tmp_path / "out")]) == 0
    ours = load_folder(tmp_path / "out")
    written = list(yaml.safe_load_all((tmp_path / "out" / "merge_recipe.yml").read_text()))
    assert [document.get("name") for document in written] == ["halfway", None]
    assert build_state_dict(load_recipe(tmp_path / "out" / "merge_recipe.yml")).keys() == ours.keys()
    config = tmp_path / "out" / "mergekit_config.yml"
    assert "mergekit-multi mergekit_config.yml" in (tmp_path / "out" / "README.md").read_text()
    arguments = [str(config), "-I", str(tmp_path / "steps"), "--out-path", str(tmp_path / "mk"), "--quiet"]
    result = CliRunner().invoke(mergekit_multi, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    theirs = load_folder(tmp_path / "mk")
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert (ours[name] - tensor).abs().max() <= 1e-6, name


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        (lambda f: [_linear({f.ft_a: 0.5, f.ft_b: 0.5}), _linear({f.ft_a: 0.2, f.ft_b: 0.8})],
         "holds 2 merges without a name; only the final merge may have none"),
        (lambda f: [_linear({f.ft_a: 1.0}, name="a"), _linear({f.ft_b: 1.0}, name="a"), _linear({"a": 1.0})],
         "more than one merge is named 'a'"),
        (lambda f: [_linear({f.ft_a: 1.0}, name="a"), _linear({f.ft_b: 1.0}, name="b")],
         "no other uses; unused: 'a', 'b')"),
        (lambda f: [_linear({f.ft_a: 1.0}, name="spare"), _linear({f.ft_a: 0.5, f.ft_b: 0.5})],
         "the final merge does not use 'spare'"),
        (lambda f: [_linear({f.ft_a: 1.0}, name="a"), {"merge_method": "linear", "models": [{"model": "a"}],
                                                       "density": 2}],
         "document 2 of recipe"),
    ],
    ids=["two-unnamed", "same-name", "no-final", "unused", "bad-document"],
)  # fmt: skip
def test_bad_multi_document_recipes_are_errors_naming_the_problem(family, tmp_path, documents, message):
    with pytest.raises(ExmeError) as error:
        load_recipe(_write(tmp_path / "multi.yml", *documents(family)))
    assert message in str(error.value)


def test_merges_using_each_other_in_a_cycle_are_an_error_naming_it(family, tmp_path):
    first = _slerp("second", str(family.ft_a), 0.5, name="first")
    second = _slerp("first", str(family.ft_b), 0.5, name="second")
    recipe = load_recipe(_write(tmp_path / "multi.yml", first, second, _linear({"first": 1.0})))
    with pytest.raises(ExmeError, match="merge 'first' includes itself: first -> second -> first"):
        plan_merge(recipe)


def test_a_nested_recipe_file_keeps_its_own_names(family, tmp_path):
    inner = _write(tmp_path / "inner.yml", _slerp(str(family.base), str(family.ft_b), 0.9, name="step"),
                   _linear({"step": 1.0}))  # fmt: skip
    outer = _write(tmp_path / "outer.yml", _slerp(str(family.base), str(family.ft_a), 0.1, name="step"),
                   _linear({"step": 0.5, inner: 0.5}))  # fmt: skip
    plan = plan_merge(load_recipe(outer))
    inner_step = plan.folders[str(inner)].plan.folders["step"]
    assert inner_step is not plan.folders["step"]
    assert inner_step.plan.recipe.models[-1].model == str(family.ft_b)

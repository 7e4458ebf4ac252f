"""Multi-document recipes (mergekit-multi's): named merges that later ones use as models, computed
as they are read, with only the final merge written; or, with --intermediate-dir, each written to a
folder of its own and read from there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from exme.errors import ExmeError
from exme.merge.cli import main
from exme.merge.execute import build_state_dict, merge_to_dir, write_stages
from exme.merge.multi import load_recipe
from exme.merge.plan import plan_merge
from exme.merge.recipe import recipe_from_dict
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


def test_the_written_folder_reruns_with_exme_and_with_mergekit_multi(family, tmp_path, capsys):
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

    # mergekit-multi's command line, unchanged, writes the same intermediate and final models
    exme_arguments = [str(config), "-I", str(tmp_path / "our_steps"), "--out-path", str(tmp_path / "ours")]
    assert main(["merge", *exme_arguments, "--quiet"]) == 0
    for folder, mergekit_folder in (("ours", "mk"), ("our_steps/halfway", "steps/halfway")):
        written, expected = load_folder(tmp_path / folder), load_folder(tmp_path / mergekit_folder)
        assert written.keys() == expected.keys()
        for name, tensor in expected.items():
            assert (written[name] - tensor).abs().max() <= 1e-6, f"{folder}: {name}"
    # mergekit-multi's intermediate folder (no exme recipe in it) is kept, as mergekit-multi keeps it
    capsys.readouterr()
    assert main(["merge", str(config), str(tmp_path / "reused"), "-I", str(tmp_path / "steps")]) == 0
    assert f"merge 'halfway': {tmp_path / 'steps' / 'halfway'} kept" in capsys.readouterr().err
    reused = load_folder(tmp_path / "reused")
    assert all((reused[name] - tensor).abs().max() <= 1e-6 for name, tensor in theirs.items())


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        (lambda f: [_linear({f.ft_a: 0.5, f.ft_b: 0.5}), _linear({f.ft_a: 0.2, f.ft_b: 0.8})],
         "holds 2 merges without a name; only the final merge may have none"),
        (lambda f: [_linear({f.ft_a: 1.0}, name="a"), _linear({f.ft_b: 1.0}, name="a"), _linear({"a": 1.0})],
         "more than one merge is named 'a'"),
        (lambda f: [_linear({f.ft_a: 1.0}, name="a"), _linear({f.ft_b: 1.0}, name="b")],
         "no other uses; unused: 'a', 'b')"),
        (lambda f: [_linear({f.ft_a: 1.0}, name="a"), {"merge_method": "linear", "models": [{"model": "a"}],
                                                       "density": 2}],
         "document 2 of recipe"),
    ],
    ids=["two-unnamed", "same-name", "no-final", "bad-document"],
)  # fmt: skip
def test_bad_multi_document_recipes_are_errors_naming_the_problem(family, tmp_path, documents, message):
    with pytest.raises(ExmeError) as error:
        load_recipe(_write(tmp_path / "multi.yml", *documents(family)))
    assert message in str(error.value)


def test_a_named_merge_the_final_one_does_not_use_is_written_only_to_an_intermediate_folder(
    family, tmp_path, capsys
):
    from click.testing import CliRunner
    from mergekit.scripts.multimerge import main as mergekit_multi

    spare = _linear({family.ft_a: 0.8, family.ft_b: 0.2}, name="spare")
    multi = _write(tmp_path / "multi.yml", spare, *_stages(family))
    unused = "the final merge does not use 'spare'; exme merge writes only the final merge unless"
    with pytest.raises(ExmeError, match=unused):
        plan_merge(load_recipe(multi))
    with pytest.raises(ExmeError, match=f"recipe {multi}: {unused}"):  # a recipe file named as a model
        plan_merge(recipe_from_dict(_linear({multi: 1.0})))
    assert main(["merge", str(multi), str(tmp_path / "out")]) == 2
    assert unused in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

    # with one, every named merge is written there, as mergekit-multi writes it
    arguments = [str(multi), "-I", str(tmp_path / "{}steps"), "--out-path", str(tmp_path / "{}out")]
    assert main(["merge", *(argument.format("") for argument in arguments), "--quiet"]) == 0
    mergekit_arguments = [*(argument.format("mk_") for argument in arguments), "--quiet"]
    result = CliRunner().invoke(mergekit_multi, mergekit_arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for folder in ("steps/spare", "steps/halfway", "out"):
        written, expected = load_folder(tmp_path / folder), load_folder(tmp_path / f"mk_{folder}")
        assert written.keys() == expected.keys()
        for name, tensor in expected.items():
            assert (written[name] - tensor).abs().max() <= 1e-6, f"{folder}: {name}"


def test_merges_using_each_other_in_a_cycle_are_an_error_naming_it(family, tmp_path):
    first = _slerp("second", str(family.ft_a), 0.5, name="first")
    second = _slerp("first", str(family.ft_b), 0.5, name="second")
    recipe = load_recipe(_write(tmp_path / "multi.yml", first, second, _linear({"first": 1.0})))
    with pytest.raises(ExmeError, match="merge 'first' includes itself: first -> second -> first"):
        plan_merge(recipe)
    with pytest.raises(ExmeError, match="merge 'first' includes itself: first -> second -> first"):
        write_stages(recipe.stages, tmp_path / "steps")  # before anything is written
    assert not (tmp_path / "steps").exists()


def test_a_nested_recipe_file_keeps_its_own_names(family, tmp_path):
    inner = _write(tmp_path / "inner.yml", _slerp(str(family.base), str(family.ft_b), 0.9, name="step"),
                   _linear({"step": 1.0}))  # fmt: skip
    outer = _write(tmp_path / "outer.yml", _slerp(str(family.base), str(family.ft_a), 0.1, name="step"),
                   _linear({"step": 0.5, inner: 0.5}))  # fmt: skip
    plan = plan_merge(load_recipe(outer))
    inner_step = plan.folders[str(inner)].plan.folders["step"]
    assert inner_step is not plan.folders["step"]
    assert inner_step.plan.recipe.models[-1].model == str(family.ft_b)


def _chain(family) -> tuple[dict, dict, dict]:
    """Two named merges, the second using the first, and a final merge using both."""
    halfway = _slerp(str(family.base), str(family.ft_a), 0.5, name="halfway")
    onward = _slerp("halfway", str(family.ft_b), 0.3, name="onward")
    return halfway, onward, _linear({"onward": 0.5, "halfway": 0.5})


def _stamps(folder: Path) -> dict[str, int]:
    """When each named merge's folder was written."""
    return {child.name: (child / "config.json").stat().st_mtime_ns for child in sorted(folder.iterdir())}


def test_intermediate_dir_holds_each_named_merge_and_the_final_merge_is_unchanged(family, tmp_path, capsys):
    recipe_file = _write(tmp_path / "multi.yml", _linear({"onward": 0.5, "halfway": 0.5}),
                         *reversed(_chain(family)[:2]))  # fmt: skip
    steps = tmp_path / "steps"
    assert main(["merge", str(recipe_file), str(tmp_path / "out"), "--intermediate-dir", str(steps)]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"merge 'halfway': {steps / 'halfway'} merged",  # the one the other uses, first
        f"merge 'onward': {steps / 'onward'} merged",
    ]
    quiet = [str(recipe_file), str(tmp_path / "again"), "-I", str(steps), "--no-lazy", "--quiet"]
    assert main(["merge", *quiet]) == 0 and capsys.readouterr().err == ""
    nested = build_state_dict(load_recipe(recipe_file))  # computed as read, nothing written
    written = load_folder(tmp_path / "out")
    assert written.keys() == nested.keys()
    assert all(torch.equal(written[name], tensor) for name, tensor in nested.items())

    halfway = merge_to_dir(recipe_from_dict(_chain(family)[0]), tmp_path / "halfway")
    assert all(torch.equal(load_folder(steps / "halfway")[n], t) for n, t in load_folder(halfway).items())
    onward_recipe = list(yaml.safe_load_all((steps / "onward" / "merge_recipe.yml").read_text()))
    assert [document["name"] for document in onward_recipe] == ["halfway", "onward"]  # what it reads
    # the final merge's own record keeps every document, not the intermediate folders
    final_recipe = list(yaml.safe_load_all((tmp_path / "out" / "merge_recipe.yml").read_text()))
    assert [document.get("name") for document in final_recipe] == ["onward", "halfway", None]


def test_intermediate_merges_are_kept_unless_they_or_their_inputs_changed(family, tmp_path, capsys):
    halfway, onward, final = _chain(family)
    steps, out = tmp_path / "steps", tmp_path / "out"

    def run(*documents: dict, lazy: str = "--lazy") -> dict[str, int]:
        """Run mergekit-multi's command line; when each folder was written (the output: 'out')."""
        recipe_file = _write(tmp_path / "multi.yml", *documents)
        assert main(["merge", str(recipe_file), "-I", str(steps), "--out-path", str(out), lazy]) == 0
        return {**_stamps(steps), "out": (out / "config.json").stat().st_mtime_ns}

    first = run(halfway, onward, final)
    capsys.readouterr()
    assert run(halfway, onward, final) == first  # the output folder too, as mergekit-multi's --lazy
    assert capsys.readouterr().err.splitlines()[-1] == f"final merge: {out} kept (already merged)"
    changed = run(halfway, {**onward, "parameters": {"t": 0.7}}, final)
    assert changed["halfway"] == first["halfway"]
    assert changed["onward"] > first["onward"] and changed["out"] > first["out"]
    # a changed merge is merged again, and so are the merges reading it
    again = run({**halfway, "parameters": {"t": 0.2}}, {**onward, "parameters": {"t": 0.7}}, final)
    assert all(again[name] > changed[name] for name in again)
    capsys.readouterr()
    assert run(halfway, onward, final, lazy="--no-lazy").keys() == first.keys()
    assert "kept" not in capsys.readouterr().err
    expected = build_state_dict(load_recipe(tmp_path / "multi.yml"))
    assert all(torch.equal(load_folder(out)[n], t) for n, t in expected.items())


def test_a_named_merge_of_vocabularies_needs_an_intermediate_dir(vocabulary_models, tmp_path):
    union = _linear({vocabulary_models["base"]: 0.5, vocabulary_models["other"]: 0.5}, name="union",
                    tokenizer_source="union")  # fmt: skip
    final = _linear({"union": 0.7, vocabulary_models["other"]: 0.3}, tokenizer_source="union")
    recipe_file = _write(tmp_path / "multi.yml", union, final)
    with pytest.raises(ExmeError, match="re-indexes the vocabulary .* exme merge --intermediate-dir"):
        plan_merge(load_recipe(recipe_file))

    assert main(["merge", str(recipe_file), str(tmp_path / "out"), "-I", str(tmp_path / "steps"), "-q"]) == 0
    written = _linear({tmp_path / "steps" / "union": 0.7, vocabulary_models["other"]: 0.3},
                      tokenizer_source="union")  # fmt: skip
    expected = build_state_dict(recipe_from_dict(written))
    assert all(torch.equal(load_folder(tmp_path / "out")[n], t) for n, t in expected.items())
    assert (tmp_path / "steps" / "union" / "tokenizer.json").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "give the output folder: OUT_DIR or --out-path"),
        (["a", "--out-path", "b"], "give the output folder once: as OUT_DIR or as --out-path"),
        (["-I", "steps"], "merge 2 has no name, so it is the final merge: give the output folder"),
    ],
    ids=["none", "twice", "final-merge-without-output"],
)
def test_the_output_folder_is_given_once(family, tmp_path, capsys, arguments, message):
    recipe_file = _write(tmp_path / "multi.yml", *_stages(family))
    paths = [argument if argument.startswith("-") else str(tmp_path / argument) for argument in arguments]
    assert main(["merge", str(recipe_file), *paths]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "steps").exists()


def test_named_merges_without_a_final_one_are_each_written_as_mergekit_multi_does(family, tmp_path):
    from click.testing import CliRunner
    from mergekit.scripts.multimerge import main as mergekit_multi

    halfway = _slerp(str(family.base), str(family.ft_a), 0.5, name="halfway")
    other = _slerp(str(family.base), str(family.ft_b), 0.2, name="other")
    onward = _linear({"halfway": 0.5, str(family.ft_b): 0.5}, name="onward")
    recipe_file = _write(tmp_path / "multi.yml", halfway, other, onward)
    assert main(["merge", str(recipe_file), "-I", str(tmp_path / "ours"), "-q"]) == 0
    result = CliRunner().invoke(mergekit_multi, [str(recipe_file), "-I", str(tmp_path / "theirs"), "--quiet"])
    assert result.exit_code == 0, result.output
    for name in ("halfway", "other", "onward"):
        ours, theirs = load_folder(tmp_path / "ours" / name), load_folder(tmp_path / "theirs" / name)
        assert ours.keys() == theirs.keys()
        assert all((ours[n] - t).abs().max() <= 1e-6 for n, t in theirs.items()), name


@pytest.mark.parametrize("name", ["../outside", "/tmp/elsewhere"])
def test_a_named_merge_must_stay_inside_the_intermediate_dir(family, tmp_path, name):
    stage = _slerp(str(family.base), str(family.ft_a), 0.5, name=name)
    recipe = load_recipe(_write(tmp_path / "multi.yml", stage, _linear({name: 1.0})))
    with pytest.raises(ExmeError, match=f"merge {name!r}: a name must be a folder inside the intermediate"):
        write_stages(recipe.stages, tmp_path / "steps")


def test_random_seed_option_seeds_the_named_merges_too(family, tmp_path):
    def documents(**seed) -> tuple[dict, dict]:
        models = [{"model": str(m), "parameters": {"weight": 0.5}} for m in (family.ft_a, family.ft_b)]
        dropped = {"name": "dropped", "merge_method": "dare_linear", "base_model": str(family.base),
                   "models": models, "parameters": {"density": 0.5}, **seed}  # fmt: skip
        return dropped, _linear({"dropped": 1.0}, **seed)

    recipe_file = _write(tmp_path / "multi.yml", *documents())
    assert main(["merge", str(recipe_file), str(tmp_path / "out"), "--random-seed", "7", "-q"]) == 0
    written = load_folder(tmp_path / "out")
    seeded = build_state_dict(load_recipe(_write(tmp_path / "seeded.yml", *documents(random_seed=7))))
    unseeded = build_state_dict(load_recipe(recipe_file))
    assert all(torch.equal(written[name], tensor) for name, tensor in seeded.items())
    assert any(not torch.equal(written[name], tensor) for name, tensor in unseeded.items())

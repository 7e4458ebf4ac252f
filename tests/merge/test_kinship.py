"""Model kinship: the metrics are numpy's on the flattened deltas, streaming in blocks changes nothing,
the per-tensor variant is the numel-weighted mean, and bad input fails clearly (library and CLI)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from exme.errors import ExmeError
from exme.merge.cli import main
from exme.merge.kinship import Kinship, kinship, kinship_matrix
from tests.tiny_models import load_folder, save_llama, write_yaml

SHAPES = {"w": (5, 3), "v": (4,), "z": (2, 3)}


def _toy_model(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """A model folder of float64 tensors with a minimal config."""
    path.mkdir()
    config = {"architectures": ["Toy"], "model_type": "toy", "vocab_size": 4}
    (path / "config.json").write_text(json.dumps(config))
    save_file(tensors, path / "model.safetensors")
    return path


@pytest.fixture
def toy(tmp_path) -> dict[str, Path]:
    """A base and models a, b, where b did not change tensor z (its delta there is zero)."""
    generator = torch.Generator().manual_seed(0)

    def random(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    base = {name: random(shape) for name, shape in SHAPES.items()}
    a = {name: base[name] + random(shape) for name, shape in SHAPES.items()}
    b = {name: base[name] + 0.5 * (a[name] - base[name]) + random(shape) for name, shape in SHAPES.items()}
    b["z"] = base["z"].clone()
    return {
        name: _toy_model(tmp_path / name, tensors) for name, tensors in (("base", base), ("a", a), ("b", b))
    }


def _deltas(model: Path, base: Path) -> dict[str, np.ndarray]:
    tuned, original = load_folder(model), load_folder(base)
    return {name: (tuned[name].double() - original[name].double()).numpy().ravel() for name in original}


def _numpy_kinship(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    with np.errstate(invalid="ignore"):  # a zero delta has no correlation or cosine: NaN
        return {
            "pcc": float(np.corrcoef(a, b)[0, 1]),
            "cos": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))),
            "ed": float(np.linalg.norm(a - b)),
        }


def _assert_close(result: Kinship, expected: dict[str, float], tolerance: float = 1e-12) -> None:
    for metric, value in expected.items():
        assert getattr(result, metric) == pytest.approx(value, rel=tolerance, abs=tolerance), metric


@pytest.mark.parametrize("block_elements", [None, 4], ids=["whole tensors", "blocks of one row"])
def test_metrics_are_numpys_on_the_flattened_deltas(toy, monkeypatch, block_elements):
    if block_elements:
        monkeypatch.setattr("exme.merge.blocks.BLOCK_ELEMENTS", block_elements)
    a, b = (np.concatenate(list(_deltas(toy[m], toy["base"]).values())) for m in ("a", "b"))
    _assert_close(kinship(toy["a"], toy["b"], toy["base"]), _numpy_kinship(a, b))


def test_split_is_the_numel_weighted_mean_of_per_tensor_metrics_without_nan(toy):
    a, b = _deltas(toy["a"], toy["base"]), _deltas(toy["b"], toy["base"])
    per_tensor = {name: _numpy_kinship(a[name], b[name]) for name in SHAPES}
    assert np.isnan(per_tensor["z"]["pcc"]) and np.isnan(per_tensor["z"]["cos"])  # b's delta is zero
    sizes = {name: a[name].size for name in SHAPES}
    expected = {}
    for metric in ("pcc", "cos", "ed"):
        defined = [name for name in SHAPES if not np.isnan(per_tensor[name][metric])]
        total = sum(per_tensor[name][metric] * sizes[name] for name in defined)
        expected[metric] = total / sum(sizes[name] for name in defined)
    _assert_close(kinship(toy["a"], toy["b"], toy["base"], split=True), expected)


def test_cosine_is_signed_unlike_the_authors_absolute_value(toy, tmp_path):
    base, a = load_folder(toy["base"]), load_folder(toy["a"])
    opposite = _toy_model(tmp_path / "opposite", {n: base[n] - 2 * (a[n] - base[n]) for n in base})
    result = kinship(toy["a"], opposite, toy["base"])
    delta = np.concatenate(list(_deltas(toy["a"], toy["base"]).values()))
    _assert_close(result, {"pcc": -1.0, "cos": -1.0, "ed": 3 * float(np.linalg.norm(delta))}, 1e-9)


@pytest.mark.parametrize("block_elements", [None, 100], ids=["whole tensors", "blocks of rows"])
@pytest.mark.parametrize("split", [False, True], ids=["flattened", "per tensor"])
def test_streaming_over_tiny_models_equals_the_flattened_computation(
    family, monkeypatch, block_elements, split
):
    if block_elements:  # less than a row of the embedding: every large tensor is read in several blocks
        monkeypatch.setattr("exme.merge.blocks.BLOCK_ELEMENTS", block_elements)
    a, b = _deltas(family.ft_a, family.base), _deltas(family.ft_b, family.base)
    if split:
        sizes = {name: delta.size for name, delta in a.items()}
        per_tensor = {name: _numpy_kinship(a[name], b[name]) for name in a}
        expected = {
            metric: sum(per_tensor[name][metric] * sizes[name] for name in a) / sum(sizes.values())
            for metric in ("pcc", "cos", "ed")
        }
    else:
        expected = _numpy_kinship(np.concatenate(list(a.values())), np.concatenate(list(b.values())))
    _assert_close(kinship(family.ft_a, family.ft_b, family.base, split=split, device="cpu"), expected, 1e-10)


def test_recipe_models_have_the_kinship_of_their_written_merges(family, tmp_path):
    from exme.merge.execute import merge_to_dir
    from exme.merge.multi import load_recipe

    def task_arithmetic(weight_a: float, weight_b: float) -> Path:
        models = [{"model": str(family.ft_a), "parameters": {"weight": weight_a}},
                  {"model": str(family.ft_b), "parameters": {"weight": weight_b}}]  # fmt: skip
        recipe = {"merge_method": "task_arithmetic", "base_model": str(family.base), "models": models}
        return write_yaml(tmp_path / f"ta-{weight_a}-{weight_b}.yml", recipe)

    recipes = [task_arithmetic(0.8, 0.2), task_arithmetic(0.3, 0.7)]
    folders = [merge_to_dir(load_recipe(recipe), tmp_path / recipe.stem) for recipe in recipes]
    from_recipes = kinship(*recipes, family.base).to_dict()
    _assert_close(kinship(*folders, family.base), from_recipes)


def test_the_matrix_holds_every_pair_and_equals_pairwise_kinship(family, make_family):
    other = make_family(sharded=True)  # same weights as `family`, stored in several shards
    models = [family.ft_a, family.ft_b, other.ft_b]
    matrix = kinship_matrix(models, family.base, device="cpu")
    assert list(matrix) == [(str(family.ft_a), str(family.ft_b)), (str(family.ft_a), str(other.ft_b)),
                            (str(family.ft_b), str(other.ft_b))]  # fmt: skip
    for (first, second), result in matrix.items():
        _assert_close(result, kinship(first, second, family.base).to_dict())
    identical = matrix[str(family.ft_b), str(other.ft_b)]
    assert identical.pcc == pytest.approx(1.0) and identical.ed == 0.0


def test_fewer_than_two_models_is_an_error(family):
    with pytest.raises(ExmeError, match="at least two models, got 1"):
        kinship_matrix([family.ft_a], family.base)


def test_a_model_given_twice_is_an_error(family):
    with pytest.raises(ExmeError, match=f"{family.base} is given twice"):
        kinship(family.ft_a, family.base, family.base)


def test_different_shapes_are_named(family, tmp_path):
    wider = save_llama(tmp_path / "wider", 3, intermediate_size=40)
    with pytest.raises(ExmeError, match="mlp.* has shape") as error:
        kinship(family.ft_a, wider, family.base)
    assert str(wider) in str(error.value)


def test_a_tensor_of_the_base_missing_from_a_model_is_named(family, tmp_path):
    pruned = Path(shutil.copytree(family.ft_a, tmp_path / "pruned"))
    tensors = load_file(pruned / "model.safetensors")
    del tensors["model.norm.weight"]
    save_file(tensors, pruned / "model.safetensors")
    with pytest.raises(ExmeError, match=f"'model.norm.weight' is missing from model {pruned}"):
        kinship(pruned, family.ft_b, family.base)


def test_models_of_another_architecture_have_no_common_base(family, tmp_path):
    other = Path(shutil.copytree(family.ft_a, tmp_path / "mistral"))
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "architectures": ["MistralForCausalLM"]}))
    with pytest.raises(ExmeError, match="models differ in architectures.*MistralForCausalLM"):
        kinship(family.ft_a, other, family.base)


def test_a_nan_weight_is_named(toy, tmp_path):
    tensors = load_file(toy["a"] / "model.safetensors")
    tensors["v"][1] = float("nan")
    broken = _toy_model(tmp_path / "broken", tensors)
    with pytest.raises(ExmeError, match=f"tensor 'v': the delta of model {broken} .* NaN"):
        kinship(broken, toy["b"], toy["base"])


def test_cli_prints_the_chosen_metrics(toy, capsys):
    expected = kinship(toy["a"], toy["b"], toy["base"])
    assert main(["kinship", str(toy["a"]), str(toy["b"]), "--base", str(toy["base"])]) == 0
    assert capsys.readouterr().out == f"pcc {expected.pcc:.6g}\n"
    assert main(["kinship", str(toy["a"]), str(toy["b"]), "--base", str(toy["base"]), "--metric", "all"]) == 0
    assert capsys.readouterr().out.split() == [
        "pcc", f"{expected.pcc:.6g}", "cos", f"{expected.cos:.6g}", "ed", f"{expected.ed:.6g}"
    ]  # fmt: skip


def test_cli_json_carries_inputs_and_full_precision(toy, capsys):
    arguments = ["kinship", str(toy["a"]), str(toy["b"]), "--base", str(toy["base"]), "--split", "--json"]
    assert main([*arguments, "--metric", "all", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = kinship(toy["a"], toy["b"], toy["base"], split=True)
    assert printed == {"model_a": str(toy["a"]), "model_b": str(toy["b"]), "base": str(toy["base"]),
                       "split": True, **expected.to_dict()}  # fmt: skip


def test_cli_error_is_one_line_with_exit_code_2(toy, capsys):
    assert main(["kinship", str(toy["a"]), str(toy["a"]), "--base", str(toy["base"])]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: kinship compares distinct models") and error.count("\n") == 1

"""Bad input fails through the CLI with one clear line naming the culprit, leaving no output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from exme.merge.cli import main
from tests.tiny_models import save_llama, write_yaml


def _copy(model: Path, destination: Path) -> Path:
    shutil.copytree(model, destination)
    return destination


def _edit_tensors(model: Path, edit) -> None:
    file = model / "model.safetensors"
    tensors = load_file(file)
    edit(tensors)
    save_file(tensors, file, metadata={"format": "pt"})


def _edit_config(model: Path, **changes) -> None:
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, **changes}))


def _task_arithmetic(base: Path, *models: Path, **extra) -> dict:
    return {
        "merge_method": "task_arithmetic",
        "base_model": str(base),
        "models": [{"model": str(m), "parameters": {"weight": 0.5}} for m in models],
        **extra,
    }


def _run_failing(tmp_path: Path, recipe: dict, capsys, *flags: str) -> str:
    out = tmp_path / "out"
    capsys.readouterr()  # drop what building the fixtures printed
    code = main(["merge", str(write_yaml(tmp_path / "recipe.yml", recipe)), str(out), *flags])
    stderr = capsys.readouterr().err
    assert code == 2
    assert stderr.startswith("error: ") and stderr.count("\n") == 1
    assert "Traceback" not in stderr
    if "--overwrite" not in flags and "already exists" not in stderr:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    return stderr


def test_shape_mismatch_names_tensor_and_model(family, tmp_path, capsys):
    wider = save_llama(tmp_path / "wider", 3, intermediate_size=40)
    error = _run_failing(tmp_path, _task_arithmetic(family.base, family.ft_a, wider), capsys)
    assert "mlp" in error and "shape" in error and str(wider) in error


def test_tensor_missing_from_one_model_is_named(family, tmp_path, capsys):
    model = _copy(family.ft_a, tmp_path / "pruned")
    _edit_tensors(model, lambda tensors: tensors.pop("model.norm.weight"))
    error = _run_failing(tmp_path, _task_arithmetic(family.base, model), capsys)
    assert "'model.norm.weight' is missing from model" in error and str(model) in error


def test_different_architectures_are_refused(family, tmp_path, capsys):
    model = _copy(family.ft_a, tmp_path / "mistral")
    _edit_config(model, architectures=["MistralForCausalLM"])
    error = _run_failing(tmp_path, _task_arithmetic(family.base, model), capsys)
    assert "architectures" in error and "MistralForCausalLM" in error and str(model) in error


def test_different_vocabulary_sizes_are_refused(family, tmp_path, capsys):
    model = save_llama(tmp_path / "bigger_vocab", 4, vocab_size=72)
    error = _run_failing(tmp_path, _task_arithmetic(family.base, model), capsys)
    assert "vocab_size" in error and "72" in error and str(model) in error


def test_truncated_safetensors_file_is_refused(family, tmp_path, capsys):
    model = _copy(family.ft_a, tmp_path / "truncated")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    error = _run_failing(tmp_path, _task_arithmetic(family.base, model), capsys)
    assert "truncated" in error and str(weights) in error


def test_corrupted_safetensors_header_is_refused(family, tmp_path, capsys):
    model = _copy(family.ft_a, tmp_path / "corrupted")
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:40] = b"#" * 32
    weights.write_bytes(bytes(data))
    error = _run_failing(tmp_path, _task_arithmetic(family.base, model), capsys)
    assert "corrupted" in error and str(weights) in error


def test_index_naming_a_missing_shard_is_refused(make_family, tmp_path, capsys):
    sharded = make_family(sharded=True)
    model = _copy(sharded.ft_a, tmp_path / "lost_shard")
    shard = sorted(model.glob("model-*.safetensors"))[-1]
    shard.unlink()
    error = _run_failing(tmp_path, _task_arithmetic(sharded.base, model), capsys)
    assert shard.name in error and "does not exist" in error


def test_non_finite_result_names_tensor_and_input(family, tmp_path, capsys):
    model = _copy(family.ft_a, tmp_path / "exploded")
    _edit_tensors(model, lambda t: t["model.layers.1.mlp.down_proj.weight"].view(-1)[7].fill_(torch.inf))
    error = _run_failing(tmp_path, _task_arithmetic(family.base, model), capsys)
    assert "'model.layers.1.mlp.down_proj.weight' has NaN or Inf" in error and str(model) in error


def test_existing_output_folder_is_refused_unless_overwrite(family, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    recipe = _task_arithmetic(family.base, family.ft_a)
    error = _run_failing(tmp_path, recipe, capsys)
    assert "already exists" in error and (out / "keep.txt").exists()
    assert main(["merge", str(tmp_path / "recipe.yml"), str(out), "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"merge_method": "frankenmerge"}, "unknown merge_method 'frankenmerge'"),
        ({"parameters": {"lamda": 0.5}}, "unknown parameter 'lamda'"),
        ({"models_list": []}, "unknown recipe key(s): models_list"),
        ({"parameters": {"weight": [[0.1], 0.9]}}, "expected a scalar, a gradient list"),
        ({"base_model": None}, "requires a base_model"),
    ],
)
def test_bad_recipe_keys_are_named(family, tmp_path, capsys, change, expected):
    recipe = {**_task_arithmetic(family.base, family.ft_a), **change}
    assert expected in _run_failing(tmp_path, recipe, capsys)


@pytest.mark.parametrize(
    ("method", "parameters", "expected"),
    [
        (
            "ties",
            {"weight": 0.5, "density": 1.5},
            "parameter 'density' of model '{model}' must be in [0, 1], got 1.5",
        ),
        (
            "breadcrumbs",
            {"weight": 0.5, "gamma": [0.1, -0.1]},
            "parameter 'gamma' of model '{model}' must be in",
        ),
        ("della", {"weight": 0.5, "density": 0.9, "epsilon": 0.2}, "density ± epsilon must lie in (0, 1)"),
    ],
)
def test_parameter_out_of_its_range_is_named_with_its_model(family, tmp_path, capsys, method, parameters,
                                                            expected):  # fmt: skip
    recipe = _task_arithmetic(family.base, family.ft_a)
    recipe["merge_method"] = method
    recipe["models"][0]["parameters"] = parameters
    error = _run_failing(tmp_path, recipe, capsys)
    assert expected.format(model=family.ft_a) in error and str(family.ft_a) in error


def test_global_parameter_out_of_its_range_is_named(family, tmp_path, capsys):
    recipe = {
        "merge_method": "slerp",
        "base_model": str(family.base),
        "models": [{"model": str(family.ft_a)}],
        "parameters": {"t": [{"filter": "mlp", "value": 1.2}, {"value": 0.5}]},
    }
    assert "parameter 't' in the global parameters must be in [0, 1], got 1.2" in _run_failing(
        tmp_path, recipe, capsys
    )


def test_missing_required_parameter_is_named_with_its_model(family, tmp_path, capsys):
    recipe = _task_arithmetic(family.base, family.ft_a)
    recipe["models"][0]["parameters"] = {"density": 0.5}
    error = _run_failing(tmp_path, recipe, capsys)
    assert "missing required parameter 'weight'" in error and str(family.ft_a) in error


def test_failed_merge_mid_way_leaves_no_output(family, tmp_path, monkeypatch, capsys):
    import exme.merge.io.shard_writer

    def interrupted(file, spec, tensor):
        raise KeyboardInterrupt

    monkeypatch.setattr(exme.merge.io.shard_writer, "_write_tensor", interrupted)
    out = tmp_path / "out"
    recipe_file = write_yaml(tmp_path / "recipe.yml", _task_arithmetic(family.base, family.ft_a))
    with pytest.raises(KeyboardInterrupt):
        main(["merge", str(recipe_file), str(out)])
    assert list(tmp_path.iterdir()) == [recipe_file]

"""`exme merge` runs mergekit's YAML unchanged, and the CLI explains itself."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from exme.merge.cli import main
from tests.test_process_exit import BUFFERED
from tests.tiny_models import load_folder, write_yaml


def test_exme_merge_runs_a_mergekit_yaml_file_unchanged(family, run_mergekit, tmp_path):
    yaml_text = f"""\
merge_method: ties
base_model: {family.base}
models:
  - model: {family.base}
  - model: {family.ft_a}
    parameters:
      weight: 0.6
      density: 0.5
  - model: {family.ft_b}
    parameters:
      weight: 0.4
      density: 0.7
parameters:
  normalize: true
  int8_mask: true
dtype: float32
"""
    recipe_file = tmp_path / "ties.yml"
    recipe_file.write_text(yaml_text)
    process = subprocess.run(
        [sys.executable, "-m", "exme.merge.cli", "merge", str(recipe_file), str(tmp_path / "out"),
         "--no-progress", "--device", "cpu"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    assert Path(process.stdout.strip()) == tmp_path / "out"
    expected = run_mergekit(yaml.safe_load(recipe_file.read_text()))
    ours = load_folder(tmp_path / "out")
    assert ours.keys() == expected.keys()
    assert all((ours[n] - expected[n]).abs().max() <= 1e-6 for n in expected)


def test_methods_command_lists_methods_and_parameters(capsys):
    assert main(["methods"]) == 0
    listing = capsys.readouterr().out
    for text in ("exme", "extrapolate", "dare_ties", "slerp", "alpha: float, per-model"):
        assert text in listing


def test_merge_help_lists_methods(capsys):
    try:
        main(["merge", "--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    help_text = capsys.readouterr().out
    assert "--shard-size" in help_text and "task_arithmetic" in help_text


def test_cli_error_is_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["merge", str(tmp_path / "nope.yml"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: cannot read recipe")


def test_the_exme_command_ends_without_teardown_yet_flushes_and_keeps_its_exit_code(tmp_path):
    """The command is run(): its buffered output reaches a pipe and its status is main()'s,
    although the process ends by os._exit."""
    (command,) = importlib.metadata.entry_points(group="console_scripts", name="exme")
    assert command.value == "exme.merge.cli:run"

    def exme(*arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "exme.merge.cli", *arguments],
                              capture_output=True, text=True, env=BUFFERED)  # fmt: skip

    listed = exme("methods")
    assert listed.returncode == 0 and "task_arithmetic" in listed.stdout
    failed = exme("merge", str(tmp_path / "nope.yml"), str(tmp_path / "out"))
    assert failed.returncode == 2
    assert failed.stderr.startswith("error: cannot read recipe") and "nope.yml" in failed.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_request_without_cuda_is_a_clear_error(family, tmp_path, capsys):
    models = [{"model": str(family.ft_a), "parameters": {"weight": 1.0}}]
    recipe = write_yaml(tmp_path / "r.yml", {"merge_method": "linear", "models": models})
    assert main(["merge", str(recipe), str(tmp_path / "out"), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _recipe_file(tmp_path, family, **extra) -> Path:
    recipe = {
        "merge_method": "dare_linear",
        "base_model": str(family.base),
        "models": [{"model": str(family.ft_a), "parameters": {"weight": 0.6, "density": 0.5}}],
        **extra,
    }
    return write_yaml(tmp_path / "recipe.yml", recipe)


def test_mergekit_yaml_options_are_accepted(family, tokenizer_model, tmp_path):
    recipe = _recipe_file(tmp_path, family, tokenizer_source=str(tokenizer_model))
    flags = ["--out-shard-size", "1B", "--random-seed", "3", "--no-copy-tokenizer", "--allow-crimes",
             "--lazy-unpickle", "--low-cpu-memory", "-j", "2", "--write-threads", "2", "-v",
             "--quiet"]  # fmt: skip
    assert main(["merge", str(recipe), str(tmp_path / "out"), *flags]) == 0
    out = tmp_path / "out"
    assert (out / "model.safetensors").exists()  # 1B is mergekit's billion bytes: one shard
    assert not list(out.glob("tokenizer*"))
    assert main(["merge", str(_recipe_file(tmp_path, family, random_seed=3)), str(tmp_path / "seeded")]) == 0
    seed_3 = load_folder(out)  # --random-seed replaces the recipe's random_seed
    assert all(torch.equal(seed_3[n], t) for n, t in load_folder(tmp_path / "seeded").items())
    assert main(["merge", str(recipe), str(tmp_path / "other"), "--random-seed", "4"]) == 0
    assert any(not torch.equal(seed_3[n], t) for n, t in load_folder(tmp_path / "other").items())


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("500KB", "is 500000 bytes; give at least 1MB"),
        ("1", "is 1 bytes"),
        ("5 parsecs", "invalid shard size"),
    ],
)
def test_shard_sizes_below_one_megabyte_are_refused(size, expected, family, tmp_path, capsys):
    assert (
        main(["merge", str(_recipe_file(tmp_path, family)), str(tmp_path / "out"), "--shard-size", size]) == 2
    )
    assert expected in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_mergekit_sizes_are_thousands_millions_and_billions():
    from exme.merge.cli import shard_size_bytes

    assert [shard_size_bytes(s) for s in ("5B", "500M", "2000K", "1MB", "2GiB")] == [
        5 * 10**9, 5 * 10**8, 2 * 10**6, 10**6, 2 * 2**30,
    ]  # fmt: skip


def test_version_is_printed(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("exme 0.")


def test_allow_crimes_merges_models_of_different_architectures(family, tmp_path, capsys):
    import json
    import shutil

    other = shutil.copytree(family.ft_a, tmp_path / "mistral")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "architectures": ["MistralForCausalLM"]}))
    recipe = write_yaml(tmp_path / "r.yml", {"merge_method": "linear", "models": [
        {"model": str(family.ft_b), "parameters": {"weight": 1.0}},
        {"model": str(other), "parameters": {"weight": 1.0}}]})  # fmt: skip
    assert main(["merge", str(recipe), str(tmp_path / "out")]) == 2
    assert "--allow-crimes" in capsys.readouterr().err
    assert main(["merge", str(recipe), str(tmp_path / "out"), "--allow-crimes"]) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_flag_is_device_cuda(family, tmp_path, capsys):
    assert main(["merge", str(_recipe_file(tmp_path, family)), str(tmp_path / "out"), "--cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def _mergekit_command_lines(tmp_path: Path) -> list[list[str]]:
    """Every option of mergekit-yaml (the fields of the installed mergekit's MergeOptions), as its
    command line spells it: each flag in both forms, the others with a value."""
    from mergekit.options import MergeOptions

    values = {"out_shard_size": "1B", "random_seed": "3", "num_threads": "2", "write_threads": "2",
              "device": "cpu", "transformers_cache": str(tmp_path / "hub"),
              "lora_merge_cache": str(tmp_path / "lora"), "lora_merge_dtype": "bfloat16"}  # fmt: skip
    lines = []
    for name, field in MergeOptions.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if name == "verbosity":
            lines.append(["-v"])
        elif field.annotation is bool:
            lines += [[flag], ["--no-" + flag[2:]]]
        else:
            lines.append([flag, values[name]])
    return lines


def test_every_mergekit_yaml_option_runs_or_is_refused_with_its_reason(family, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    # --transformers-cache sets the process's Hugging Face cache: restored after the test
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", huggingface_hub.constants.HF_HUB_CACHE)
    refused = {"--unsafe-truncate-embeddings": "merge models of different vocabularies with tokenizer_source",
               "--lora-merge-dtype": "exme adds a LoRA's update to the weights in float32",
               "--no-safe-serialization": "exme writes safetensors only"}  # fmt: skip
    needs_cuda = {"--cuda", "--gpu-rich"}
    recipe = _recipe_file(tmp_path, family)
    lines = _mergekit_command_lines(tmp_path)
    assert len(lines) >= 30  # mergekit 0.1.5: 15 flags in two forms, 9 other options
    for number, options in enumerate(lines):
        out = tmp_path / f"out{number}"
        code = main(["merge", str(recipe), str(out), *options])
        error = capsys.readouterr().err
        if options[0] in refused:
            assert code == 2 and refused[options[0]] in error, options
        elif options[0] in needs_cuda and not torch.cuda.is_available():
            assert code == 2 and "CUDA is not available" in error, options
        else:
            assert code == 0, (options, error)
            assert (out / "README.md").exists() == (options != ["--no-write-model-card"])


@pytest.mark.parametrize(("device", "code"), [("auto", 0), ("cpu", 0), ("xpu", 2), ("cuda:x", 2)])
def test_device_is_cpu_cuda_or_auto(device, code, family, tmp_path, capsys):
    recipe = _recipe_file(tmp_path, family)
    assert main(["merge", str(recipe), str(tmp_path / "out"), "--device", device]) == code
    if code:
        assert f"--device {device}: exme computes on cpu, cuda or cuda:N (or auto)" in capsys.readouterr().err


def test_transformers_cache_is_where_hub_ids_are_found(family, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    from tests.merge.test_references import cache_model

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))  # restored after
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache_model(tmp_path / "hub", "tiny-org/base", family.base)
    cache_model(tmp_path / "hub", "tiny-org/tuned", family.ft_a)
    models = [{"model": "tiny-org/tuned", "parameters": {"weight": 0.5}}]
    recipe = write_yaml(tmp_path / "r.yml", {"merge_method": "task_arithmetic", "base_model": "tiny-org/base",
                                             "models": models})  # fmt: skip
    assert main(["merge", str(recipe), str(tmp_path / "default")]) == 2
    assert "not in the local Hugging Face cache" in capsys.readouterr().err
    assert (
        main(["merge", str(recipe), str(tmp_path / "out"), "--transformers-cache", str(tmp_path / "hub")])
        == 0
    )

"""`exme merge` runs mergekit's YAML unchanged, and the CLI explains itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from exme.merge.cli import main
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_request_without_cuda_is_a_clear_error(family, tmp_path, capsys):
    models = [{"model": str(family.ft_a), "parameters": {"weight": 1.0}}]
    recipe = write_yaml(tmp_path / "r.yml", {"merge_method": "linear", "models": models})
    assert main(["merge", str(recipe), str(tmp_path / "out"), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

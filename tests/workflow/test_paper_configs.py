"""The paper reproduction's configs (config/paper/): each dry-runs under `--profile slurm` with the
jobs its settings imply and a GPU request on exactly the GPU rules."""

import math
import re
import subprocess
import sys

import pytest

from exme.pipeline.config import merge_config_files
from tests.workflow.snakemake_runner import REPO, planned_jobs

PAPER = REPO / "config/paper"
# The paper's base models on GPUs; smollm2-135m-cpu.yaml runs the same chain on a CPU, for real, in
# test_paper_cpu_run.py.
MODELS = sorted(
    path for path in PAPER.glob("*.yaml") if path.name not in {"common.yaml", "smollm2-135m-cpu.yaml"}
)
GPU_RULES = re.compile(r"finetune|evaluate(_.*)?")


def _jobs_with_resources(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run lists."""
    jobs = []
    for block in re.split(r"\n(?=\s*rule [\w-]+:)", output):
        rule = re.match(r"\s*rule ([\w-]+):", block)
        resources = re.search(r"resources: (.*)", block)
        if rule and resources:
            pairs = (item.split("=", 1) for item in resources[1].split(", "))
            jobs.append((rule[1], dict(pairs)))
    return jobs


def test_there_is_one_config_per_base_model_of_the_paper():
    bases = {merge_config_files(path)["model"]["base"] for path in MODELS}
    assert len(MODELS) == 5 and "google/gemma-2-2b-it" in bases
    assert any("Llama-3-8B" in base for base in bases)


@pytest.mark.parametrize("model", MODELS, ids=lambda path: path.stem)
def test_each_paper_config_plans_its_jobs_and_gpus_under_the_slurm_profile(tmp_path, model):
    files = [REPO / "config/config.yaml", PAPER / "common.yaml", model]
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path)]
    command += ["--profile", str(REPO / "slurm"), "--dry-run", "--configfile", *map(str, files)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    jobs = planned_jobs(result)
    config = merge_config_files(*files)

    n_checkpoints = config["finetune"]["max_steps"] // config["finetune"]["save_steps"]
    alphas, betas = config["extrapolation"]["alpha_grid"], config["merging"]["beta_grid"]
    top_k, methods = config["selection"]["top_k"], config["tracks"]["checkpoint"]
    per_job = config["evaluation"]["models_per_job"]
    scalings = config["merge_methods"]["task_arithmetic"]["scaling_grid"]
    assert n_checkpoints == 8 and config["extrapolation"]["every_checkpoint"]
    assert jobs["download_base"] == jobs["download_sft_data"] == jobs["prefetch"] == jobs["finetune"] == 1
    assert jobs["preflight"] == 1
    # One job each: base and checkpoints on dev; base, checkpoints, EXPO-k, ExMe and each merge on test.
    assert jobs["evaluate"] == (1 + n_checkpoints) + (1 + n_checkpoints + top_k + 1 + len(methods))
    every_checkpoint = n_checkpoints * (len(alphas) - 1)  # alpha 0 is the checkpoint itself
    assert jobs["write_expo_step_recipe"] == every_checkpoint
    grids = {
        "expo_step_grid": every_checkpoint,
        "expo_grid": top_k * len(alphas),
        "exme_grid": len(betas),
        "checkpoint-task_arithmetic": len(scalings),
    }
    for grid, size in grids.items():
        parts = [rule for rule in jobs if rule.startswith(f"evaluate_{grid}")]
        assert len(parts) == math.ceil(size / per_job), (grid, parts)
        assert all(jobs[part] == 1 for part in parts)
    assert jobs["write_expo_grid_recipe"] == top_k * len(alphas)
    assert jobs["write_merge_recipe"] == len(methods)

    listed = _jobs_with_resources(result.stdout)
    assert len(listed) == jobs["total"]
    finetune_gpus = str(config["resources"]["finetune"]["gpu"])
    for rule, resources in listed:
        if rule == "all":
            continue
        if GPU_RULES.fullmatch(rule):
            assert resources["gpu"] == (finetune_gpus if rule == "finetune" else "1"), rule
            assert resources["slurm_partition"] == "gpu", rule
        else:
            assert resources["gpu"] == "0" and resources["slurm_partition"] == "cpu", rule

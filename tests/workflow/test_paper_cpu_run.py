"""The paper's chain on a real small model, end to end on the CPU, as an offline site runs it
(tests/workflow/paper_cpu.py)."""

import json

import pandas as pd
import pytest

from tests.workflow.paper_cpu import RUN, offline_site
from tests.workflow.snakemake_runner import run_snakemake


@pytest.fixture(scope="module")
def paper_cpu_run(real_model, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("paper_cpu")
    configs, env = offline_site(workdir, real_model, with_code_eval=True)
    result = run_snakemake(workdir, configs, env=env)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return workdir / "results" / RUN


@pytest.mark.slow
def test_the_paper_chain_runs_with_humaneval_executed_and_every_method_scored(paper_cpu_run):
    scores = pd.read_csv(paper_cpu_run / "scores.csv")
    assert set(scores["task"]) == {"humaneval", "python_output", "python_type"}
    methods = {"base", "sft", "expo", "exme", "linear", "task_arithmetic", "ties", "dare_ties", "slerp"}
    assert methods <= set(scores["method"])
    humaneval = scores[scores["task"] == "humaneval"]
    assert (humaneval["metric"] == "pass@1,create_test").all()
    assert humaneval["value"].between(0, 1).all() and humaneval["stderr"].notna().all()
    assert (paper_cpu_run / "comparison.md").is_file()
    assert (paper_cpu_run / "seed0/final/config.json").is_file()
    # Every checkpoint extrapolated over the alpha grid (the paper's Fig. 5).
    assert (paper_cpu_run / "seed0/figures/extrapolation_checkpoints.png").is_file()
    assert {model for model in scores["model"] if model.startswith("expo-step")} >= {
        f"expo-step{step}-a0.3" for step in range(1, 5)
    }


@pytest.mark.slow
def test_humanevals_dev_and_test_are_disjoint_halves_of_its_one_split(paper_cpu_run):
    items = {}
    for split in ("dev", "test"):
        samples = json.loads((paper_cpu_run / f"seed0/eval/{split}/sft-1.tasks/samples.json").read_text())
        (items[split],) = [indices for name, indices in samples.items() if name.startswith("humaneval@")]
    assert items["dev"] and items["test"] and not set(items["dev"]) & set(items["test"])
    assert max(items["dev"]) < 82 <= min(items["test"])  # test[:50%] and test[50%:] of 164 problems


@pytest.mark.slow
def test_the_preflight_ran_before_fine_tuning(paper_cpu_run):
    checked = json.loads((paper_cpu_run / "preflight.json").read_text())
    assert checked["tasks"] == ["humaneval", "python_output", "python_type"] and checked["offline"]
    preflight_done = (paper_cpu_run / "preflight.json").stat().st_mtime
    assert (paper_cpu_run / "seed0/logs/finetune/sft.log").stat().st_mtime > preflight_done


@pytest.mark.slow
def test_without_code_eval_in_the_cache_the_run_is_refused_before_fine_tuning(real_model, tmp_path):
    configs, env = offline_site(tmp_path, real_model, with_code_eval=False)
    result = run_snakemake(tmp_path, configs, env=env)
    assert result.returncode != 0
    assert "metric module 'code_eval'" in result.stdout + result.stderr
    assert not (tmp_path / "results" / RUN / "seed0/logs/finetune").exists()

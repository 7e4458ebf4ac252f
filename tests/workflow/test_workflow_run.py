"""The pipeline itself: dry-run DAGs of every config, one full CI-sized run, and incremental reruns."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from exme.merge.execute import build_state_dict
from exme.merge.multi import load_recipe
from exme.pipeline.config import merge_config_files, prepare_config
from tests.workflow.snakemake_runner import CI_CONFIG, CONFIGS, REPO, planned_jobs, run_snakemake

RULES_BEFORE_MERGING = {"build_demo_data", "pretrain_base", "finetune", "select_checkpoints"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_config_has_a_complete_dag(tmp_path, path):
    jobs = planned_jobs(run_snakemake(tmp_path, path, "--dry-run"))
    config = merge_config_files(REPO / "config/config.yaml", path)  # as Snakemake merges them
    prepare_config(config, REPO / "workflow/schemas/config.schema.yaml")  # the demo's experts resolved
    finetune = config["finetune"]
    n_checkpoints = finetune["max_steps"] // finetune["save_steps"]
    n_seeds = len(config["seeds"])
    # Per seed: the SFT run and one job per expert; the selection; each checkpoint's dev and test.
    assert jobs["finetune"] == n_seeds * (1 + len(config["experts"]))
    assert jobs["select_checkpoints"] == n_seeds
    assert jobs["evaluate"] >= 2 + n_seeds * 2 * n_checkpoints
    assert {"search_alpha", "search_beta", "search_merge", "export_final", "collect_scores", "report"} <= set(
        jobs
    )
    assert {"compare", "all"} <= set(jobs)


@pytest.mark.slow
def test_the_run_writes_the_tidy_score_table(ci_run):
    scores = pd.read_csv(ci_run / "results/ci/scores.csv")
    assert {"model", "method", "track", "alpha", "beta", "task", "split", "metric", "value", "seed"} <= set(
        scores
    )
    assert scores[["track", "seed"]].notna().all().all()
    methods = {
        "linear",
        "task_arithmetic",
        "ties",
        "dare_ties",
        "slerp",
        "m3_linear",
        "m3_task_arithmetic",
        "m3_ties",
    }
    greedy = {"greedy", "greedy_explore"}
    assert set(scores["method"]) == {"base", "sft", "expo", "exme", "expert", "se_merging"} | methods | greedy
    assert scores["value"].between(0, 1).all()
    test = scores[scores["split"] == "test"]
    assert {"base", "sft-20", "sft-40", "sft-60", "expo1", "expo2", "exme", "ft-arith", "ft-count"} <= set(
        test["model"]
    )
    for track in ("checkpoint", "expert"):
        assert {f"{track}-{method}" for method in methods} <= set(test["model"])
    assert {"expert-greedy", "expert-greedy_explore", "expert-se_merging"} <= set(test["model"])
    # Kinship against merge gain reads every pairwise merge of the experts on dev (here one pair).
    assert "expert-greedy-g1-m1" in set(scores[scores["split"] == "dev"]["model"])
    # The dev grid holds every alpha for both selected checkpoints and every beta.
    dev = scores[scores["split"] == "dev"]
    assert sorted(dev[dev["method"] == "expo"]["alpha"].dropna().unique()) == [0.0, 0.1]
    assert sorted(dev[dev["method"] == "exme"]["beta"].dropna().unique()) == [0.0, 0.5, 1.0]
    assert (scores.groupby(["seed", "model", "split"]).size() == 4).all()


@pytest.mark.slow
def test_the_dev_search_chose_the_best_grid_points(ci_run):
    scores = pd.read_csv(ci_run / "results/ci/scores.csv")
    dev = scores[scores["split"] == "dev"].groupby("model")["value"].mean()
    chosen_beta = yaml.safe_load((ci_run / "results/ci/seed0/search/beta.json").read_text())["beta"]
    beta_curve = {beta: dev[f"exme-b{beta:g}"] for beta in (0.0, 0.5, 1.0)}
    assert beta_curve[chosen_beta] == max(beta_curve.values())


@pytest.mark.slow
def test_the_final_model_loads_and_equals_its_recipe(ci_run):
    final = ci_run / "results/ci/seed0/final"
    model = AutoModelForCausalLM.from_pretrained(final)
    AutoTokenizer.from_pretrained(final)
    assert "merge_method: exme" in (final / "README.md").read_text()
    recipe_path = ci_run / "results/ci/seed0/recipes/exme.yaml"
    recipe = load_recipe(recipe_path)
    assert recipe.merge_method == "exme"
    cwd = os.getcwd()
    os.chdir(ci_run)  # recipes name their sources relative to the working directory
    try:
        expected = build_state_dict(recipe)
    finally:
        os.chdir(cwd)
    for name, tensor in model.state_dict().items():
        if name in expected:
            torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)


@pytest.mark.slow
def test_the_run_writes_figures_and_summary(ci_run):
    figures = ci_run / "results/ci/seed0/figures"
    names = {path.name for path in figures.glob("*.png")}
    assert {
        "beta.png",
        "comparison.png",
        "extrapolation_mean.png",
        "extrapolation_demo_arith.png",
        "mixup_checkpoint.png",
        "mixup_expert.png",
        "kinship_expert.png",
        "kinship_gain_expert.png",
        "greedy_expert.png",
        "extrapolation_checkpoints.png",
    } <= names
    kinship = (ci_run / "results/ci/seed0/kinship/expert.md").read_text()
    assert all(f"## {section}" in kinship for section in ("pcc", "Kinship and merge gain", "Top-k greedy"))
    assert all(path.stat().st_size > 10_000 for path in figures.glob("*.png"))
    summary = (ci_run / "results/ci/seed0/summary.md").read_text()
    assert "ExMe vs the best SFT checkpoint" in summary and "β =" in summary
    assert (ci_run / "results/ci/figures/comparison.png").stat().st_size > 10_000
    comparison = (ci_run / "results/ci/comparison.md").read_text()
    assert "## Checkpoint track" in comparison and "## Expert track" in comparison
    assert "| m3_ties" in comparison and "wins vs best input model" in comparison


@pytest.mark.slow
def test_the_run_keeps_each_test_item_and_compares_methods_in_pairs(ci_run):
    from exme.pipeline.comparison import paired_differences
    from exme.pipeline.scores import read_items

    scores = pd.read_csv(ci_run / "results/ci/scores.csv")
    items = read_items(ci_run / "results/ci/items.csv.gz")
    assert items.equals(read_items(ci_run / "results/ci/seed0/items.csv.gz"))  # one seed
    # One row per test model, task and item (the CI config's 40 test items per task), whose mean is
    # the model's score on that task.
    test = scores[scores["split"] == "test"].set_index(["seed", "model", "task"])["value"]
    assert len(items) == 40 * len(test)
    means = items.groupby(["seed", "model", "task"])["value"].mean()
    pd.testing.assert_series_equal(means.sort_index(), test.sort_index(), check_names=False, atol=1e-9)
    paired = paired_differences(scores, items)
    compared = set(zip(paired["track"], paired["label"], paired["reference"], strict=True))
    expected = {
        ("checkpoint", "ExMe", "best input model"),
        ("checkpoint", "m3_linear", "linear"),
        ("checkpoint", "m3_ties", "ties"),
        ("checkpoint", "linear", "ExMe"),
        ("expert", "se_merging", "task_arithmetic"),
        ("expert", "m3_task_arithmetic", "task_arithmetic"),
        ("expert", "ties", "best input model"),
    }
    assert expected <= compared and not any(track == "expert" and ref == "ExMe" for track, _, ref in compared)
    assert paired[["low", "high", "p", "p_holm"]].notna().all().all()
    assert ((paired["low"] <= paired["difference"]) & (paired["difference"] <= paired["high"])).all()
    # One seed, exact-match items: McNemar's exact test per task, a sign-flip test on the task mean.
    assert set(paired[paired["task"] != "mean"]["test"]) == {"McNemar exact"}
    comparison = (ci_run / "results/ci/comparison.md").read_text()
    expert = comparison.split("## Expert track")[1]
    assert "lm-eval's standard error" in comparison and "wins vs ExMe" not in expert
    assert comparison.count("### Paired differences on test, mean over tasks") == 2
    assert comparison.count("Best input model (best mean dev score): seed 0:") == 2
    for row in paired[paired["task"] == "mean"].itertuples():
        assert f"{row.difference:+.3f} [{row.low:+.3f}, {row.high:+.3f}]" in comparison


@pytest.mark.slow
def test_grids_add_no_model_sized_files(ci_run):
    recipes = list((ci_run / "results/ci/seed0/recipes").glob("*.yaml"))
    # ExMe: 2 x 2 alphas, 2 EXPO, 3 betas, 1 ExMe; per track: linear, ties, dare_ties, slerp, task
    # arithmetic (2 scalings + the chosen one), 3 M3 variants (2 draws + the chosen one).
    # and on the expert track SE-Merging (2 layers + the chosen), and the 2 greedy results; every
    # checkpoint (3) at each alpha but 0 (config/config.yaml's extrapolation.every_checkpoint).
    assert len(recipes) == 2 * 2 + 2 + 3 + 1 + 2 * (4 + 3 + 3 * 3) + 3 + 2 + 3 * 1
    weights = (ci_run / "results/ci").rglob("*.safetensors")
    folders = {p.relative_to(ci_run / "results/ci").parts[:2] for p in weights}
    assert {folder[0] for folder in folders} == {"base", "seed0"}
    assert {folder[1] for folder in folders if folder[0] == "seed0"} == {
        "finetune",
        "finetune_state",
        "final",
    }


@pytest.mark.slow
def test_a_completed_run_has_nothing_left_to_do(ci_run):
    assert planned_jobs(run_snakemake(ci_run, CI_CONFIG, "--dry-run")) == {}


def _user_task_library(demo_tasks, folder, n_validation):
    """The demo's lm-eval YAMLs as a user's own tasks: renamed, with a `validation` split (the first
    n_validation dev items) instead of `dev`. Returns the config's evaluation.tasks."""
    folder.mkdir()
    tasks = []
    for path in sorted(demo_tasks.glob("*.yaml")):
        task = yaml.safe_load(path.read_text())
        data_files = task["dataset_kwargs"]["data_files"]
        validation = folder / f"{task['task']}_validation.jsonl"
        dev_items = Path(data_files.pop("dev")).read_text().splitlines()[:n_validation]
        validation.write_text("\n".join(dev_items) + "\n")
        data_files["validation"] = str(validation)
        task.update(task=f"my_{task['task']}", validation_split="validation")
        (folder / f"{task['task']}.yaml").write_text(yaml.safe_dump(task))
        splits = {"dev": "validation", "test": "test"}
        tasks.append({"name": task["task"], "metric": "exact_match,first-token", "splits": splits})
    return tasks


@pytest.mark.slow
def test_a_real_run_uses_the_given_model_data_tasks_and_splits(ci_run, tmp_path):
    """demo.activate false: a given base model folder, SFT file and lm-eval task folder (here the CI
    run's, as a user's), with each task's dev split named by `splits`; no demo rule runs."""
    demo = ci_run / "results/ci"
    config = yaml.safe_load(CI_CONFIG.read_text())
    config.update(run="user", demo={"activate": False}, model={"base": str(demo / "base")})
    config["data"] = {"sft_train": str(demo / "data/sft_train.jsonl")}
    config["experts"] = [
        {"name": name, "train": str(demo / f"data/experts/{name}.jsonl")} for name in ("arith", "count")
    ]
    config["tracks"] = {"checkpoint": ["linear"], "expert": ["ties"]}
    config["greedy"] = {"activate": False}
    config["finetune"].update(max_steps=20, save_steps=10)
    config["evaluation"].update(
        tasks=_user_task_library(demo / "data/lm_eval_tasks", tmp_path / "my_tasks", n_validation=10),
        include_path=str(tmp_path / "my_tasks"),
    )
    config["merging"]["beta_grid"] = [0.5]
    configfile = tmp_path / "user.yaml"
    configfile.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "work"
    workdir.mkdir()

    result = run_snakemake(workdir, configfile)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    out = workdir / "results/user"
    assert not (out / "data").exists() and not (out / "base").exists()
    scores = pd.read_csv(out / "scores.csv")
    assert set(scores["task"]) == {f"my_demo_{task}" for task in ("arith", "count", "lookup", "median")}
    assert set(scores["method"]) == {"base", "sft", "expo", "exme", "expert", "linear", "ties"}
    dev, test = (
        json.loads((out / f"seed0/eval/{split}/sft-10.json").read_text()) for split in ("dev", "test")
    )
    assert set(dev["dataset_splits"].values()) == {"validation"}
    assert {n["effective"] for n in dev["n_samples"].values()} == {10}
    assert {n["effective"] for n in test["n_samples"].values()} == {40}
    AutoModelForCausalLM.from_pretrained(out / "seed0/final")


def _rerun_plan(ci_run, tmp_path, **overrides):
    config = yaml.safe_load(CI_CONFIG.read_text())
    for section, values in overrides.items():
        if isinstance(values, dict):
            config[section].update(values)
        else:
            config[section] = values
    configfile = tmp_path / "changed.yaml"
    configfile.write_text(yaml.safe_dump(config))
    result = run_snakemake(ci_run, configfile, "--dry-run", "--printshellcmds")
    return planned_jobs(result), result.stdout


@pytest.mark.slow
def test_changing_the_alpha_grid_reruns_no_finetuning_and_no_checkpoint_evaluation(ci_run, tmp_path):
    jobs, log = _rerun_plan(ci_run, tmp_path, extrapolation={"alpha_grid": [0.0, 0.1, 0.3]})
    assert RULES_BEFORE_MERGING.isdisjoint(jobs), jobs
    assert "sft-" not in "".join(line for line in log.splitlines() if "output:" in line)
    assert jobs["search_alpha"] == 1 and jobs["evaluate"] >= 2  # the two new grid points at least


@pytest.mark.slow
def test_changing_the_beta_grid_reruns_only_the_merging_stage(ci_run, tmp_path):
    jobs, _ = _rerun_plan(ci_run, tmp_path, merging={"beta_grid": [0.25, 0.75]})
    assert RULES_BEFORE_MERGING.isdisjoint(jobs) and "search_alpha" not in jobs, jobs
    assert jobs["search_beta"] == 1


@pytest.mark.slow
def test_changing_the_learning_rate_reruns_everything_downstream_of_finetuning(ci_run, tmp_path):
    jobs, log = _rerun_plan(ci_run, tmp_path, finetune={"learning_rate": 1.0e-3})
    assert "Params have changed since last execution" in log
    # The SFT run and the experts, whose settings are `finetune` with `expert_finetune` over it.
    assert jobs["finetune"] == 3 and "pretrain_base" not in jobs and "build_demo_data" not in jobs
    assert {"select_checkpoints", "evaluate", "collect_scores", "report", "export_final"} <= set(jobs)
    # All evaluations downstream of the checkpoints: base is untouched, each checkpoint's dev and test.
    assert jobs["evaluate"] >= 2 * 3


@pytest.mark.slow
def test_adding_a_seed_reruns_only_that_seeds_jobs(ci_run, tmp_path):
    jobs, log = _rerun_plan(ci_run, tmp_path, seeds=[0, 1])
    outputs = [line for line in log.splitlines() if "output:" in line]
    assert jobs["finetune"] == 3 and jobs["select_checkpoints"] == 1  # the SFT run and two experts of seed 1
    assert "pretrain_base" not in jobs and "build_demo_data" not in jobs
    assert not [
        line for line in outputs if "/seed0/" in line or "/shared/" in line
    ]  # nothing of seed 0 or shared
    assert {"collect_scores", "compare"} <= set(jobs)


def test_the_slurm_profile_plans_every_job_with_the_configured_resources():
    """`snakemake --profile slurm` (repository root) takes each rule's resources from the config."""
    command = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--dry-run"]
    command += ["--configfile", str(CI_CONFIG), "--set-resources", "finetune:gpu=1"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    jobs = planned_jobs(result)
    assert jobs["finetune"] == 3 and jobs["evaluate"] >= 8  # the SFT run and two experts
    finetune = result.stdout.split("rule finetune:", 1)[1].split("\n\n", 1)[0]
    # resources.finetune of config/config.yaml, over which --configfile is merged; gpu from the CLI.
    assert "gpu=1" in finetune and "mem_mb=4000" in finetune and "runtime=60" in finetune


@pytest.mark.slow
def test_the_snakemake_report_holds_the_figures_and_their_captions(ci_run):
    result = run_snakemake(ci_run, CI_CONFIG, "--report", "report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    html = (ci_run / "report.html").read_text()
    for name in ("comparison.png", "beta.png", "extrapolation_mean.png", "mixup_expert.png", "scores.csv"):
        assert name in html
    assert "Dev score against the extrapolation coefficient" in html

"""What each job asks of Slurm, the environment every job gets, and the groups of evaluation jobs."""

import os

import pytest
import yaml

from exme.offline import OFFLINE_ENVIRONMENT
from exme.pipeline.catalogue import NAME_PATTERNS, model_name
from exme.pipeline.cluster import evaluation_group, job_environment, job_resources

CLUSTER = {"partition": {"cpu": "short", "gpu": "a100"}, "scratch": None}
CPU = {"threads": 1, "mem_mb": 2000, "runtime": 30, "gpu": 0}


def test_a_cpu_rule_runs_on_the_cpu_partition_and_asks_for_no_gpu():
    settings = {**CPU, "gpu_model": "a100", "cpus_per_gpu": 8, "slurm_extra": "--qos=low"}
    resources = job_resources(settings, CLUSTER)
    assert resources == {
        "mem_mb": 2000,
        "runtime": 30,
        "gpu": 0,
        "group_slot": 1,
        "slurm_partition": "short",
        "slurm_extra": "--qos=low",
    }  # gpu_model on a CPU job would make the plugin ask for --gpus=a100:0


def test_a_gpu_rule_runs_on_the_gpu_partition_with_its_gpu_settings():
    settings = {**CPU, "gpu": 4, "gpu_model": "h100", "cpus_per_gpu": 8}
    resources = job_resources(settings, CLUSTER)
    assert resources["slurm_partition"] == "a100"
    assert (resources["gpu"], resources["gpu_model"], resources["cpus_per_gpu"]) == (4, "h100", 8)


def test_a_rule_may_name_its_own_partition_and_unset_partitions_are_left_to_the_profile():
    assert job_resources({**CPU, "slurm_partition": "long"}, CLUSTER)["slurm_partition"] == "long"
    unset = {"partition": {"cpu": None, "gpu": None}, "scratch": None}
    assert "slurm_partition" not in job_resources(CPU, unset)


def test_scratch_becomes_the_tmpdir_with_variables_expanded(monkeypatch):
    monkeypatch.setenv("EXME_TEST_USER", "alice")
    resources = job_resources(CPU, {**CLUSTER, "scratch": "/scratch/$EXME_TEST_USER"})
    assert resources["tmpdir"] == "/scratch/alice"


@pytest.mark.parametrize("offline", [True, False])
def test_every_job_gets_the_offline_flags_the_config_sets(offline):
    environment = job_environment({"offline": offline, "hf_home": None}, source="/repo")
    assert environment == {
        **dict.fromkeys(OFFLINE_ENVIRONMENT, "1" if offline else "0"),
        "EXME_SOURCE": "/repo",
    }


def test_hf_home_is_passed_on_as_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    environment = job_environment({"offline": True, "hf_home": "hf"}, source="/repo")
    assert environment["HF_HOME"] == os.path.join(tmp_path, "hf")


def test_each_dev_stage_is_a_group_of_its_own_and_test_is_one_group():
    names = {
        "base": "base",
        "sft": model_name("sft", step=20),
        "expo_grid": model_name("expo_grid", rank=1, alpha=0.5),
        "exme_grid": model_name("exme_grid", beta=0.25),
        "expo": model_name("expo", rank=2),
        "exme": model_name("exme"),
    }
    assert set(names) == {"base", *NAME_PATTERNS}
    assert {kind: evaluation_group("dev", name) for kind, name in names.items()} == {
        kind: f"evaluate_dev_{kind}" for kind in names
    }
    assert {evaluation_group("test", name) for name in names.values()} == {"evaluate_test"}


def test_the_profile_groups_the_evaluations_of_every_stage_with_many_jobs(repo):
    components = yaml.safe_load((repo / "slurm/config.yaml").read_text())["group-components"]
    groups = {entry.split("=")[0] for entry in components}
    examples = [model_name(kind, step=1, rank=1, alpha=0, beta=0) for kind in NAME_PATTERNS]
    dev_groups = {evaluation_group("dev", name) for name in examples}
    assert groups == {group for group in dev_groups if group.endswith(("_sft", "_grid"))} | {"evaluate_test"}

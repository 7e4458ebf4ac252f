"""What each job asks of Slurm, the environment every job gets, and the groups of evaluation jobs."""

import os

import pytest
import yaml

from exme.offline import OFFLINE_ENVIRONMENT
from exme.pipeline.catalogue import model_name
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


def test_each_kind_of_model_on_each_split_is_a_group_of_its_own():
    """Models that become ready after the same stage share a group: never a greedy generation with
    the next one (its models wait on the previous one's scores), nor one track with the other."""
    names = {
        "base": ("base", "base"),
        "sft": (model_name("sft", step=20), "sft"),
        "expert": (model_name("expert", expert="arith"), "expert"),
        "expo": (model_name("expo", rank=2), "expo"),
        "exme": (model_name("exme"), "exme"),
        "merge": (model_name("merge", track="expert", method="ties"), "merge_expert"),
        "greedy_model": (
            model_name("greedy_model", track="expert", variant="greedy_explore", generation=2, index=1),
            "greedy_model_expert-greedy_explore-2",
        ),
        "greedy": (model_name("greedy", track="expert", variant="greedy"), "greedy_expert-greedy"),
    }
    for split in ("dev", "test"):
        for name, group in names.values():
            assert evaluation_group(split, name) == f"evaluate_{split}_{group}"


def test_the_profile_names_the_groups_of_the_stages_with_many_evaluations(repo):
    """Grouping is commented out in slurm/config.yaml (see there); its group names must still be
    the workflow's."""
    profile = (repo / "slurm/config.yaml").read_text()
    line = next(line for line in profile.splitlines() if line.startswith("# group-components:"))
    groups = {entry.split("=")[0] for entry in yaml.safe_load(line.removeprefix("# "))["group-components"]}
    examples = [("dev", "sft-1"), ("test", "sft-1"), ("test", "checkpoint-ties"), ("test", "expert-ties")]
    assert groups == {evaluation_group(split, model) for split, model in examples}

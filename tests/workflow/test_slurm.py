"""The pipeline on a real single-node Slurm (tests/slurm/start_slurm.sh), through the project's profile
with the test cluster's overrides: `snakemake --profile slurm --profile .test/slurm`.

One run of the CI-sized config's ExMe chain (the expert track and the other methods are left to the
local run), with one GPU for each GPU rule (the test node's GPUs are fake, so torch still computes
on the CPU). While it runs, the test cancels the fine-tuning job once it has
saved its first checkpoint, and one evaluation job: Snakemake must report both and run them again
(`retries:`), fine-tuning resuming from its checkpoint, and the scores must equal a local run's.
Skipped where this machine cannot run Slurm (not root, no apt-get, daemons that do not start).
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.workflow.snakemake_runner import CI_CONFIG, REPO

pytestmark = pytest.mark.slow

RIG = REPO / "tests/slurm"
GPU_RULES = {"pretrain_base", "finetune", "evaluate"}
RUN_TIMEOUT = 900  # seconds; the run takes about 4 minutes on 2 cores


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running single-node Slurm; yields the environment its clients need. Stops exactly the
    daemons it started (their PIDs are in the state folder)."""
    state = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(
        ["bash", RIG / "start_slurm.sh", state], capture_output=True, text=True, timeout=600
    )
    if started.returncode != 0:
        why = re.findall(r"^start_slurm\.sh: (?:ERROR|CANNOT): .*", started.stderr, re.M) or ["no reason"]
        pytest.skip(f"cannot run a local Slurm here (exit {started.returncode}): {why[-1]}")
    pids = dict(line.split() for line in (state / "pids").read_text().splitlines())
    assert set(pids) == {"munged", "slurmctld", "slurmd"}
    yield {**os.environ, "SLURM_CONF": str(state / "slurm.conf")}
    subprocess.run(["bash", RIG / "stop_slurm.sh", state], check=True, timeout=120)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids.values())


def _queue(environment):
    """[(job id, comment, state)] of the jobs Slurm knows, running or recently finished."""
    listed = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%i|%k|%T"],
        env=environment,
        capture_output=True,
        text=True,
    ).stdout
    return [tuple(line.split("|")) for line in listed.splitlines() if line.count("|") == 2]


def _cancel_one(environment, workdir, kinds):
    """Cancels a running job of one of `kinds` ("rule_finetune", "rule_evaluate": Slurm comments
    start so) and returns its kind: fine-tuning only once its first checkpoint is saved (the
    state folder holds Trainer checkpoints), an evaluation at once. None when there is none."""
    saved = list(workdir.glob("results/ci/seed0/finetune_state/sft/*/checkpoint-*/trainer_state.json"))
    for job_id, comment, state in _queue(environment):
        kind = next((kind for kind in kinds if comment.startswith(kind)), None)
        if state == "RUNNING" and kind and (kind != "rule_finetune" or saved):
            subprocess.run(["scancel", job_id], env=environment, check=True)
            return kind
    return None


@pytest.fixture(scope="module")
def slurm_run(slurm, tmp_path_factory):
    """The CI-sized run under Slurm, with one cancelled fine-tuning and evaluation job each."""
    workdir = tmp_path_factory.mktemp("slurm_run")
    config = yaml.safe_load(CI_CONFIG.read_text())
    config.update(experts=[], tracks={"checkpoint": [], "expert": []}, greedy={"activate": False})
    config["resources"].update({rule: {"gpu": 1} for rule in GPU_RULES})
    config["cluster"] = {"partition": {"cpu": "cpu", "gpu": "gpu"}}
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--profile", ".test/slurm"]
    command += ["-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(configfile)]
    command += ["--verbose"]  # prints each sbatch call
    log = workdir / "snakemake.log"
    start = time.monotonic()
    with log.open("w") as output:
        run = subprocess.Popen(command, cwd=REPO, env=slurm, stdout=output, stderr=subprocess.STDOUT)
        cancelled = []
        while run.poll() is None and time.monotonic() - start < RUN_TIMEOUT:
            pending = {"rule_finetune", "rule_evaluate"}.difference(cancelled)
            kind = _cancel_one(slurm, workdir, pending) if pending else None
            if kind:
                cancelled.append(kind)
            time.sleep(0.3)
        if run.poll() is None:
            run.send_signal(signal.SIGINT)  # Snakemake cancels its Slurm jobs on SIGINT
            run.wait(60)
    wall = time.monotonic() - start
    text = log.read_text()
    assert run.returncode == 0, f"after {wall:.0f} s:\n" + text[-8000:]
    print(f"Slurm run: {wall:.0f} s, cancelled {cancelled}")
    return workdir, text, cancelled


def _submissions(log):
    """{rule or group name: [sbatch command line]} from the log of `snakemake --verbose`."""
    submitted = {}
    for line in log.splitlines():
        if line.startswith("sbatch call:"):
            comment = re.search(r"--comment (rule_\S+)", line)[1].removeprefix("rule_")
            name = comment.split("_wildcards_")[0]  # a rule's jobs, whatever their wildcards
            submitted.setdefault(name, []).append(line.split("--wrap=")[0])
    return submitted


def _local_rules():
    block = re.search(r"^localrules:\n((?:    \w+,\n)+)", (REPO / "Snakefile").read_text(), re.M)[1]
    return set(re.findall(r"\w+", block))


def test_gpu_rules_ask_slurm_for_one_gpu_on_the_gpu_partition_and_cpu_rules_for_none(slurm_run):
    _, log, _ = slurm_run
    submitted = _submissions(log)
    assert {"build_demo_data", "pretrain_base", "finetune", "export_final"} <= set(submitted)
    # Evaluations are group jobs (one evaluation each, as the profile leaves grouping off).
    assert {"evaluate_dev_sft_evaluate", "evaluate_test_sft_evaluate"} <= set(submitted)
    for name, calls in submitted.items():
        gpu_rule = name in GPU_RULES or name.startswith("evaluate_")
        for call in calls:
            assert ("--gpus=1" in call) == gpu_rule and "--gpus=2" not in call, call
            assert (" -p gpu " in call) == gpu_rule and (" -p cpu " in call) != gpu_rule, call


def test_local_rules_run_in_the_snakemake_process(slurm_run):
    _, log, _ = slurm_run
    local = _local_rules()
    assert {"collect_scores", "report", "select_checkpoints", "prefetch"} <= local
    assert local.isdisjoint(_submissions(log))
    ran_locally = set(re.findall(r"^local(?:rule|checkpoint) (\w+):", log, re.M))
    # This run has no expert track, so its rules (greedy merging, kinship figures) do not run.
    assert (
        {"collect_scores", "combine_scores", "report", "select_checkpoints", "prefetch"}
        <= ran_locally
        <= local
    )


def test_a_cancelled_evaluation_is_reported_and_run_again(slurm_run):
    workdir, log, cancelled = slurm_run
    assert "rule_evaluate" in cancelled
    # A group of single evaluations, or the job of a grid's evaluations.
    assert re.search(r"^\s*message: Error in (?:group|rule) evaluate_", log, re.M)
    assert "Trying to restart job" in log
    # base on both splits (shared), each checkpoint on both, the grids on dev, EXPO and ExMe on test
    assert len(list((workdir / "results/ci").glob("*/eval/*/*.json"))) == 2 + 6 + 4 + 3 + 2 + 1


def test_a_cancelled_fine_tuning_resumes_from_its_last_checkpoint(slurm_run):
    workdir, log, cancelled = slurm_run
    assert "rule_finetune" in cancelled
    assert "Error in rule finetune" in log
    submitted = _submissions(log)["finetune"]
    assert len(submitted) == 2  # the cancelled job and its retry
    finetune_log = (workdir / "results/ci/seed0/logs/finetune/sft.log").read_text()  # the retry's
    assert re.search(r"resuming from \S+/checkpoint-\d+", finetune_log), finetune_log[-3000:]


def test_the_scores_equal_a_local_runs(slurm_run, ci_run):
    """The local run holds more models (other methods, every checkpoint extrapolated: it merges the
    CI config over config/config.yaml); the ExMe chain's rows must be the same."""
    workdir, _, _ = slurm_run
    on_slurm = pd.read_csv(workdir / "results/ci/scores.csv")
    assert {"base", "sft-20", "expo1", "expo2", "exme"} <= set(on_slurm["model"])
    local = pd.read_csv(ci_run / "results/ci/scores.csv")
    local = local[local["model"].isin(set(on_slurm["model"]))][list(on_slurm.columns)]
    pd.testing.assert_frame_equal(on_slurm, local.reset_index(drop=True))

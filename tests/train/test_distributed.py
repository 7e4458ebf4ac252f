"""The finetune rule's multi-process path run for real: `accelerate launch` with 2 data-parallel
processes on the CPU (gloo), the command `exme.train.launch` builds for a 2-GPU job.

FSDP does not run on the CPU under accelerate 1.15 (its state sets FSDP up only for GPU-like
devices; with fsdp_sync_module_states it stops with "There are currently no available devices
found"), so the FSDP file layouts are tested in test_sft against the names accelerate writes.
"""

import json
import os
import re
import shutil
import subprocess
import time

import psutil
import pytest
import torch
from safetensors.torch import load_file

from exme.train.launch import launch_command, training_arguments

MAX_STEPS, SAVE_STEPS = 40, 4
SETTINGS = {"learning_rate": 1e-3, "max_steps": MAX_STEPS, "save_steps": SAVE_STEPS, "seed": 0, "bf16": False}
GLOBAL_BATCH = 4
LOSS_TOLERANCE = 1e-6  # relative; float32 sums over 2 processes' examples in another order
# Records, per training process (torchrun's RANK), every Python-level write, rename, link and
# deletion under EXME_AUDIT_ROOT (safetensors and torch.save write from native code, unseen here).
AUDIT_HOOK = """
import json, os, sys
ROOT = os.environ.get("EXME_AUDIT_ROOT")
if ROOT:
    LOG = open(os.path.join(os.environ["EXME_AUDIT_LOG"], f"{os.getpid()}.jsonl"), "a")
    CHANGES = {"os.remove", "os.rmdir", "shutil.rmtree", "os.rename", "os.link"}
    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def audit(event, args):
        if event == "open":
            mode, flags = args[1], args[2]
            writes = set(mode) & set("wax+") if isinstance(mode, str) else flags & WRITE_FLAGS
            if not writes:
                return
        elif event not in CHANGES:
            return
        path = args[0]
        if isinstance(path, (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(path))
            if path.startswith(ROOT):
                LOG.write(json.dumps([os.environ.get("RANK"), event, os.path.relpath(path, ROOT)]) + "\\n")
                LOG.flush()

    sys.addaudithook(audit)
"""


def _command(base, data, run_dir, processes):
    arguments = training_arguments(
        base,
        data / "sft_train.jsonl",
        run_dir / "sft",
        run_dir / "state",
        threads=1,
        settings={**SETTINGS, "batch_size": GLOBAL_BATCH // processes},
    )
    return launch_command(processes, arguments)


def _environment(run_dir, tmp_path):
    """The caller's environment with the audit hook on, recording into run_dir/audit."""
    site = tmp_path / "audit_site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(AUDIT_HOOK)
    (run_dir / "audit").mkdir(parents=True, exist_ok=True)
    python_path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {
        **os.environ,
        "PYTHONPATH": python_path,
        "EXME_AUDIT_ROOT": str(run_dir),
        "EXME_AUDIT_LOG": str(run_dir / "audit"),
    }


def _train(base, data, run_dir, processes, tmp_path):
    run_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        _command(base, data, run_dir, processes),
        env=_environment(run_dir, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def _kill_tree(process):
    """SIGKILL the launcher and every process under it, as a node failure or `scancel` does:
    torchrun starts its workers in sessions of their own, which a process-group kill misses."""
    tree = [process, *process.children(recursive=True)]
    for member in tree:
        member.kill()
    psutil.wait_procs(tree, timeout=30)


def _train_and_kill(base, data, run_dir, processes, tmp_path, after_step):
    """Start training and kill it as soon as the checkpoint of `after_step` is complete."""
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = run_dir / "state" / f"checkpoint-{after_step}" / "trainer_state.json"
    with (run_dir / "killed.log").open("w") as log:
        popen = subprocess.Popen(
            _command(base, data, run_dir, processes),
            env=_environment(run_dir, tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        process = psutil.Process(popen.pid)
        try:
            deadline = time.monotonic() + 300
            while not marker.is_file() and popen.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
        finally:
            _kill_tree(process)
            popen.wait()
    assert marker.is_file(), (run_dir / "killed.log").read_text()[-3000:]


def _losses(run_dir):
    state = json.loads((run_dir / "state" / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def _audit(run_dir):
    """(rank, event, path) of every recorded change, rank None for the launcher."""
    return {
        tuple(json.loads(line))
        for path in (run_dir / "audit").glob("*.jsonl")
        for line in path.read_text().splitlines()
    }


def _weights(run_dir, step):
    return load_file(run_dir / "sft" / f"step-{step}" / "model.safetensors")


@pytest.fixture(scope="module")
def runs(tiny_base, demo_data, tmp_path_factory):
    """One process with the global batch, 2 processes with half of it each, and 2 processes killed
    after a checkpoint and run again."""
    root = tmp_path_factory.mktemp("distributed")
    logs = {
        "one": _train(tiny_base, demo_data, root / "one", 1, root),
        "two": _train(tiny_base, demo_data, root / "two", 2, root),
    }
    resumed = root / "resumed"
    _train_and_kill(tiny_base, demo_data, resumed, 2, root, after_step=SAVE_STEPS)
    complete = sorted(
        int(path.parent.name.split("-")[1])
        for path in (resumed / "state").glob("checkpoint-*/trainer_state.json")
    )
    # A checkpoint cut short by the kill: the rerun must delete it (in one process) and resume
    # from the newest complete one.
    partial = resumed / "state" / f"checkpoint-{complete[-1] + SAVE_STEPS}"
    partial.mkdir(exist_ok=True)
    shutil.copy(resumed / "state" / f"checkpoint-{complete[-1]}" / "model.safetensors", partial)
    shutil.rmtree(resumed / "audit")
    logs["resumed"] = _train(tiny_base, demo_data, resumed, 2, root)
    return {"root": root, "logs": logs, "killed_at": complete[-1], "partial": partial}


def test_two_processes_train_as_one_data_parallel_group(runs):
    state = runs["root"] / "two" / "state" / f"checkpoint-{MAX_STEPS}"
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {path.name for path in state.iterdir()}


def test_the_loss_curve_equals_one_processs_with_the_same_global_batch(runs):
    one, two = _losses(runs["root"] / "one"), _losses(runs["root"] / "two")
    assert len(one) == len(two) > 1
    assert two == pytest.approx(one, rel=LOSS_TOLERANCE)
    final_one, final_two = (
        _weights(runs["root"] / "one", MAX_STEPS),
        _weights(runs["root"] / "two", MAX_STEPS),
    )
    assert all(torch.allclose(final_two[name], final_one[name], rtol=0, atol=1e-6) for name in final_one)


@pytest.mark.parametrize("run", ["two", "resumed"])
def test_exactly_one_process_writes_deletes_and_logs(runs, run):
    changes = _audit(runs["root"] / run)
    assert {rank for rank, _, _ in changes} == {"0"}, sorted(change for change in changes if change[0] != "0")
    events = {event for _, event, _ in changes}
    assert "os.link" in events  # the export, hard links into sft/step-N
    assert any(path.endswith("trainer_state.json") for _, _, path in changes)
    log = runs["logs"][run]
    assert log.count("[exme.train] 160 examples, none longer than max_seq_length") == 1
    losses = re.findall(r"\{'loss': .*", log)  # the Trainer's log lines, one per logged step
    assert len(losses) == len(set(losses)) > 0


def test_a_run_killed_after_a_checkpoint_resumes_from_it_and_ends_as_an_uninterrupted_run(runs):
    killed_at, log = runs["killed_at"], runs["logs"]["resumed"]
    assert killed_at < MAX_STEPS  # the kill came before the end
    assert log.count(f"resuming from {runs['root'] / 'resumed' / 'state' / f'checkpoint-{killed_at}'}") == 1
    assert log.count(f"deleting {runs['partial']}: written only in part") == 1
    assert ("0", "shutil.rmtree", str(runs["partial"].relative_to(runs["root"] / "resumed"))) in _audit(
        runs["root"] / "resumed"
    )
    resumed, uninterrupted = _losses(runs["root"] / "resumed"), _losses(runs["root"] / "two")
    assert resumed == uninterrupted
    for step in range(SAVE_STEPS, MAX_STEPS + 1, SAVE_STEPS):
        final, expected = _weights(runs["root"] / "resumed", step), _weights(runs["root"] / "two", step)
        assert all(torch.equal(final[name], expected[name]) for name in expected), step


@pytest.mark.parametrize("run", ["two", "resumed"])
def test_each_exported_step_holds_one_copy_of_the_model(runs, run):
    out, state = runs["root"] / run / "sft", runs["root"] / run / "state"
    assert {path.name for path in out.iterdir()} == {
        f"step-{step}" for step in range(SAVE_STEPS, MAX_STEPS + 1, SAVE_STEPS)
    }
    for folder in out.iterdir():
        weights = [path.name for path in folder.iterdir() if path.suffix in (".safetensors", ".bin", ".pt")]
        assert weights == ["model.safetensors"], folder
    resume_state = [path.parent.name for path in state.glob("checkpoint-*/optimizer.pt")]
    assert resume_state == [f"checkpoint-{MAX_STEPS}"]

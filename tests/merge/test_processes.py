"""Large merges on the CPU run in forked processes, each writing its part of the output files."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from exme.errors import ExmeError
from exme.merge import blocks, execute
from exme.merge.execute import build_state_dict, merge_to_dir
from exme.merge.io import direct_io, shard_writer
from exme.merge.plan import plan_merge
from exme.merge.processes import forked
from exme.merge.recipe import recipe_from_dict

_PROCESSES = 3


@pytest.fixture
def forked_tasks(monkeypatch) -> list[int]:
    """The number of tasks each merge hands to forked processes."""
    counts: list[int] = []

    def counting(tasks, on_steps):
        counts.append(len(tasks))
        return forked(tasks, on_steps)

    monkeypatch.setattr(execute, "forked", counting)
    return counts


@pytest.fixture
def in_processes(monkeypatch, forked_tasks) -> list[int]:
    """Every merge_to_dir in _PROCESSES processes, in small row blocks, with small direct writes."""
    monkeypatch.setattr(execute, "PARALLEL_PROCESSES_MIN_BYTES", 0)
    monkeypatch.setattr(execute, "compute_workers", lambda device: _PROCESSES)
    monkeypatch.setattr(blocks, "BLOCK_ELEMENTS", 512)
    monkeypatch.setattr(shard_writer, "STAGING_BYTES", 2 * direct_io.DIRECT_ALIGNMENT)
    return forked_tasks


def _written(out) -> dict[str, torch.Tensor]:
    return {name: tensor for shard in out.glob("*.safetensors") for name, tensor in load_file(shard).items()}


@pytest.mark.parametrize(
    ("method", "large_first"), [("ties", False), ("task_arithmetic", False), ("ties", True)]
)
@pytest.mark.parametrize("shard_size", ["30KB", "5GB"])
def test_a_merge_in_processes_writes_what_the_merge_in_memory_computes(
    make_family, tmp_path, in_processes, method, shard_size, large_first, monkeypatch
):
    """Whole tensors (TIES) and blocks of rows (task arithmetic), parts within and across shards,
    and (`large_first`, TIES) the larger tensors in the first process, away from their neighbours."""
    family = make_family(dtype=torch.bfloat16, layers=4)
    recipe = recipe_from_dict({
        "merge_method": method, "base_model": str(family.base),
        "models": [{"model": str(m), "parameters": {"weight": 0.6}} for m in (family.ft_a, family.ft_b)],
        "parameters": {"density": 0.5} if method == "ties" else {},
    })  # fmt: skip
    if large_first:
        plan = plan_merge(recipe)
        sizes = sorted({execute._whole_tensor_bytes(plan, index) for index in range(len(plan.jobs))})
        monkeypatch.setattr(execute, "PREFETCH_BYTES", _PROCESSES * sizes[-2] - 1)  # the two largest
        first = execute._parts(plan, _PROCESSES)[0]
        assert first != list(range(first[0], first[-1] + 1))
    out = merge_to_dir(recipe, tmp_path / "merged", shard_size=shard_size)
    assert in_processes == [len(execute._parts(plan_merge(recipe), _PROCESSES)) - 1] != [0]
    written, expected = _written(out), build_state_dict(recipe, device="cpu")
    assert written.keys() == expected.keys()
    assert all(torch.equal(written[name], expected[name]) for name in expected)
    assert (len(list(out.glob("*.safetensors"))) > 1) == (shard_size == "30KB")


def test_progress_counts_the_tensors_of_every_process(family, tmp_path, in_processes, capsys):
    recipe = recipe_from_dict({"merge_method": "linear", "models": [
        {"model": str(m), "parameters": {"weight": 0.5}} for m in (family.ft_a, family.ft_b)]})  # fmt: skip
    merge_to_dir(recipe, tmp_path / "merged", show_progress=True)
    tensors = len(plan_merge(recipe).jobs)
    assert f"{tensors}/{tensors}" in capsys.readouterr().err
    assert in_processes == [_PROCESSES - 1]


def test_an_error_in_another_process_is_raised_and_nothing_is_left(family, tmp_path, in_processes):
    model = tmp_path / "exploded"
    shutil.copytree(family.ft_a, model)
    tensors = load_file(model / "model.safetensors")
    tensors["lm_head.weight"].view(-1)[3] = torch.nan  # the last tensor: another process's part
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    recipe = recipe_from_dict({"merge_method": "task_arithmetic", "base_model": str(family.base),
                               "models": [{"model": str(model), "parameters": {"weight": 1.0}}]})  # fmt: skip
    with pytest.raises(ExmeError, match=r"'lm_head.weight' has NaN or Inf.*exploded"):
        merge_to_dir(recipe, tmp_path / "merged")
    assert in_processes == [_PROCESSES - 1]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["exploded"]


def test_small_merges_run_in_one_process(family, tmp_path, forked_tasks):
    recipe = recipe_from_dict({"merge_method": "linear", "models": [
        {"model": str(m), "parameters": {"weight": 0.5}} for m in (family.ft_a, family.ft_b)]})  # fmt: skip
    assert _written(merge_to_dir(recipe, tmp_path / "merged")).keys() == build_state_dict(recipe).keys()
    assert forked_tasks == [0]


def _plan(family, method: str):
    return plan_merge(recipe_from_dict({
        "merge_method": method, "base_model": str(family.base),
        "models": [{"model": str(m), "parameters": {"weight": 0.5}} for m in (family.ft_a, family.ft_b)],
        "parameters": {"density": 0.5} if method == "ties" else {},
    }))  # fmt: skip


def test_parts_are_runs_of_consecutive_jobs_about_equal_in_bytes_read(family, monkeypatch):
    monkeypatch.setattr(execute, "PARALLEL_PROCESSES_MIN_BYTES", 0)
    plan = _plan(family, "task_arithmetic")  # every tensor in blocks of rows: none is large
    read = [blocks.block_bytes(job.locations, None) for job in plan.jobs]
    for count in (2, 3):
        parts = execute._parts(plan, count)
        assert [index for part in parts for index in part] == list(range(len(plan.jobs)))
        assert len(parts) == count
        shares = [sum(read[index] for index in part) for part in parts]
        assert all(abs(share - sum(read) / count) <= max(read) for share in shares)
    monkeypatch.setattr(execute, "PARALLEL_PROCESSES_MIN_BYTES", sum(read) + 1)
    assert execute._parts(plan, 2) == [list(range(len(plan.jobs)))]


def test_whole_tensors_larger_than_a_share_of_the_prefetch_budget_go_to_the_first_process(
    family, monkeypatch
):
    """One process merges them one at a time: two processes would hold two at once."""
    monkeypatch.setattr(execute, "PARALLEL_PROCESSES_MIN_BYTES", 0)
    plan = _plan(family, "ties")  # whole tensors
    largest = max(execute._whole_tensor_bytes(plan, index) for index in range(len(plan.jobs)))
    monkeypatch.setattr(execute, "PREFETCH_BYTES", 2 * largest - 1)  # a share of 2: only the largest
    large = [index for index in range(len(plan.jobs)) if execute._whole_tensor_bytes(plan, index) == largest]
    first, second = execute._parts(plan, 2)
    assert set(large) <= set(first) and not set(large) & set(second)
    assert sorted(first + second) == list(range(len(plan.jobs))) and first == sorted(first)
    assert second == list(range(second[0], second[-1] + 1))


# The process runner on its own.


def _steps(count: int):
    def task(step) -> None:
        for _ in range(count):
            step()

    return task


def _failing(error: BaseException):
    def task(step) -> None:
        step()
        raise error

    return task


def test_forked_tasks_report_their_steps():
    seen = []
    with forked([_steps(3), _steps(70_000)], seen.append) as children:
        time.sleep(0.2)
        seen.append(children.steps())
    assert sum(seen) == 70_003


@pytest.mark.parametrize(
    ("error", "message"),
    [(ExmeError("tensor 'x' is bad"), "tensor 'x' is bad"), (ValueError("boom"), "ValueError: boom")],
)
def test_a_failed_task_raises_its_message_in_the_parent(error, message):
    seen = []
    with pytest.raises(ExmeError) as raised, forked([_steps(2), _failing(error)], seen.append):
        pass
    assert str(raised.value) == message
    assert sum(seen) == 3


def test_tasks_still_running_are_ended_when_the_parent_fails(tmp_path):
    marker = tmp_path / "finished"

    def slow(step) -> None:
        time.sleep(30)
        marker.touch()

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="parent"), forked([slow], lambda steps: None):
        raise RuntimeError("parent")
    assert time.monotonic() - started < 10 and not marker.exists()


def test_a_task_killed_from_outside_is_an_error():
    def killed(step) -> None:
        os.kill(os.getpid(), 9)

    with pytest.raises(ExmeError, match="ended with status"), forked([killed], lambda steps: None):
        pass


def test_tasks_end_when_the_parent_is_killed_outright(tmp_path):
    pid_file = tmp_path / "pid"

    def slow(step) -> None:
        pid_file.write_text(str(os.getpid()))
        time.sleep(30)

    parent = os.fork()
    if parent == 0:  # a merge's process, killed below while its task runs
        try:
            with forked([slow], lambda steps: None):
                time.sleep(30)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 10
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(parent, signal.SIGKILL)
    os.waitpid(parent, 0)
    task = Path(f"/proc/{pid_file.read_text()}/stat")
    while task.exists() and task.read_text().split(") ")[1][0] != "Z":  # gone, or dead and unreaped
        assert time.monotonic() < deadline
        time.sleep(0.01)

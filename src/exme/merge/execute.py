"""The streaming merge engine: output tensors are computed from their inputs and written at once.

Memory stays at a few blocks of tensors whatever the model size: elementwise methods work on
blocks of rows of large tensors (see blocks.py; runtime.py prefetches the next blocks' inputs, in
a bounded number of bytes), and results are written straight into the output shard files. A large
merge on the CPU runs in forked processes, each merging and writing its part of the tensors (see
processes.py).
"""

from __future__ import annotations

import bisect
import functools
import importlib
import itertools
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from exme.device import resolve_device
from exme.errors import ExmeError
from exme.files import CONFIG_FILE, staged_dir
from exme.merge.blocks import Block, BlockReader, block_bytes, merge_block, row_blocks, splits
from exme.merge.io.model_folder import holds_model
from exme.merge.io.shard_writer import create_shard_files, fill_shards, plan_shards
from exme.merge.multi import changed_stages, load_recipe, stage_order, standalone_stage, with_stages
from exme.merge.output_folder import RECIPE_FILE, write_metadata_files
from exme.merge.plan import MergePlan, TensorJob, plan_merge
from exme.merge.processes import forked
from exme.merge.recipe import Recipe
from exme.merge.runtime import (
    PREFETCH_BYTES,
    compute_threads,
    compute_workers,
    prefetched,
    release_free_memory,
)
from exme.sizes import parse_size

DEFAULT_SHARD_SIZE = 5 * 10**9
_LARGE_TENSOR_BYTES = 64 * 2**20  # a whole tensor this large first releases freed memory
# Merges reading fewer bytes run in one process, its workers threads: another process holds its own
# blocks and heap, much next to a small merge's memory, for little time saved on a merge that short.
PARALLEL_PROCESSES_MIN_BYTES = 2**30
# Blocks handed to the workers beyond one each: a worker that finishes before the oldest merge (whose
# result is written first) starts on the next block at once.
_QUEUED_MERGES = 2


@dataclass(frozen=True)
class _Piece:
    """A block of rows of one output tensor (all of it when `rows` is None)."""

    job: TensorJob
    rows: range | None

    def memory_bytes(self) -> int:
        """About the memory merging it takes: its inputs as read and, for a whole tensor (which a
        method may hold in fp32 all at once), their fp32 copies."""
        return block_bytes(self.job.locations, self.rows, compute_itemsize=4 if self.rows is None else 0)

    @property
    def completes_tensor(self) -> bool:
        return self.rows is None or self.rows.stop == self.job.output.shape[0]

    def read_dtype(self, plan: MergePlan, device: torch.device) -> torch.dtype | None:
        """float32 where a whole tensor's half-precision inputs are merged on the CPU in float32:
        converted within their read buffers, which memory_bytes already counts at that size; the
        conversion's second buffer would raise the peak of the largest tensors (embeddings)."""
        merged_in_float32 = (
            plan.input_dtype is None
            and self.job.merges_values
            and not plan.method.is_copy(self.job.parameters)
        )
        return torch.float32 if device.type == "cpu" and self.rows is None and merged_in_float32 else None


def _pieces(plan: MergePlan, jobs: list[int] | None = None) -> Iterator[_Piece]:
    """The pieces of the plan's jobs (of those at these positions)."""
    for job in plan.jobs if jobs is None else [plan.jobs[index] for index in jobs]:
        for rows in row_blocks(job.output.shape, splits(plan.method, job)):
            yield _Piece(job, rows)


def _parts(plan: MergePlan, workers: int) -> list[list[int]]:
    """The jobs (their positions) of each process merging at once: for a merge reading
    PARALLEL_PROCESSES_MIN_BYTES or more, one process per worker, else one. Whole tensors larger
    than a process's share of the prefetch budget all go to the first: a process merges one such
    tensor at a time, which bounds the peak memory as in one process; the other jobs are split in
    runs of consecutive jobs, so that each process reads about the same number of bytes."""
    read = [max(1, block_bytes(job.locations, None)) for job in plan.jobs]
    if sum(read) < PARALLEL_PROCESSES_MIN_BYTES:
        return [list(range(len(plan.jobs)))]
    share = PREFETCH_BYTES // workers
    large = {index for index in range(len(plan.jobs)) if _whole_tensor_bytes(plan, index) > share}
    others = [index for index in range(len(plan.jobs)) if index not in large]
    # bytes read by the first process through each of the other jobs, taken in order
    cumulative = list(itertools.accumulate((read[index] for index in others),
                                           initial=sum(read[index] for index in large)))  # fmt: skip
    cuts = [bisect.bisect_left(cumulative, sum(read) * k / workers) for k in range(1, workers)]
    bounds = [0, *cuts, len(others)]
    parts = [others[start:stop] for start, stop in itertools.pairwise(bounds)]
    parts[0] = sorted([*large, *parts[0]])
    return [part for part in parts if part]


def _whole_tensor_bytes(plan: MergePlan, index: int) -> int:
    """The memory merging a job's tensor takes if it is merged whole, else 0."""
    job = plan.jobs[index]
    return 0 if splits(plan.method, job) else _Piece(job, None).memory_bytes()


def _release_before_large(piece: _Piece) -> None:
    """Before a large whole tensor's inputs are read, and again before they are merged, hand back
    the memory that earlier merges freed (the C allocator keeps it, and the large tensor's buffers
    would come on top)."""
    if piece.rows is None and piece.memory_bytes() > _LARGE_TENSOR_BYTES:
        release_free_memory()


def _read_piece(reader: BlockReader, plan: MergePlan, piece: _Piece, device: torch.device) -> Block:
    _release_before_large(piece)
    return reader.read(piece.job.locations, piece.rows, piece.read_dtype(plan, device))


def _merge_piece(plan: MergePlan, piece: _Piece, block: Block, device: torch.device) -> torch.Tensor:
    _release_before_large(piece)
    return merge_block(plan, piece.job, block, device)


def _results(
    plan: MergePlan,
    device: torch.device,
    pieces: Iterator[_Piece],
    workers: int,
    processes: int = 1,
    on_tensor: Callable[[], None] | None = None,
    keep_on_device: bool = False,
) -> Iterator[tuple[str, torch.Tensor]]:
    """(tensor name, block of its rows) of the pieces, in order (a tensor's blocks are consecutive),
    merged by `workers` threads in each of `processes` merging at once, which share the cores and
    the prefetch budget; on the CPU, or with keep_on_device on the compute device. `on_tensor` is
    called as each tensor is complete."""
    with (
        compute_threads(device, workers * processes),
        BlockReader() as reader,
        ThreadPoolExecutor(workers, thread_name_prefix="exme-merge") as pool,
    ):
        merging: deque[tuple[_Piece, Future[torch.Tensor]]] = deque()

        def finished() -> tuple[str, torch.Tensor]:
            piece, future = merging.popleft()
            merged = future.result()
            if on_tensor and piece.completes_tensor:
                on_tensor()
            return piece.job.output.name, merged if keep_on_device else merged.cpu()

        in_flight = workers + _QUEUED_MERGES
        for piece, block in prefetched(
            pieces,
            lambda piece: _read_piece(reader, plan, piece, device),
            _Piece.memory_bytes,
            held=in_flight,
            max_bytes=PREFETCH_BYTES // processes,
        ):
            merging.append((piece, pool.submit(_merge_piece, plan, piece, block, device)))
            del block
            # Results are written in order, as soon as they are done; the next block is submitted
            # while the oldest is still merging, so a worker that finishes early is not idle.
            while merging and (merging[0][1].done() or len(merging) == in_flight):
                yield finished()
        while merging:
            yield finished()


def build_state_dict(
    recipe: Recipe, device: str | torch.device | None = None, *, keep_on_device: bool = False
) -> dict[str, torch.Tensor]:
    """Merge into memory: {tensor name: tensor in the output dtype}, on the CPU, or with
    keep_on_device on the compute device (a model evaluated there then needs no copy)."""
    blocks: dict[str, list[torch.Tensor]] = {}
    plan, device = plan_merge(recipe), resolve_device(device)
    results = _results(plan, device, _pieces(plan), compute_workers(device), keep_on_device=keep_on_device)
    for name, block in results:
        blocks.setdefault(name, []).append(block)
    return {name: parts[0] if len(parts) == 1 else torch.cat(parts) for name, parts in blocks.items()}


def merge_to_dir(
    recipe: Recipe,
    out_dir: str | os.PathLike[str],
    *,
    shard_size: int | str = DEFAULT_SHARD_SIZE,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    show_progress: bool | None = None,
    allow_crimes: bool = False,
    copy_tokenizer: bool = True,
    write_model_card: bool = True,
) -> Path:
    """Merge into a Hugging Face model folder, built aside and renamed into place at the end.

    `allow_crimes` merges models of different architectures (mergekit's option of that name);
    `copy_tokenizer` False leaves the tokenizer out, `write_model_card` False the model card."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not overwrite:
        raise ExmeError(f"output folder {out_dir} already exists (pass overwrite to replace it)")
    max_shard_bytes = parse_size(shard_size)
    plan = plan_merge(recipe, allow_crimes=allow_crimes)
    device = resolve_device(device)
    workers = compute_workers(device)
    parts = _parts(plan, workers)
    disable = not sys.stderr.isatty() if show_progress is None else not show_progress
    with (
        staged_dir(out_dir) as staging,
        tqdm(total=len(plan.jobs), unit="tensor", disable=disable) as progress,
    ):
        shards = plan_shards((job.output for job in plan.jobs), max_shard_bytes)
        create_shard_files(staging, shards)

        def fill(jobs: list[int], on_tensor: Callable[[], None]) -> None:
            """Merge these jobs and write their tensors: one process's part of the output."""
            threads = max(1, workers // len(parts))
            results = _results(plan, device, _pieces(plan, jobs), threads, len(parts), on_tensor)
            fill_shards(staging, shards, results, jobs)

        with forked([functools.partial(fill, jobs) for jobs in parts[1:]], progress.update) as others:
            # The model card's library takes a noticeable time to import: do it while the tensors
            # stream (here, after the fork: an import under way would stay locked in the children).
            threading.Thread(
                target=importlib.import_module, args=("huggingface_hub.repocard",), daemon=True
            ).start()
            fill(parts[0], lambda: progress.update(1 + others.steps()))
        write_metadata_files(plan, staging, out_dir.name, copy_tokenizer, write_model_card)
    return out_dir


def write_stages(
    stages: Mapping[str, Recipe],
    directory: str | os.PathLike[str],
    *,
    lazy: bool = True,
    on_stage: Callable[[str | None, Path, bool], None] | None = None,
    **options: Any,
) -> dict[str, Recipe]:
    """mergekit-multi's --intermediate-dir: each named merge of a multi-document recipe (its stages)
    merged into directory/NAME (merge_to_dir's `options`), after those it uses, which it reads from
    their folders; a merge that re-indexes the vocabulary can then be a stage. With `lazy`
    (mergekit-multi's --lazy), a folder that holds the merge already is kept (see holds_merge).
    `on_stage(name, folder, kept)` follows each. Returns the named merges, each with its folder set:
    the final merge given them as its stages reads them there (merge_with_stages)."""
    folders: dict[str, Path] = {}

    def written(stage: Recipe) -> Recipe:
        return replace(stage, folder=str(folders[stage.name]) if stage.name in folders else None)

    order = stage_order(stages)
    if outside := [name for name in order if Path(name).is_absolute() or ".." in Path(name).parts]:
        raise ExmeError(f"merge {outside[0]!r}: a name must be a folder inside the intermediate folder")
    for name in order:
        stage = with_stages(standalone_stage(stages, name), written)
        folder = Path(directory) / name
        kept = lazy and holds_merge(folder, stage)
        if not kept:
            merge_to_dir(stage, folder, overwrite=True, **options)
        folders[name] = folder
        if on_stage:
            on_stage(name, folder, kept)
    return changed_stages(stages, written)


def merge_with_stages(
    recipe: Recipe,
    out_dir: str | os.PathLike[str],
    intermediate_dir: str | os.PathLike[str],
    *,
    lazy: bool = True,
    on_stage: Callable[[str | None, Path, bool], None] | None = None,
    **options: Any,
) -> Path:
    """mergekit-multi's run: the recipe's named merges written to intermediate_dir (write_stages),
    then the final merge to out_dir, which, as mergekit-multi does, is kept when `lazy` and it holds
    that merge already (holds_merge: `on_stage(name, out_dir, True)` then), else replaced."""
    final = replace(recipe, stages=write_stages(recipe.stages, intermediate_dir, lazy=lazy,
                                                on_stage=on_stage, **options))  # fmt: skip
    if lazy and holds_merge(Path(out_dir), final):
        if on_stage:
            on_stage(final.name, Path(out_dir), True)
        return Path(out_dir).absolute()
    return merge_to_dir(final, out_dir, overwrite=True, **options)


def holds_merge(folder: Path, recipe: Recipe) -> bool:
    """Whether a folder holds a model (as mergekit-multi checks: a config and weights) that is this
    merge, as far as its merge_recipe.yml (if any) tells, made after the named merges it reads from
    their folders: a changed merge, or one whose inputs were merged again, is merged again."""
    if not holds_model(folder):
        return False

    def written_at(model_folder: Path) -> float:
        return (model_folder / CONFIG_FILE).stat().st_mtime

    named = recipe.named_models
    read = [Path(stage.folder) for name, stage in recipe.stages.items() if stage.folder and name in named]
    if any(written_at(folder) < written_at(used) for used in read):
        return False
    recorded = folder / RECIPE_FILE
    try:
        return not recorded.exists() or load_recipe(recorded).to_documents() == recipe.to_documents()
    except ExmeError:
        return False

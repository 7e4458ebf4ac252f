"""The streaming merge engine: output tensors are computed from their inputs and written at once.

Memory stays at a few blocks of tensors whatever the model size: elementwise methods work on
blocks of rows of large tensors, a reader thread prefetches the next blocks' inputs (overlapping
disk reads with compute and writes) through a bounded queue, and results are appended straight
into the output shard files.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch
from tqdm import tqdm

from exme.device import default_device
from exme.errors import ExmeError
from exme.files import staged_dir
from exme.merge.io.output_folder import write_metadata_files
from exme.merge.io.reader import TensorReader
from exme.merge.io.shard_writer import plan_shards, write_shards
from exme.merge.methods.registry import MethodInputs
from exme.merge.plan import MergePlan, TensorJob, plan_merge
from exme.merge.recipe import Recipe
from exme.sizes import parse_size

DEFAULT_SHARD_SIZE = 5 * 10**9
# Elementwise methods merge large tensors in blocks of about this many entries, so memory does not
# grow with the largest tensor (a 70B model's embedding has 1e9 entries).
_PIECE_ELEMENTS = 4 * 2**20
_PREFETCH_DEPTH = 2  # blocks read ahead: enough to keep the disk busy, few enough to stay small

Item = TypeVar("Item")
Loaded = TypeVar("Loaded")


def _prefetched(items: Iterable[Item], load: Callable[[Item], Loaded]) -> Iterator[tuple[Item, Loaded]]:
    """Yield (item, load(item)) with loads running ahead in a thread, at most a few at a time."""
    results: queue.Queue = queue.Queue(maxsize=_PREFETCH_DEPTH)
    stopped = threading.Event()
    finished = object()

    def worker() -> None:
        try:
            for item in items:
                if stopped.is_set():
                    return
                results.put((item, load(item)))
            results.put(finished)
        except BaseException as error:  # handed to the consumer, which re-raises it
            results.put(error)

    thread = threading.Thread(target=worker, daemon=True, name="exme-reader")
    thread.start()
    try:
        while (entry := results.get()) is not finished:
            if isinstance(entry, BaseException):
                raise entry
            yield entry
    finally:
        stopped.set()
        while thread.is_alive():  # unblock a worker waiting on a full queue
            with contextlib.suppress(queue.Empty):
                results.get(timeout=0.1)


@dataclass(frozen=True)
class _Piece:
    """A block of rows of one output tensor (all of it when `rows` is None)."""

    job: TensorJob
    rows: range | None

    @property
    def completes_tensor(self) -> bool:
        return self.rows is None or self.rows.stop == self.job.output.shape[0]


def _pieces(plan: MergePlan) -> Iterator[_Piece]:
    for job in plan.jobs:
        shape = job.output.shape
        if not shape or not shape[0] or not plan.method.is_elementwise(job.parameters):
            yield _Piece(job, None)
            continue
        rows_per_piece = max(1, _PIECE_ELEMENTS * shape[0] // math.prod(shape))
        for start in range(0, shape[0], rows_per_piece):
            yield _Piece(job, range(start, min(start + rows_per_piece, shape[0])))


def _all_finite(result: torch.Tensor, output: torch.Tensor) -> bool:
    """Whether the result has no NaN/Inf, before and after casting to the output dtype.

    A sum is NaN/Inf when any entry is, and costs a fraction of isfinite().all(); a finite sum
    of weights cannot overflow float32. float16 output can overflow in the cast: check it fully.
    """
    if not math.isfinite(float(result.sum())):
        return False
    return output.dtype != torch.float16 or bool(torch.isfinite(output).all())


@contextlib.contextmanager
def _compute_threads(device: torch.device) -> Iterator[None]:
    """Leave a core to the reader thread: merging is memory-bound and gains nothing from the
    extra torch threads, which slow each operation several-fold when the cores are busy."""
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(previous, (os.cpu_count() or 1) - 1)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _Executor:
    def __init__(self, plan: MergePlan, device: torch.device, *, keep_on_device: bool = False):
        self.plan = plan
        self.device = device
        self.keep_on_device = keep_on_device
        self.compute_dtype = torch.float64 if plan.input_dtype == torch.float64 else torch.float32

    def load(self, reader: TensorReader, pool: ThreadPoolExecutor, piece: _Piece) -> list[torch.Tensor]:
        """Inputs in their stored dtype (upcasting here would double what the queue holds), read from
        all models at once: a disk serves several requests in flight faster than one stream (see
        benchmarks/RESULTS.md)."""
        return list(pool.map(lambda location: reader.read(location, piece.rows), piece.job.locations))

    def _prepared(self, tensor: torch.Tensor) -> torch.Tensor:
        """The method's own fp32 copy on the compute device (the read buffer if already so)."""
        if self.plan.input_dtype is not None:  # mergekit's `dtype` rounds inputs first
            tensor = tensor.to(self.plan.input_dtype)
        return tensor.to(self.device).to(self.compute_dtype)

    def compute(self, piece: _Piece, stored: list[torch.Tensor]) -> torch.Tensor:
        job = piece.job
        tensors = [self._prepared(tensor) for tensor in stored]
        inputs = MethodInputs(
            tensor_name=job.output.name,
            tensors=tensors[1:] if job.base else tensors,
            base=tensors[0] if job.base else None,
            generator_for=lambda index: torch.Generator(self.device).manual_seed(job.seed + index),
        )
        result = self.plan.method(inputs, **job.parameters)
        del tensors, inputs
        output = result.to(job.output.dtype)
        if not _all_finite(result, output):
            raise ExmeError(self._non_finite_message(piece))
        return output if self.keep_on_device else output.cpu()

    def _non_finite_message(self, piece: _Piece) -> str:
        job, reader = piece.job, TensorReader()  # inputs afresh: the method may overwrite them
        culprits = [
            str(location.file.parent)
            for location in job.locations
            if not bool(torch.isfinite(reader.read(location, piece.rows)).all())
        ]
        reader.close()
        cause = f"; non-finite input in {', '.join(culprits)}" if culprits else ""
        return f"result tensor {job.output.name!r} has NaN or Inf values{cause}"

    def results(self, show_progress: bool | None) -> Iterator[tuple[str, torch.Tensor]]:
        """(tensor name, block of its rows) in output order; a tensor's blocks are consecutive."""
        disable = not sys.stderr.isatty() if show_progress is None else not show_progress
        reader = TensorReader()
        try:
            with (
                _compute_threads(self.device),
                ThreadPoolExecutor(len(self.plan.models) + 1, thread_name_prefix="exme-read") as pool,
                tqdm(total=len(self.plan.jobs), unit="tensor", disable=disable) as progress,
            ):
                loaded = _prefetched(_pieces(self.plan), partial(self.load, reader, pool))
                for piece, stored in loaded:
                    yield piece.job.output.name, self.compute(piece, stored)
                    del stored
                    progress.update(int(piece.completes_tensor))
        finally:
            reader.close()


def _device(device: str | torch.device | None) -> torch.device:
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ExmeError("device cuda was requested but CUDA is not available")
    return device


def build_state_dict(
    recipe: Recipe, device: str | torch.device | None = None, *, keep_on_device: bool = False
) -> dict[str, torch.Tensor]:
    """Merge into memory: {tensor name: tensor in the output dtype}, on the CPU, or with
    keep_on_device on the compute device (a model evaluated there then needs no copy)."""
    executor = _Executor(plan_merge(recipe), _device(device), keep_on_device=keep_on_device)
    blocks: dict[str, list[torch.Tensor]] = {}
    for name, block in executor.results(show_progress=False):
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
) -> Path:
    """Merge into a Hugging Face model folder, built aside and renamed into place at the end."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not overwrite:
        raise ExmeError(f"output folder {out_dir} already exists (pass overwrite to replace it)")
    max_shard_bytes = parse_size(shard_size)
    plan = plan_merge(recipe)
    executor = _Executor(plan, _device(device))
    with staged_dir(out_dir) as staging:
        shards = plan_shards((job.output for job in plan.jobs), max_shard_bytes)
        write_shards(staging, shards, executor.results(show_progress))
        write_metadata_files(plan, staging, title=out_dir.name)
    return out_dir

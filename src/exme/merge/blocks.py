"""Reading tensors a block of rows at a time, and computing blocks of merged tensors.

A block's inputs are tensor sources: stored tensors (read from their files) and tensors of nested
recipes (computed from their own inputs, recursively, when first used). All stored tensors a block
needs are read at once, in parallel, while the engine computes the blocks before (runtime.py reads
ahead a few blocks and a bounded number of bytes at a time), so memory stays at a few blocks whatever
the model size. Whole tensors (methods that are not elementwise, vocabulary re-indexing, integer
buffers) are blocks of their own.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from exme.errors import ExmeError
from exme.merge.io.model_folder import ModelFolder
from exme.merge.io.reader import TensorLocation, TensorReader, tensor_nbytes
from exme.merge.methods.registry import MergeMethod, MethodInputs
from exme.merge.plan import MergePlan, NestedTensor, TensorJob, TensorSource

# Large tensors are processed in blocks of about this many entries, so memory does not grow with
# the largest tensor (a 70B model's embedding has 1e9 entries).
BLOCK_ELEMENTS = 4 * 2**20
# Reads in flight at once: a disk serves several requests faster than one stream (see
# benchmarks/RESULTS.md). Threads start on demand, one per stored tensor a block reads, up to this.
_MAX_PARALLEL_READS = 32


def splits(method: MergeMethod, job: TensorJob) -> bool:
    """Whether a job's output can be computed a block of rows at a time: floating-point values merged
    elementwise, no vocabulary re-indexing, and inputs that can be read by blocks of rows."""
    return (
        job.merges_values
        and job.vocabulary is None
        and method.is_elementwise(job.parameters)
        and splittable(job.locations)
    )


def splittable(sources: Iterable[TensorSource]) -> bool:
    """Whether these tensors can be read a block of rows at a time: a stored one always, a nested
    recipe's when its own job splits."""
    return all(
        isinstance(source, TensorLocation) or splits(source.model.plan.method, source.job)
        for source in sources
    )


def row_blocks(shape: tuple[int, ...], split: bool) -> list[range | None]:
    """The blocks of rows to process a tensor in; [None] (the whole tensor) when not `split`."""
    if not shape or not shape[0] or not split:
        return [None]
    rows_per_block = max(1, BLOCK_ELEMENTS * shape[0] // math.prod(shape))
    return [
        range(start, min(start + rows_per_block, shape[0])) for start in range(0, shape[0], rows_per_block)
    ]


def block_bytes(sources: Sequence[TensorSource], rows: range | None, compute_itemsize: int = 0) -> int:
    """About the memory a block of these sources takes: the stored tensors it reads, and the nested
    tensors it computes, in their output dtype (the prefetch budget counts it), plus
    `compute_itemsize` bytes per entry for their copies in the compute dtype."""
    total = 0
    for source in _uses(sources):
        if isinstance(source, TensorLocation):
            whole = source.end - source.start
        else:
            whole = tensor_nbytes(source.shape, source.dtype)
        whole += math.prod(source.shape) * compute_itemsize
        total += whole if rows is None or not source.shape else whole // source.shape[0] * len(rows)
    return total


class Block:
    """The input tensors of one block of rows: stored ones as read, nested recipes' computed on
    first use. Each is handed out as is to its last user and as a copy before that, since merge
    methods may overwrite their inputs."""

    def __init__(self, rows: range | None, uses: Counter, stored: dict[TensorLocation, torch.Tensor]):
        self.rows = rows
        self._uses = uses
        self._values: dict[TensorSource, torch.Tensor] = dict(stored)

    def take(self, source: TensorSource, device: torch.device) -> torch.Tensor:
        """A stored tensor on the CPU as read (in its stored dtype, or widened: BlockReader.read), a
        nested one on `device` in its output dtype."""
        if source not in self._values:
            nested = source.model
            self._values[source] = merge_block(nested.plan, source.job, self, device, nested.origin)
        self._uses[source] -= 1
        return self._values[source].clone() if self._uses[source] else self._values.pop(source)


def _uses(sources: Sequence[TensorSource]) -> Counter:
    """How many times each source is taken: a nested tensor's own inputs once, however often it is."""
    uses: Counter = Counter()

    def visit(source: TensorSource) -> None:
        uses[source] += 1
        if isinstance(source, NestedTensor) and uses[source] == 1:
            for input_source in source.job.locations:
                visit(input_source)

    for source in sources:
        visit(source)
    return uses


class BlockReader:
    """Reads the stored tensors behind blocks of tensor sources, keeping each file open once."""

    def __init__(self) -> None:
        self._reader = TensorReader()
        self._pool = ThreadPoolExecutor(_MAX_PARALLEL_READS, thread_name_prefix="exme-read")

    def read(
        self, sources: Sequence[TensorSource], rows: range | None, widen_to: torch.dtype | None = None
    ) -> Block:
        """Inputs in their stored dtype (upcasting here would double what the prefetch queue holds),
        or half-precision ones widened to `widen_to` (see TensorReader.read)."""
        uses = _uses(sources)
        stored = [source for source in uses if isinstance(source, TensorLocation)]
        tensors = self._pool.map(lambda location: self._reader.read(location, rows, widen_to), stored)
        return Block(rows, uses, dict(zip(stored, tensors, strict=True)))

    def __enter__(self) -> BlockReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown()
        self._reader.close()


def _all_finite(result: torch.Tensor, output: torch.Tensor) -> bool:
    """Whether the result has no NaN/Inf, before and after casting to the output dtype.

    A sum is NaN/Inf when any entry is, and costs a fraction of isfinite().all(); a finite sum
    of weights cannot overflow float32. float16 output can overflow in the cast: check it fully.
    """
    if not math.isfinite(float(result.sum())):
        return False
    return output.dtype != torch.float16 or bool(torch.isfinite(output).all())


def merge_block(
    plan: MergePlan, job: TensorJob, block: Block, device: torch.device, nested: str | None = None
) -> torch.Tensor:
    """A block of a job's output tensor, on `device` in the output dtype; `nested` names the nested
    merge the job belongs to (a NestedModel's origin), in errors."""
    compute_dtype = torch.float64 if plan.input_dtype == torch.float64 else torch.float32

    def prepared(tensor: torch.Tensor) -> torch.Tensor:
        """The method's own copy on the compute device (the block's buffer if already so)."""
        if plan.input_dtype is not None:  # mergekit's `dtype` rounds inputs first
            tensor = tensor.to(plan.input_dtype)
        return tensor.to(device).to(compute_dtype)

    if not job.merges_values:
        return _agreed_buffer(job, [block.take(source, device).to(device) for source in job.locations])
    if plan.method.is_copy(job.parameters) and plan.input_dtype is None and job.vocabulary is None:
        copied = block.take(job.locations[0], device).to(device=device, dtype=job.output.dtype)
        if not _all_finite(copied, copied):
            raise ExmeError(_non_finite_message(plan, job, block.rows, nested))
        return copied
    tensors = [prepared(block.take(source, device)) for source in job.locations]
    if job.vocabulary:
        tensors = job.vocabulary.apply(tensors)
    inputs = MethodInputs(
        tensor_name=job.output.name,
        tensors=tensors[1:] if job.base else tensors,
        base=tensors[0] if job.base else None,
        # a CPU generator on every device: the masks drawn from it, moved to the device, are the
        # same on all (a CUDA generator draws other numbers from the same seed)
        generator_for=lambda index: torch.Generator().manual_seed(job.seed + index),
    )
    result = plan.method(inputs, **job.parameters)
    del tensors, inputs
    output = result.to(job.output.dtype)
    if not _all_finite(result, output):
        raise ExmeError(_non_finite_message(plan, job, block.rows, nested))
    return output


def _agreed_buffer(job: TensorJob, tensors: list[torch.Tensor]) -> torch.Tensor:
    """An integer or boolean buffer (e.g. position_ids) is not merged: the base's (or first
    model's) copy is kept, if every model has the same."""
    first = tensors[0]
    if any(tensor.dtype != first.dtype or not torch.equal(tensor, first) for tensor in tensors[1:]):
        raise ExmeError(
            f"tensor {job.output.name!r} is not floating-point ({first.dtype}) and differs between "
            "the models; it cannot be merged: make it equal in all of them"
        )
    return first


def _model_name(plan: MergePlan, location: TensorLocation) -> str:
    """The model a stored tensor belongs to, as the recipe names it (a Hub id, a path)."""
    return next(
        (
            str(folder)
            for folder in plan.folders.values()
            if isinstance(folder, ModelFolder) and location.file.parent == folder.path
        ),
        str(location.file.parent),
    )


def _non_finite_message(plan: MergePlan, job: TensorJob, rows: range | None, nested: str | None) -> str:
    """Names the stored inputs holding NaN/Inf (a nested input was checked when it was computed)."""
    reader = TensorReader()  # inputs afresh: the method may have overwritten them
    culprits = [
        _model_name(plan, source)
        for source in job.locations
        if isinstance(source, TensorLocation) and not bool(torch.isfinite(reader.read(source, rows)).all())
    ]
    reader.close()
    of_recipe = f" of {nested}" if nested else ""
    cause = f"; non-finite input in {', '.join(culprits)}" if culprits else ""
    return f"result tensor {job.output.name!r}{of_recipe} has NaN or Inf values{cause}"

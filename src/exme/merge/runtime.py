"""How a merge uses the machine: reads run ahead of compute in a thread, within a byte budget
(prefetched); blocks are merged by a few worker threads that share the cores with torch's own
(compute_workers, compute_threads); and the memory a large tensor's merge freed goes back to the
system (release_free_memory).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import torch

_PREFETCH_DEPTH = 2  # blocks read ahead: enough to keep the disk busy, few enough to stay small
# Whole tensors (non-elementwise methods, vocabularies) can be far larger than a block: the blocks
# read ahead and those being merged may hold this many bytes together (one block at least), shared
# among the processes of a merge.
PREFETCH_BYTES = 384 * 2**20
_MAX_COMPUTE_WORKERS = 4  # each holds a block's inputs and temporaries

Item = TypeVar("Item")
Loaded = TypeVar("Loaded")


def prefetched(
    items: Iterable[Item],
    load: Callable[[Item], Loaded],
    size_of: Callable[[Item], int] | None = None,
    held: int = 1,
    max_bytes: int | None = None,
) -> Iterator[tuple[Item, Loaded]]:
    """Yield (item, load(item)) with loads running ahead in a thread, at most a few items and (with
    `size_of`) `max_bytes` (PREFETCH_BYTES by default) at a time, counting the last `held` items
    handed out (those in use)."""
    max_bytes = PREFETCH_BYTES if max_bytes is None else max_bytes
    results: queue.Queue = queue.Queue()
    stopped = threading.Event()
    finished = object()
    budget = threading.Condition()
    # read ahead (items), and with those in use (bytes); whether the consumer waits for an item
    in_flight = {"items": 0, "bytes": 0, "awaited": False}

    def fits(size: int) -> bool:
        room = in_flight["bytes"] == 0 or in_flight["bytes"] + size <= max_bytes
        # with nothing read ahead, an awaited item is read whatever the budget: the consumer may
        # hold its items until it has that one
        must_read = in_flight["awaited"] and in_flight["items"] == 0
        return stopped.is_set() or (in_flight["items"] < _PREFETCH_DEPTH and (room or must_read))

    def worker() -> None:
        try:
            for item in items:
                size = size_of(item) if size_of else 0
                with budget:
                    budget.wait_for(lambda size=size: fits(size))
                    if stopped.is_set():
                        return
                    in_flight["items"] += 1
                    in_flight["bytes"] += size
                results.put((item, load(item), size))
            results.put(finished)
        except BaseException as error:  # handed to the consumer, which re-raises it
            results.put(error)

    thread = threading.Thread(target=worker, daemon=True, name="exme-reader")
    thread.start()
    in_use: deque[int] = deque()  # sizes of the items handed out and still counted
    try:
        while True:
            with budget:
                in_flight["awaited"] = True
                budget.notify()
            entry = results.get()
            if entry is finished:
                break
            if isinstance(entry, BaseException):
                raise entry
            item, loaded, size = entry
            with budget:
                in_flight["items"] -= 1
                in_flight["awaited"] = False
                budget.notify()
            yield item, loaded
            del loaded
            in_use.append(size)
            if len(in_use) == held:
                with budget:
                    in_flight["bytes"] -= in_use.popleft()
                    budget.notify()
    finally:
        with budget:
            stopped.set()
            budget.notify()
        thread.join()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, where the C library has one."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Hand the memory freed by a large tensor's merge back to the system. The C allocator keeps
    what worker threads free in their own arenas, where it would add to the next large tensor's
    peak (the embedding's and the output head's temporaries would otherwise both be resident)."""
    if trim := _malloc_trim():
        trim(0)


def compute_workers(device: torch.device) -> int:
    """Blocks merged at once: on the CPU one per core (up to a few, each holding its block), since
    whole-tensor methods (TIES's top-k, DARE's random draw) are compute-bound and torch's own
    threads parallelize neither a histogram nor a random draw; on a GPU one, which is enough."""
    return max(1, min(os.cpu_count() or 1, _MAX_COMPUTE_WORKERS)) if device.type == "cpu" else 1


@contextlib.contextmanager
def compute_threads(device: torch.device, workers: int = 1) -> Iterator[None]:
    """Share the cores between `workers` threads computing at once, leaving one to the reader
    thread when there is a single worker: torch threads beyond that only contend (merging is
    memory-bound, and spinning threads slow each operation several-fold on busy cores)."""
    previous = torch.get_num_threads()
    if device.type == "cpu":
        cores = os.cpu_count() or 1
        torch.set_num_threads(max(1, min(previous, cores - 1 if workers == 1 else cores // workers)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)

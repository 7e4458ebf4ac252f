"""Reading large tensors with O_DIRECT where the page cache does not already hold them, and writing
output shards with it.

A buffered read makes the kernel allocate page-cache pages and copy them into the reader's buffer:
for a merge reading a few GB that copy costs about as much CPU as the merge's own arithmetic (see
benchmarks/RESULTS.md), on the same cores. A direct read lets the disk write into the buffer and
costs the CPU almost nothing. Ranges the page cache holds whole (a model read moments ago, one a
workflow merges again with other parameters, the CLI's start-up readahead) are still copied from
it: reading them from the disk again would be slower there. Buffered writes cost the same copy,
and leave the kernel's flusher threads writing the dirty pages on the same cores afterwards. No
library offers this, hence the system calls here (mincore through ctypes, as Python's mmap module
does not expose it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os

import torch

# Buffer addresses, file offsets and lengths of direct reads are multiples of this: the largest
# logical block size in common use (smaller ones divide it).
DIRECT_ALIGNMENT = 4096
# Smaller reads are not worth a disk request each: they go through the page cache and its readahead.
DIRECT_MIN_BYTES = 2**20

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_MAP_FAILED = ctypes.c_void_p(-1).value


def open_direct(file: os.PathLike[str] | str, writing: bool = False) -> int | None:
    """A descriptor reading (or writing, an existing file) `file` with O_DIRECT, or None where the
    system or file system has none."""
    if not hasattr(os, "O_DIRECT"):
        return None
    try:
        return os.open(file, (os.O_WRONLY if writing else os.O_RDONLY) | os.O_DIRECT)
    except OSError:
        return None


def aligned_buffer(nbytes: int) -> torch.Tensor:
    """A uint8 tensor of `nbytes` bytes starting at a multiple of DIRECT_ALIGNMENT (a view into a
    slightly larger one)."""
    raw = torch.empty(nbytes + DIRECT_ALIGNMENT, dtype=torch.uint8)
    pad = -raw.data_ptr() % DIRECT_ALIGNMENT
    return raw[pad : pad + nbytes]


def is_cached(descriptor: int, offset: int, length: int) -> bool:
    """Whether the page cache holds every page of the byte range (False if it cannot tell)."""
    start = offset - offset % mmap.PAGESIZE
    span = offset + length - start
    address = _libc.mmap(None, span, mmap.PROT_READ, mmap.MAP_SHARED, descriptor, start)
    if address in (None, _MAP_FAILED):
        return False
    try:
        pages = -(-span // mmap.PAGESIZE)
        resident = (ctypes.c_ubyte * pages)()
        if _libc.mincore(address, span, resident) != 0:
            return False
        return bytes(resident).count(0) == 0  # the lowest bit of each byte: page resident
    finally:
        _libc.munmap(address, span)


def read_direct(descriptor: int, offset: int, nbytes: int, room: int = 0) -> torch.Tensor | None:
    """The `nbytes` bytes at `offset`, read with O_DIRECT, at the start of a uint8 tensor of
    max(nbytes, room) bytes (a view into a slightly larger aligned buffer), or None if the file
    system refuses this direct read."""
    head = offset % DIRECT_ALIGNMENT
    length = -(-(head + nbytes) // DIRECT_ALIGNMENT) * DIRECT_ALIGNMENT
    size = max(nbytes, room)
    aligned = aligned_buffer(max(length, head + size))
    buffer = memoryview(aligned[:length].numpy())
    done = 0
    while done < head + nbytes:  # the last block may reach past the end of the file: a short read
        try:
            count = os.preadv(descriptor, [buffer[done:]], offset - head + done)
        except OSError as error:
            if error.errno == errno.EINVAL:  # alignment or direct I/O not supported here
                return None
            raise
        if count == 0:
            raise EOFError(f"the file ends before byte {offset + nbytes}")
        done += count
    return aligned[head : head + size]

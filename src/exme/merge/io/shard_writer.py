"""Writing safetensors shards tensor by tensor.

No library streams safetensors writes (safetensors.torch.save_file needs every tensor of the file
in memory), so the files are first made at their full size with headers written from the known
names, dtypes and shapes, and each tensor's bytes are written at their place as soon as they are
computed: memory stays at one tensor, not one shard, and several processes can fill one file.
The bytes go through an aligned staging buffer written with O_DIRECT (see direct_io.py), where the
file system allows it; unaligned ends, and everything on other file systems, buffered.
Format: 8-byte little-endian header length, JSON header padded with spaces to a multiple of 8,
then the tensors' bytes in header order.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from exme.merge.io import direct_io
from exme.merge.io.model_folder import SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE
from exme.merge.io.reader import SAFETENSORS_DTYPES, tensor_nbytes

_DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}
# Bytes written per direct write: large enough that the disk streams, small next to a merge's blocks.
STAGING_BYTES = 8 * 2**20


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.shape, self.dtype)


def plan_shards(specs: Iterable[TensorSpec], max_shard_bytes: int) -> list[list[TensorSpec]]:
    """Fill shards in order; a new one starts when the next tensor would overflow (as mergekit)."""
    shards: list[list[TensorSpec]] = [[]]
    filled = 0
    for spec in specs:
        if shards[-1] and filled + spec.nbytes > max_shard_bytes:
            shards.append([])
            filled = 0
        shards[-1].append(spec)
        filled += spec.nbytes
    return shards


def shard_file_names(count: int) -> list[str]:
    if count == 1:
        return [SAFETENSORS_FILE]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def _header(specs: list[TensorSpec]) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for spec in specs:
        header[spec.name] = {
            "dtype": _DTYPE_NAMES[spec.dtype],
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + spec.nbytes],
        }
        offset += spec.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    return len(encoded).to_bytes(8, "little") + encoded


class ShardFile:
    """Consecutive bytes written into an existing file from `start` on: a staging buffer at a time
    with O_DIRECT at aligned offsets, where the file system allows it; the bytes before the first
    aligned offset, a last partial buffer, and everything on other file systems through the page
    cache. Several processes may so fill disjoint ranges of one file: a page two ranges share is
    written through the page cache by both, never directly."""

    def __init__(self, path: Path, start: int = 0) -> None:
        self._buffered = os.open(path, os.O_WRONLY)
        self._direct = direct_io.open_direct(path, writing=True)
        self._staging = direct_io.aligned_buffer(STAGING_BYTES) if self._direct is not None else None
        self._staged = 0
        self._position = start  # where the staged bytes (or, without staging, the next ones) go
        self._unaligned = -start % direct_io.DIRECT_ALIGNMENT  # bytes before the first aligned offset

    def write(self, data: torch.Tensor) -> None:
        """Append the bytes of a flat uint8 tensor."""
        done = min(len(data), self._unaligned)
        if done:
            self._to_page_cache(memoryview(data[:done].numpy()))
            self._unaligned -= done
        while done < len(data) and self._direct is not None:
            count = min(len(data) - done, STAGING_BYTES - self._staged)
            self._staging[self._staged : self._staged + count].copy_(data[done : done + count])
            self._staged += count
            done += count
            if self._staged == STAGING_BYTES:
                self._write_staged()
        if done < len(data):  # no direct writes here, or refused on the way
            self._to_page_cache(memoryview(data[done:].numpy()))

    def _write_staged(self) -> None:
        staged = memoryview(self._staging.numpy())[: self._staged]
        start = 0
        try:
            while start < len(staged):
                written = os.pwrite(self._direct, staged[start:], self._position)
                start += written
                self._position += written
        except OSError as error:
            if error.errno != errno.EINVAL:  # alignment or direct I/O not supported here
                raise
            os.close(self._direct)
            self._direct = None  # from here on through the page cache
            self._to_page_cache(staged[start:])
        self._staged = 0

    def _to_page_cache(self, data: memoryview) -> None:
        done = 0
        while done < len(data):
            done += os.pwrite(self._buffered, data[done:], self._position + done)
        self._position += done

    def __enter__(self) -> ShardFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Write what is left and close the file."""
        try:
            if self._direct is not None:
                os.close(self._direct)
                self._to_page_cache(memoryview(self._staging.numpy())[: self._staged])
        finally:
            os.close(self._buffered)


def _write_tensor(file: ShardFile, spec: TensorSpec, blocks: Iterator[tuple[str, torch.Tensor]]) -> None:
    """Append the tensor's bytes, taking as many row blocks as it needs from `blocks`."""
    written = 0
    while True:  # every tensor, even an empty one, arrives as at least one block
        name, block = next(blocks)
        if name != spec.name or block.dtype != spec.dtype:
            raise RuntimeError(f"expected {spec.dtype} tensor {spec.name}, got {name}")
        if block.numel():
            file.write(block.contiguous().view(-1).view(torch.uint8))
        written += block.numel() * block.dtype.itemsize
        if written >= spec.nbytes:
            break
    if written != spec.nbytes:
        raise RuntimeError(f"tensor {spec.name}: wrote {written} bytes, planned {spec.nbytes}")


def tensor_places(shards: list[list[TensorSpec]]) -> list[tuple[str, int, TensorSpec]]:
    """(shard file name, offset of its first byte, spec) of each tensor, in shard order."""
    places = []
    for file_name, specs in zip(shard_file_names(len(shards)), shards, strict=True):
        offset = len(_header(specs))
        for spec in specs:
            places.append((file_name, offset, spec))
            offset += spec.nbytes
    return places


def create_shard_files(directory: Path, shards: list[list[TensorSpec]]) -> None:
    """The shard files at their full size with their headers (the tensors' bytes to be filled in by
    fill_shards), and an index if there is more than one."""
    names = shard_file_names(len(shards))
    for file_name, specs in zip(names, shards, strict=True):
        header = _header(specs)
        with open(directory / file_name, "wb") as file:
            file.write(header)
            file.truncate(len(header) + sum(spec.nbytes for spec in specs))
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(s.nbytes for shard in shards for s in shard)},
            "weight_map": {
                spec.name: file_name for file_name, specs in zip(names, shards, strict=True) for spec in specs
            },
        }
        (directory / SAFETENSORS_INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def fill_shards(
    directory: Path,
    shards: list[list[TensorSpec]],
    blocks: Iterator[tuple[str, torch.Tensor]],
    tensors: list[int] | None = None,
) -> None:
    """Write the bytes of the tensors at these positions in shard order (all by default), arriving
    as (name, block of rows) in that order, into the files create_shard_files made."""
    places = tensor_places(shards)
    file: ShardFile | None = None
    next_byte = None  # (file name, offset) the open file writes next
    try:
        for file_name, offset, spec in places if tensors is None else [places[i] for i in tensors]:
            if (file_name, offset) != next_byte:  # another file, or a gap another process fills
                if file is not None:
                    file.close()
                file = None
                file = ShardFile(directory / file_name, offset)
            _write_tensor(file, spec, blocks)
            next_byte = (file_name, offset + spec.nbytes)
    finally:
        if file is not None:
            file.close()


def write_shards(
    directory: Path,
    shards: list[list[TensorSpec]],
    blocks: Iterator[tuple[str, torch.Tensor]],
) -> None:
    """Write the tensors, arriving as (name, block of rows) in shard order; an index if >1 shard."""
    create_shard_files(directory, shards)
    fill_shards(directory, shards, blocks)

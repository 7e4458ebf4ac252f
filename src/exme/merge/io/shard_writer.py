"""Writing safetensors shards tensor by tensor.

No library streams safetensors writes (safetensors.torch.save_file needs every tensor of the file
in memory), so the header is written from the known names, dtypes and shapes first and each
tensor's bytes are appended as soon as it is computed: memory stays at one tensor, not one shard.
The bytes go through an aligned staging buffer written with O_DIRECT (see direct_io.py), where the
file system allows it; the last partial buffer, and everything on other file systems, buffered.
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
from exme.merge.io.reader import SAFETENSORS_DTYPES, tensor_nbytes

_DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
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
        return [SINGLE_FILE]
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
    """A new file written front to back: a staging buffer at a time with O_DIRECT, where the file
    system allows it, and the rest (a last partial buffer, or all of it) through the page cache."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 (held open across writes, closed by close())
        self._direct = direct_io.open_direct(path, writing=True)
        self._staging = direct_io.aligned_buffer(STAGING_BYTES) if self._direct is not None else None
        self._staged = 0
        self._flushed = 0  # bytes written directly, all before the staged ones

    def write(self, data: torch.Tensor) -> None:
        """Append the bytes of a flat uint8 tensor."""
        done = 0
        while done < len(data) and self._direct is not None:
            count = min(len(data) - done, STAGING_BYTES - self._staged)
            self._staging[self._staged : self._staged + count].copy_(data[done : done + count])
            self._staged += count
            done += count
            if self._staged == STAGING_BYTES:
                self._write_staged()
        if done < len(data):  # no direct writes here, or refused on the way
            self._file.write(data[done:].numpy())

    def _write_staged(self) -> None:
        staged = memoryview(self._staging.numpy())[: self._staged]
        start = 0
        try:
            while start < len(staged):
                written = os.pwrite(self._direct, staged[start:], self._flushed)
                start += written
                self._flushed += written
        except OSError as error:
            if error.errno != errno.EINVAL:  # alignment or direct I/O not supported here
                raise
            self._to_page_cache(staged[start:])
            return
        self._staged = 0

    def _to_page_cache(self, pending: memoryview) -> None:
        """From here on through the page cache, starting with the bytes not yet written."""
        os.close(self._direct)
        self._direct = None
        self._file.seek(self._flushed)
        self._file.write(pending)

    def __enter__(self) -> ShardFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Write what is left and close the file."""
        try:
            if self._direct is not None:
                self._to_page_cache(memoryview(self._staging.numpy())[: self._staged])
        finally:
            self._file.close()


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


def write_shards(
    directory: Path,
    shards: list[list[TensorSpec]],
    blocks: Iterator[tuple[str, torch.Tensor]],
) -> None:
    """Write the tensors, arriving as (name, block of rows) in shard order; an index if >1 shard."""
    names = shard_file_names(len(shards))
    for file_name, specs in zip(names, shards, strict=True):
        with ShardFile(directory / file_name) as file:
            file.write(torch.frombuffer(bytearray(_header(specs)), dtype=torch.uint8))
            for spec in specs:
                _write_tensor(file, spec, blocks)
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(s.nbytes for shard in shards for s in shard)},
            "weight_map": {
                spec.name: file_name for file_name, specs in zip(names, shards, strict=True) for spec in specs
            },
        }
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")

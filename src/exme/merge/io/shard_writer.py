"""Writing safetensors shards tensor by tensor.

No library streams safetensors writes (safetensors.torch.save_file needs every tensor of the file
in memory), so the header is written from the known names, dtypes and shapes first and each
tensor's bytes are appended as soon as it is computed: memory stays at one tensor, not one shard.
Format: 8-byte little-endian header length, JSON header padded with spaces to a multiple of 8,
then the tensors' bytes in header order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from exme.merge.io.reader import SAFETENSORS_DTYPES, tensor_nbytes

_DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


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


def _write_tensor(file: BinaryIO, spec: TensorSpec, blocks: Iterator[tuple[str, torch.Tensor]]) -> None:
    """Append the tensor's bytes, taking as many row blocks as it needs from `blocks`."""
    written = 0
    while True:  # every tensor, even an empty one, arrives as at least one block
        name, block = next(blocks)
        if name != spec.name or block.dtype != spec.dtype:
            raise RuntimeError(f"expected {spec.dtype} tensor {spec.name}, got {name}")
        if block.numel():
            file.write(block.contiguous().view(-1).view(torch.uint8).numpy())
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
        with open(directory / file_name, "wb") as file:
            file.write(_header(specs))
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

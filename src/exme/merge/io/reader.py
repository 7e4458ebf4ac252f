"""Reading tensors from safetensors files and PyTorch pickles, one tensor (or block of rows) at a
time (which files a model folder holds: model_folder.py).

Safetensors tensors are read with positioned reads into fresh buffers instead of
safetensors.safe_open's mmap: pages touched through a mapping stay in the process's resident set
until the file is closed (measured: reading a 1 GB file through safe_open raised RSS by 1 GB), so
memory would grow with model size; a plain read keeps it at the size of the tensors in flight.
Large tensors the page cache does not hold are read with O_DIRECT (see direct_io.py).
PyTorch pickles (`pytorch_model*.bin`) are opened with `torch.load(weights_only=True, mmap=True)`,
which runs no code from the file and reads tensors only when they are used (their pages then count
in the resident set: convert large ones to safetensors). A tensor carrying a LoRA patch (see
lora.py) is read with the adapter's update added.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from exme.errors import ExmeError
from exme.merge.io import direct_io

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip
_HEADER_LENGTH_BYTES = 8
_MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


def tensor_nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


def _widens(stored: torch.dtype, wide: torch.dtype | None) -> bool:
    return (
        wide is not None
        and stored.is_floating_point
        and wide.is_floating_point
        and wide.itemsize == 2 * stored.itemsize
    )


def _widened_in_place(buffer: torch.Tensor, narrow: torch.dtype, wide: torch.dtype) -> torch.Tensor:
    """The `narrow` values at the start of a uint8 buffer, as `wide` values (twice the size) filling
    it: converted from the last entries down, the upper half of those left at a time, whose wide
    bytes lie above its own narrow ones (end ≤ 2·start) and above every entry not yet converted.
    Halves rather than small chunks: each conversion is one torch call, and with several threads
    each call waits for the GIL on its way out."""
    count = len(buffer) // wide.itemsize
    source, target = buffer[: count * narrow.itemsize].view(narrow), buffer.view(wide)
    end = count
    while end > 1:
        start = (end + 1) // 2
        target[start:end].copy_(source[start:end])
        end = start
    if count:
        target[:1].copy_(source[:1].clone())  # the first entry's wide bytes overlap its narrow ones
    return target


@dataclass(frozen=True)
class LoraPatch:
    """A LoRA update of one weight: scale · up @ down, transposed when the weight is stored
    (in, out) (GPT-2's Conv1D, embeddings)."""

    down: TensorLocation  # lora_A: (rank, in)
    up: TensorLocation  # lora_B: (out, rank)
    scale: float
    transposed: bool


@dataclass(frozen=True)
class TensorLocation:
    """Where one tensor's bytes are: file, byte range (safetensors), dtype and shape."""

    file: Path
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int
    pickled: bool = False  # in a PyTorch pickle: read through torch.load's mapping, not by offsets
    lora: LoraPatch | None = None


def read_safetensors_header(file: Path) -> dict[str, TensorLocation]:
    """Parse and check a safetensors header, so truncated or corrupted files fail up front."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as handle:
            length_bytes = handle.read(_HEADER_LENGTH_BYTES)
            header_length = int.from_bytes(length_bytes, "little")
            if len(length_bytes) < _HEADER_LENGTH_BYTES or header_length > min(
                _MAX_HEADER_BYTES, size - _HEADER_LENGTH_BYTES
            ):
                raise ExmeError(f"{file}: not a safetensors file (bad header length)")
            header = json.loads(handle.read(header_length))
    except OSError as error:
        raise ExmeError(f"cannot read {file}: {error.strerror}") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExmeError(f"{file}: corrupted safetensors header ({error})") from error
    if not isinstance(header, dict):
        raise ExmeError(f"{file}: corrupted safetensors header")
    data_start = _HEADER_LENGTH_BYTES + header_length
    locations = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = SAFETENSORS_DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(offset) for offset in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ExmeError(f"{file}: corrupted header entry for tensor {name!r}") from None
        if end - begin != tensor_nbytes(shape, dtype) or begin < 0:
            raise ExmeError(f"{file}: tensor {name!r} has inconsistent data offsets")
        if data_start + end > size:
            raise ExmeError(
                f"{file}: truncated: tensor {name!r} ends at byte {data_start + end} "
                f"but the file has {size} bytes"
            )
        locations[name] = TensorLocation(file, name, dtype, shape, data_start + begin,
                                         data_start + end)  # fmt: skip
    return locations


def read_pickled_header(file: Path) -> dict[str, TensorLocation]:
    state = load_pickled(file)
    return {
        name: TensorLocation(file, name, tensor.dtype, tuple(tensor.shape), 0, tensor.nbytes, pickled=True)
        for name, tensor in state.items()
        if isinstance(tensor, torch.Tensor)
    }


def load_pickled(file: Path) -> dict[str, Any]:
    """A PyTorch pickle's tensors, mapped rather than read; only plain tensors are unpickled."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except OSError as error:
        raise ExmeError(f"cannot read {file}: {error.strerror}") from error
    except Exception as error:  # unpickling raises many types; all mean the file cannot be used
        raise ExmeError(
            f"{file}: cannot be read safely as PyTorch weights ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); convert it to safetensors"
        ) from None
    if not isinstance(state, dict):
        raise ExmeError(f"{file}: holds a {type(state).__name__}, not a dict of tensors")
    return state


class TensorReader:
    """Reads whole tensors or blocks of their rows, keeping each file open once; safe to share
    between threads (positional reads, and files opened under a lock)."""

    def __init__(self) -> None:
        self._descriptors: dict[Path, int] = {}
        self._direct_descriptors: dict[Path, int] = {}
        self._buffered_only: set[Path] = set()  # no O_DIRECT on their file system
        self._pickles: dict[Path, dict[str, Any]] = {}
        self._opening = threading.Lock()

    def read(
        self, location: TensorLocation, rows: range | None = None, widen_to: torch.dtype | None = None
    ) -> torch.Tensor:
        """The tensor (or block of rows) in its stored dtype; with `widen_to`, a floating-point dtype
        twice as wide as a stored floating-point one (float16 or bfloat16 → float32), in that
        dtype, converted within the buffer it was read into (half the memory of a second one)."""
        if location.pickled:
            tensor = self._read_pickled(location, rows)
        else:
            tensor = self._read_stored(
                location, rows, widen_to if _widens(location.dtype, widen_to) else None
            )
        return self._with_lora(tensor, location.lora, rows) if location.lora else tensor

    def _read_stored(
        self, location: TensorLocation, rows: range | None, widen_to: torch.dtype | None
    ) -> torch.Tensor:
        shape, offset = location.shape, location.start
        if rows is not None:
            offset += rows.start * (location.end - location.start) // shape[0]
            shape = (len(rows), *shape[1:])
        nbytes = tensor_nbytes(shape, location.dtype)
        room = 2 * nbytes if widen_to else nbytes
        data = None
        if nbytes >= direct_io.DIRECT_MIN_BYTES and offset % location.dtype.itemsize == 0:
            data = self._read_direct(location, offset, nbytes, room)
        if data is None:
            data = torch.empty(room, dtype=torch.uint8)
            if nbytes:
                self._read_into(location, memoryview(data[:nbytes].numpy()), offset)
        if widen_to is not None and data.data_ptr() % widen_to.itemsize == 0:
            return _widened_in_place(data, location.dtype, widen_to).view(shape)
        return data[:nbytes].view(location.dtype).view(shape)

    def _read_direct(
        self, location: TensorLocation, offset: int, nbytes: int, room: int
    ) -> torch.Tensor | None:
        """The bytes read with O_DIRECT (at the start of `room` bytes), or None where the page cache
        holds them or the file cannot be read so (the file is then read through the page cache from
        now on)."""
        file = location.file
        with self._opening:
            if file in self._buffered_only:
                return None
            descriptor = self._direct_descriptors.get(file)
            if descriptor is None:
                descriptor = direct_io.open_direct(file)
                if descriptor is None:
                    self._buffered_only.add(file)
                    return None
                self._direct_descriptors[file] = descriptor
        if direct_io.is_cached(descriptor, offset, nbytes):
            return None
        try:
            data = direct_io.read_direct(descriptor, offset, nbytes, room)
        except EOFError:
            raise ExmeError(f"{file}: truncated while reading {location.name!r}") from None
        if data is None:
            self._buffered_only.add(file)
        return data

    def _read_pickled(self, location: TensorLocation, rows: range | None) -> torch.Tensor:
        with self._opening:
            if location.file not in self._pickles:
                self._pickles[location.file] = load_pickled(location.file)
        tensor = self._pickles[location.file][location.name]
        if rows is not None:
            tensor = tensor[rows.start : rows.stop]
        return tensor.clone(memory_format=torch.contiguous_format)  # off the mapping

    def _with_lora(self, weight: torch.Tensor, patch: LoraPatch, rows: range | None) -> torch.Tensor:
        """weight + scale · up @ down, in fp32, rounded once to the weight's dtype."""
        down, up = self.read(patch.down).float(), self.read(patch.up).float()
        if patch.transposed:  # rows of the weight are columns of up @ down
            delta = (down if rows is None else down[:, rows.start : rows.stop]).T @ up.T
        else:
            delta = (up if rows is None else up[rows.start : rows.stop]) @ down
        return (weight.float() + delta * patch.scale).to(weight.dtype)

    def _read_into(self, location: TensorLocation, buffer: memoryview, offset: int) -> None:
        with self._opening:
            descriptor = self._descriptors.get(location.file)
            if descriptor is None:
                descriptor = self._descriptors[location.file] = os.open(location.file, os.O_RDONLY)
                # Tensors are read mostly in file order: ask the kernel for aggressive readahead.
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        done = 0
        while done < len(buffer):  # one pread returns at most ~2 GB
            count = os.preadv(descriptor, [buffer[done:]], offset + done)
            if count == 0:
                raise ExmeError(f"{location.file}: truncated while reading {location.name!r}")
            done += count

    def close(self) -> None:
        for descriptor in [*self._descriptors.values(), *self._direct_descriptors.values()]:
            os.close(descriptor)
        self._descriptors.clear()
        self._direct_descriptors.clear()
        self._buffered_only.clear()
        self._pickles.clear()

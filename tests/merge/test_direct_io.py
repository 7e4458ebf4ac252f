"""Large tensors are read with O_DIRECT unless the page cache holds them: the same bytes either way,
at any offset, with a clear error for a truncated file and the page cache where O_DIRECT is refused.
Output shards are written with O_DIRECT a staging buffer at a time, with the same fallback."""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from exme.errors import ExmeError
from exme.merge.execute import build_state_dict, merge_to_dir
from exme.merge.io import direct_io, shard_writer
from exme.merge.io.model_folder import ModelFolder
from exme.merge.io.reader import TensorReader
from exme.merge.recipe import recipe_from_dict

_BIG = direct_io.DIRECT_MIN_BYTES


def _evict(file: Path) -> None:
    descriptor = os.open(file, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        for _ in range(10):  # pages still being read ahead are dropped once read
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            if not direct_io.is_cached(descriptor, 0, file.stat().st_size):
                return
            time.sleep(0.05)
        pytest.skip("this file system keeps its files in the page cache (tmpfs)")
    finally:
        os.close(descriptor)


def _direct(file: Path) -> int:
    descriptor = direct_io.open_direct(file)
    if descriptor is None:
        pytest.skip("no O_DIRECT on this file system")
    return descriptor


@pytest.fixture
def random_file(tmp_path: Path) -> tuple[Path, bytes]:
    content = os.urandom(3 * _BIG + 777)  # ends inside a block
    file = tmp_path / "data.bin"
    file.write_bytes(content)
    _evict(file)
    return file, content


@pytest.mark.parametrize(
    ("offset", "nbytes"), [(0, _BIG), (4099, _BIG + 5), (3 * _BIG + 777 - _BIG - 3, _BIG + 3), (8190, 2)]
)
def test_direct_reads_return_the_bytes_at_any_offset(random_file, offset, nbytes):
    file, content = random_file
    descriptor = _direct(file)
    try:
        data = direct_io.read_direct(descriptor, offset, nbytes)
    finally:
        os.close(descriptor)
    assert bytes(data.numpy()) == content[offset : offset + nbytes]


def test_reading_past_the_end_of_the_file_is_an_error(random_file):
    file, content = random_file
    descriptor = _direct(file)
    try:
        with pytest.raises(EOFError):
            direct_io.read_direct(descriptor, len(content) - 10, 4096 * 3)
    finally:
        os.close(descriptor)


def test_is_cached_tells_ranges_in_the_page_cache_from_evicted_ones(random_file):
    file, _ = random_file
    descriptor = _direct(file)
    try:
        assert not direct_io.is_cached(descriptor, 4099, _BIG)
        with open(file, "rb") as handle:
            handle.read(2 * _BIG)
        assert direct_io.is_cached(descriptor, 4099, _BIG)
        _evict(file)
        assert not direct_io.is_cached(descriptor, 4099, _BIG)
    finally:
        os.close(descriptor)


@pytest.fixture
def model(tmp_path: Path) -> tuple[ModelFolder, dict[str, torch.Tensor]]:
    """A model whose large tensor starts at an offset no block size divides, and its tensors (not
    loaded from the file: a mapping of its pages would keep them in the page cache)."""
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "a.small": torch.randn(3, generator=generator).bfloat16(),
        "b.large": torch.randn(_BIG // 2 + 5, generator=generator).bfloat16(),
    }
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    folder = ModelFolder(tmp_path)
    assert folder.tensors["b.large"].start % direct_io.DIRECT_ALIGNMENT
    return folder, tensors


def _spy_on_direct_reads(monkeypatch) -> list[int]:
    calls = []
    read_direct = direct_io.read_direct

    def counted(descriptor: int, offset: int, nbytes: int, room: int = 0):
        calls.append(nbytes)
        return read_direct(descriptor, offset, nbytes, room)

    monkeypatch.setattr(direct_io, "read_direct", counted)
    return calls


def test_large_tensors_are_read_directly_unless_the_page_cache_holds_them(model, monkeypatch):
    model, expected = model
    file = model.path / "model.safetensors"
    if direct_io.open_direct(file) is None:
        pytest.skip("no O_DIRECT on this file system")
    _evict(file)
    direct_reads = _spy_on_direct_reads(monkeypatch)
    reader = TensorReader()
    try:
        for name, location in model.tensors.items():
            assert torch.equal(reader.read(location), expected[name])
        assert direct_reads == [model.tensors["b.large"].end - model.tensors["b.large"].start]
        rows = reader.read(model.tensors["b.large"], range(0, 1))  # a block of rows: too small
        assert torch.equal(rows, expected["b.large"][:1])
        file.read_bytes()  # now in the page cache: copied from it
        assert torch.equal(reader.read(model.tensors["b.large"]), expected["b.large"])
        assert len(direct_reads) == 1
    finally:
        reader.close()


def test_a_file_system_refusing_direct_reads_is_read_through_the_page_cache(model, monkeypatch):
    """Where O_DIRECT cannot be opened (or a read is refused with EINVAL, which a file system here
    never does: stood in for by read_direct's None), the file is read through the page cache."""
    model, tensors = model
    expected, location = tensors["b.large"], model.tensors["b.large"]
    for refusal in ("open", "read"):
        _evict(location.file)
        if refusal == "open":
            monkeypatch.setattr(direct_io, "open_direct", lambda file: None)
        else:
            monkeypatch.setattr(direct_io, "read_direct", lambda descriptor, offset, nbytes, room: None)
        reader = TensorReader()
        try:
            assert torch.equal(reader.read(location), expected)
            direct_reads = _spy_on_direct_reads(monkeypatch)
            _evict(location.file)
            assert torch.equal(reader.read(location), expected)
            assert direct_reads == []  # not tried again
        finally:
            reader.close()
            monkeypatch.undo()


def test_a_file_truncated_after_its_header_was_read_names_the_tensor(model):
    location = model[0].tensors["b.large"]
    if direct_io.open_direct(location.file) is None:
        pytest.skip("no O_DIRECT on this file system")
    os.truncate(location.file, location.end - 100)
    _evict(location.file)
    reader = TensorReader()
    try:
        with pytest.raises(ExmeError, match="truncated while reading 'b.large'"):
            reader.read(location)
    finally:
        reader.close()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cached", [False, True])
def test_half_precision_tensors_widened_in_their_read_buffer_equal_a_conversion(tmp_path, dtype, cached):
    """Odd lengths, and starts no block size divides, through O_DIRECT and the page cache. A direct
    read lands at the file offset's place within a block: 2 bytes from a multiple of 4, it cannot
    be viewed as float32 and is handed out narrow (converted later, as without widening)."""
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "a": torch.randn(1, generator=generator).to(dtype),
        "b": torch.randn(_BIG // 2 + 7, generator=generator).to(dtype),  # starts 2 bytes past a's end
        "c": torch.randn(2, generator=generator).to(dtype),
        "d": torch.randn(_BIG + 1, generator=generator).to(dtype),
    }
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    folder = ModelFolder(tmp_path)
    starts = {name: location.start % 4 for name, location in folder.tensors.items()}
    assert (starts["b"], starts["d"]) == (2, 0)
    if not cached:
        _evict(tmp_path / "model.safetensors")
    reader = TensorReader()
    try:
        for name, location in folder.tensors.items():
            widened = reader.read(location, widen_to=torch.float32)
            read_directly = not cached and location.end - location.start >= _BIG
            assert widened.dtype == (dtype if read_directly and starts[name] == 2 else torch.float32)
            assert torch.equal(widened.float(), tensors[name].float())
            if len(tensors[name]) > 3:
                assert torch.equal(
                    reader.read(location, range(1, 3), torch.float32), tensors[name][1:3].float()
                )
    finally:
        reader.close()


# Output shards: written a staging buffer at a time with O_DIRECT, else through the page cache.
_STAGING = 2 * direct_io.DIRECT_ALIGNMENT


def _pieces() -> list[torch.Tensor]:
    """Writes that start and end inside staging buffers, fill one exactly and span several."""
    sizes = [13, _STAGING - 13, 5, 3 * _STAGING + 1, _STAGING, 700]
    return [torch.randint(0, 256, (size,), dtype=torch.uint8) for size in sizes]


def _write(path: Path, pieces: list[torch.Tensor]) -> None:
    path.touch()
    with shard_writer.ShardFile(path) as file:
        for piece in pieces:
            file.write(piece)


def _is_direct(descriptor: int) -> bool:
    return bool(fcntl.fcntl(descriptor, fcntl.F_GETFL) & os.O_DIRECT)


def _spy_on_writes(monkeypatch) -> list[tuple[int, int]]:
    """(offset, length) of each direct write."""
    calls = []
    pwrite = os.pwrite

    def counted(descriptor, data, offset):
        if _is_direct(descriptor):
            calls.append((offset, len(data)))
        return pwrite(descriptor, data, offset)

    monkeypatch.setattr(shard_writer.os, "pwrite", counted)
    return calls


def _skip_without_direct_writes(folder: Path) -> None:
    probe = folder / "probe"
    probe.touch()
    descriptor = direct_io.open_direct(probe, writing=True)
    if descriptor is None:
        pytest.skip("no O_DIRECT on this file system")
    os.close(descriptor)


def test_shard_files_are_written_directly_a_staging_buffer_at_a_time(tmp_path, monkeypatch):
    _skip_without_direct_writes(tmp_path)
    monkeypatch.setattr(shard_writer, "STAGING_BYTES", _STAGING)
    pieces = _pieces()
    direct_writes = _spy_on_writes(monkeypatch)
    _write(tmp_path / "shard.bin", pieces)
    expected = b"".join(piece.numpy().tobytes() for piece in pieces)
    assert (tmp_path / "shard.bin").read_bytes() == expected
    full = len(expected) // _STAGING
    assert direct_writes == [(index * _STAGING, _STAGING) for index in range(full)]


def test_ranges_of_one_file_filled_apart_write_directly_only_whole_aligned_pages(tmp_path, monkeypatch):
    """Writers filling neighbouring ranges from unaligned offsets (as merge processes do): the same
    bytes; the pages two ranges share go through the page cache."""
    _skip_without_direct_writes(tmp_path)
    monkeypatch.setattr(shard_writer, "STAGING_BYTES", _STAGING)
    direct_writes = _spy_on_writes(monkeypatch)
    expected = torch.randint(0, 256, (6 * _STAGING + 123,), dtype=torch.uint8)
    bounds = [0, 77, 77 + _STAGING + 5, 4 * _STAGING, len(expected)]
    path = tmp_path / "shard.bin"
    with open(path, "wb") as file:
        file.truncate(len(expected))
    for start, stop in reversed(list(itertools.pairwise(bounds))):
        with shard_writer.ShardFile(path, start) as file:
            file.write(expected[start : start + 3])
            file.write(expected[start + 3 : stop])
    assert path.read_bytes() == expected.numpy().tobytes()
    assert direct_writes and all(
        offset % direct_io.DIRECT_ALIGNMENT == 0 and any(a <= offset and offset + n <= b for a, b in
                                                         itertools.pairwise(bounds))
        for offset, n in direct_writes
    )  # fmt: skip


@pytest.mark.parametrize("refusal", ["open", "first write", "second write", "short write"])
def test_shard_files_refused_direct_writes_go_through_the_page_cache(tmp_path, monkeypatch, refusal):
    """Refused at open (no O_DIRECT here), or a write refused with EINVAL (stood in for here): the
    same bytes, the rest through the page cache; a short direct write is continued."""
    monkeypatch.setattr(shard_writer, "STAGING_BYTES", _STAGING)
    pwrite, calls = os.pwrite, []

    def refusing(descriptor, data, offset):
        if not _is_direct(descriptor):
            return pwrite(descriptor, data, offset)
        calls.append(offset)
        if refusal == "short write" and len(calls) == 1:
            return pwrite(descriptor, data[: direct_io.DIRECT_ALIGNMENT], offset)
        if len(calls) == {"first write": 1, "second write": 2}.get(refusal):
            raise OSError(errno.EINVAL, "refused")
        return pwrite(descriptor, data, offset)

    if refusal == "open":
        monkeypatch.setattr(direct_io, "open_direct", lambda file, writing=False: None)
    else:
        _skip_without_direct_writes(tmp_path)
    monkeypatch.setattr(shard_writer.os, "pwrite", refusing)
    pieces = _pieces()
    _write(tmp_path / "shard.bin", pieces)
    expected = b"".join(piece.numpy().tobytes() for piece in pieces)
    assert (tmp_path / "shard.bin").read_bytes() == expected
    full = len(expected) // _STAGING
    assert len(calls) == {"open": 0, "first write": 1, "second write": 2, "short write": full + 1}[refusal]


def test_merged_shards_written_directly_load_as_the_merge_in_memory(family, tmp_path, monkeypatch):
    monkeypatch.setattr(shard_writer, "STAGING_BYTES", _STAGING)
    recipe = recipe_from_dict(
        {"merge_method": "linear", "models": [{"model": str(m), "parameters": {"weight": 1.0}}
                                              for m in (family.ft_a, family.ft_b)]}
    )  # fmt: skip
    out = merge_to_dir(recipe, tmp_path / "m", shard_size="30KB")
    written = {
        name: tensor for shard in out.glob("model-*.safetensors") for name, tensor in load_file(shard).items()
    }
    expected = build_state_dict(recipe, device="cpu")
    assert written.keys() == expected.keys()
    assert all(torch.equal(written[name], expected[name]) for name in expected)

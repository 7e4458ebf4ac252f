"""What makes a folder a Hugging Face model exme reads: its config.json and its weight files (one
file or shards with their index, safetensors or PyTorch pickles), and where each tensor is stored.
The merge writes its output folder in the same layout (shard_writer.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from exme.errors import ExmeError
from exme.files import CONFIG_FILE
from exme.merge.io.lora import with_lora
from exme.merge.io.reader import TensorLocation, read_pickled_header, read_safetensors_header

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILE = "pytorch_model.bin"
PICKLE_INDEX_FILE = "pytorch_model.bin.index.json"
# Weight files in the order they are looked for: (index of shards, single file, header reader).
_WEIGHT_FORMATS = (
    (SAFETENSORS_INDEX_FILE, SAFETENSORS_FILE, read_safetensors_header),
    (PICKLE_INDEX_FILE, PICKLE_FILE, read_pickled_header),
)


def holds_model(folder: Path) -> bool:
    """Whether a folder holds a model (as mergekit-multi checks): a config.json, and weight files in
    a format exme reads."""
    return (folder / CONFIG_FILE).is_file() and any(
        (folder / name).is_file() for formats in _WEIGHT_FORMATS for name in formats[:2]
    )


@dataclass(frozen=True)
class ModelFolder:
    """A model folder: its config.json and where each of its tensors is stored.

    `name` is the model as the recipe names it (a path, a Hub id, MODEL+LORA): messages use it.
    `adapter` is a LoRA adapter folder whose updates are added to the weights as they are read.
    """

    path: Path
    name: str = ""
    adapter: Path | None = None

    def __str__(self) -> str:
        return self.name or str(self.path)

    @property
    def tokenizer_folder(self) -> Path:
        """Where its tokenizer files are (a recipe standing for a folder has another)."""
        return self.path

    @cached_property
    def config(self) -> dict[str, Any]:
        config_file = self.path / CONFIG_FILE
        try:
            return json.loads(config_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ExmeError(f"model {self}: no {CONFIG_FILE} in {self.path}") from None
        except (OSError, json.JSONDecodeError) as error:
            raise ExmeError(f"model {self}: cannot read {CONFIG_FILE} ({error})") from error

    @cached_property
    def tensors(self) -> dict[str, TensorLocation]:
        """Tensor name → location, in storage order (shards in order, offsets ascending)."""
        if not self.path.is_dir():
            raise ExmeError(f"model folder {self.path} does not exist")
        tensors = self._stored_tensors()
        if self.adapter is not None:
            tensors = with_lora(tensors, self.adapter, str(self))
        return tensors

    def _stored_tensors(self) -> dict[str, TensorLocation]:
        for index_name, single_name, read_header in _WEIGHT_FORMATS:
            if (self.path / index_name).exists():
                return self._sharded_tensors(self.path / index_name, read_header)
            if (self.path / single_name).exists():
                locations = read_header(self.path / single_name)
                return dict(sorted(locations.items(), key=lambda item: item[1].start))
        raise ExmeError(
            f"model {self}: no weights in {self.path} ({SAFETENSORS_FILE}, {PICKLE_FILE} or their index JSON)"
        )

    def _sharded_tensors(self, index_file: Path, read_header) -> dict[str, TensorLocation]:
        try:
            weight_map: dict[str, str] = json.loads(index_file.read_text())["weight_map"]
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
            raise ExmeError(f"{index_file}: not a valid weights index ({error})") from error
        locations: dict[str, TensorLocation] = {}
        for shard in sorted(set(weight_map.values())):
            shard_file = self.path / shard
            if not shard_file.exists():
                raise ExmeError(f"{index_file} names shard {shard}, which does not exist")
            in_shard = read_header(shard_file)
            for name, location in sorted(in_shard.items(), key=lambda item: item[1].start):
                if weight_map.get(name) == shard:
                    locations[name] = location
        if missing := sorted(set(weight_map) - set(locations)):
            raise ExmeError(f"{index_file}: tensor {missing[0]!r} is not in its shard")
        return locations

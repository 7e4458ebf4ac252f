"""Model references as mergekit writes them: a local folder, a Hub id `org/name[@revision]`, either
followed by `+ADAPTER` (a LoRA adapter, itself a folder or Hub id, merged into the model's weights).

Hub ids are resolved through huggingface_hub: downloaded when the Hub may be reached, read from the
local cache when `HF_HUB_OFFLINE` is set (the error then says how to download the model).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from exme.errors import ExmeError
from exme.merge.io.reader import ModelFolder

# What a merge reads from a Hub repository: configs and indexes, weights, tokenizer files.
_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "vocab.*"]
_HUB_PICKLED_WEIGHTS = ["pytorch_model*.bin", "adapter_model.bin"]
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_CACHED_SNAPSHOT = re.compile(r"models--([\w.-]+)--([\w.-]+)$")


@dataclass(frozen=True)
class ModelPath:
    path: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{self.path}@{self.revision}" if self.revision else self.path


@dataclass(frozen=True)
class ModelReference:
    """A model as the recipe names it: the model, and the LoRA adapter to merge into it."""

    model: ModelPath
    lora: ModelPath | None = None


def _model_path(text: str, reference: str) -> ModelPath:
    if not text:
        raise ExmeError(f"model reference {reference!r} has an empty part")
    if Path(text).exists() or "@" not in text:
        return ModelPath(text)
    path, _, revision = text.partition("@")
    if "@" in revision or not path or not revision:
        raise ExmeError(f"model reference {reference!r}: expected PATH or ORG/NAME@REVISION")
    return ModelPath(path, revision)


def parse_reference(text: str) -> ModelReference:
    """`MODEL[@REVISION][+ADAPTER[@REVISION]]`; an existing local path is taken as it is, even with
    '+' or '@' in its name."""
    if Path(text).exists() or "+" not in text:
        return ModelReference(_model_path(text, text))
    model, _, adapter = text.partition("+")
    if "+" in adapter:
        raise ExmeError(f"model reference {text!r}: more than one '+' (expected MODEL+LORA)")
    return ModelReference(_model_path(model, text), _model_path(adapter, text))


def _offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "").upper()
    return constants.HF_HUB_OFFLINE or value in {"1", "ON", "YES", "TRUE"}


def _download_command(model: ModelPath) -> str:
    revision = f" --revision {model.revision}" if model.revision else ""
    return f"`hf download {model.path}{revision}` (or `huggingface-cli download {model.path}{revision}`)"


def local_folder(model: ModelPath, reference: str) -> Path:
    """The folder holding the model's files: the path itself, or the Hub snapshot of the id."""
    local = Path(model.path).expanduser()
    if local.is_dir() and model.revision is None:
        return local
    if not _HUB_ID.fullmatch(model.path):
        raise ExmeError(f"model {reference}: {model.path} is neither a folder nor a Hub id ORG/NAME")
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    offline = _offline()
    try:
        patterns = _HUB_FILES + (_HUB_PICKLED_WEIGHTS if offline or not _has_safetensors(model) else [])
        return Path(
            huggingface_hub.snapshot_download(
                model.path, revision=model.revision, allow_patterns=patterns, local_files_only=offline
            )
        )
    except LocalEntryNotFoundError:
        where = "the Hub is off (HF_HUB_OFFLINE)" if offline else "the Hub cannot be reached"
        raise ExmeError(
            f"model {reference}: {model} is not a local folder, and as a Hub id it is not in the local "
            f"Hugging Face cache and {where}; download it first with {_download_command(model)}"
        ) from None
    except (HfHubHTTPError, HFValidationError) as error:
        raise ExmeError(f"model {reference}: cannot get {model} from the Hub ({error})") from None


def _has_safetensors(model: ModelPath) -> bool:
    """Whether the repository has safetensors weights: then its pickled copies are not downloaded."""
    import huggingface_hub

    files = huggingface_hub.list_repo_files(model.path, revision=model.revision)
    return any(name.endswith(".safetensors") for name in files)


def hub_id(model: ModelPath, folder: Path) -> str | None:
    """The Hub id a model came from, for the model card's provenance: as written in the recipe, or
    read from a local path inside a Hugging Face cache; None for other local folders."""
    if not Path(model.path).expanduser().exists():
        return model.path
    for parent in folder.resolve().parents:
        if match := _CACHED_SNAPSHOT.fullmatch(parent.name):
            return f"{match.group(1)}/{match.group(2)}"
    return None


def open_model(text: str) -> ModelFolder:
    """The model folder a recipe's reference names, downloading or finding it in the Hub cache."""
    reference = parse_reference(text)
    folder = local_folder(reference.model, text)
    adapter = local_folder(reference.lora, text) if reference.lora else None
    return ModelFolder(folder, text, adapter)

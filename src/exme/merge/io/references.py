"""Model references as mergekit writes them: a local folder, a Hub id `org/name[@revision]`, either
followed by `+ADAPTER` (a LoRA adapter, itself a folder or Hub id, merged into the model's weights).

Hub ids are resolved through huggingface_hub: downloaded when the Hub may be reached, read from the
local cache when `HF_HUB_OFFLINE` is set (the error then says how to download the model).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from exme.errors import ExmeError
from exme.files import staged_dir
from exme.merge.io.model_folder import ModelFolder
from exme.merge.io.model_ids import HUB_ID, ModelPath, parse_reference

# What a merge reads from a Hub repository: configs and indexes, weights, tokenizer files.
_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "vocab.*"]
_HUB_PICKLED_WEIGHTS = ["pytorch_model*.bin", "adapter_model.bin"]
_CACHED_SNAPSHOT = re.compile(r"models--([\w.-]+)--([\w.-]+)$")


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
    if not HUB_ID.fullmatch(model.path):
        raise ExmeError(f"model {reference}: {model.path} is neither a folder nor a Hub id ORG/NAME")
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    offline = _offline()

    def snapshot(patterns: list[str]) -> Path:
        # Where the Hub cannot be reached, snapshot_download itself falls back to the local cache.
        return Path(
            huggingface_hub.snapshot_download(
                model.path, revision=model.revision, allow_patterns=patterns, local_files_only=offline
            )
        )

    try:
        folder = snapshot(_HUB_FILES)
        if not any(folder.glob("*.safetensors")):  # pickled weights only: fetch those too
            folder = snapshot(_HUB_FILES + _HUB_PICKLED_WEIGHTS)
        return folder
    except LocalEntryNotFoundError:
        where = "the Hub is off (HF_HUB_OFFLINE)" if offline else "the Hub cannot be reached"
        raise ExmeError(
            f"model {reference}: {model} is not a local folder, and as a Hub id it is not in the local "
            f"Hugging Face cache and {where}; download it first with {_download_command(model)}"
        ) from None
    except (HfHubHTTPError, HFValidationError) as error:
        raise ExmeError(f"model {reference}: cannot get {model} from the Hub ({error})") from None


def hub_id(model: ModelPath, folder: Path) -> str | None:
    """The Hub id a model came from, for the model card's provenance: as written in the recipe, or
    read from a local path inside a Hugging Face cache; None for other local folders."""
    if not Path(model.path).expanduser().exists():
        return model.path
    for parent in folder.resolve().parents:
        if match := _CACHED_SNAPSHOT.fullmatch(parent.name):
            return f"{match.group(1)}/{match.group(2)}"
    return None


def link_hub_model(model: ModelPath, out_dir: str | os.PathLike, reference: str) -> Path:
    """A folder out_dir of links to the files of a Hub model's snapshot in the local cache
    (downloaded first where the Hub may be reached): the model under a path of the run's own, with
    no second copy of its weights."""
    snapshot = local_folder(model, reference)
    with staged_dir(out_dir) as staging:
        for source in sorted(snapshot.rglob("*")):
            if source.is_file():
                link = staging / source.relative_to(snapshot)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(source.resolve())
    return Path(out_dir)


def open_model(text: str) -> ModelFolder:
    """The model folder a recipe's reference names, downloading or finding it in the Hub cache."""
    reference = parse_reference(text)
    folder = local_folder(reference.model, text)
    adapter = local_folder(reference.lora, text) if reference.lora else None
    return ModelFolder(folder, text, adapter)

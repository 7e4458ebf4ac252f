"""The grammar of model references as mergekit writes them: a local folder or a Hub id
`org/name[@revision]`, either followed by `+ADAPTER` (a LoRA adapter). Imports nothing heavy: the
pipeline's config check reads Hub ids while Snakemake builds the DAG."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from exme.errors import ExmeError

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


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


def hub_model(text: str) -> ModelPath | None:
    """The Hub id `ORG/NAME[@REVISION]` that `text` names, None where it is a local path or no id."""
    if Path(text).expanduser().exists():
        return None
    model = _model_path(text, text)
    return model if HUB_ID.fullmatch(model.path) else None

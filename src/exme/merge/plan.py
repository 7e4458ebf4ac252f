"""Planning a merge before any tensor is read: inputs checked, every output tensor resolved.

All checks that need only headers and configs happen here (architectures, vocabulary sizes,
missing tensors, shapes, parameters), so bad input fails before anything is computed or written.

A model may also be another recipe file (a "recipe of recipes"): it is planned the same way, here,
and its tensors are computed when the outer merge reads them, so a chain of merges writes no
model-sized file. Its paths are read like any model path (relative to the working directory, as
mergekit does), not relative to the recipe file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from exme.errors import ExmeError
from exme.merge.io.reader import ModelFolder, TensorLocation
from exme.merge.io.shard_writer import TensorSpec
from exme.merge.methods.registry import BasePolicy, MergeMethod, Parameter, Scope
from exme.merge.recipe import Recipe, load_recipe

# When a model ties its output embedding to its input embedding, the output one may be absent;
# like mergekit, such a model contributes its input embedding instead.
TIED_FALLBACKS = {"lm_head.weight": "model.embed_tokens.weight"}
_LAYER_INDEX = re.compile(r"\.layers\.(\d+)\.")
_COMPATIBILITY_KEYS = ("architectures", "model_type", "vocab_size")
# A model path with one of these suffixes names a recipe file, any other a model folder.
RECIPE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class TensorJob:
    """One output tensor: where its inputs are and the parameter values that apply to it."""

    output: TensorSpec
    base: TensorSource | None
    inputs: tuple[TensorSource, ...]
    parameters: Mapping[str, Any]
    seed: int

    @property
    def locations(self) -> tuple[TensorSource, ...]:
        return (self.base, *self.inputs) if self.base else self.inputs


@dataclass(frozen=True)
class MergePlan:
    recipe: Recipe
    method: MergeMethod
    base: ModelSource | None
    models: tuple[ModelSource, ...]
    input_dtype: torch.dtype | None  # mergekit's `dtype`: inputs are rounded to it first
    output_dtype: torch.dtype
    jobs: tuple[TensorJob, ...]
    tokenizer_folder: Path  # where the merged model's tokenizer files are

    @property
    def config_source(self) -> ModelSource:
        return self.base or self.models[0]

    @property
    def config_folder(self) -> Path:
        """The model folder whose config.json the merged model takes."""
        source = self.config_source
        return source.plan.config_folder if isinstance(source, NestedModel) else source.path


@dataclass(frozen=True, eq=False)
class NestedTensor:
    """A tensor of a nested recipe's merge, computed when it is read. Compared by identity: a
    recipe named in several places of a recipe tree is one model, computed once per block."""

    model: NestedModel
    job: TensorJob

    @property
    def shape(self) -> tuple[int, ...]:
        return self.job.output.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.job.output.dtype


@dataclass(frozen=True, eq=False)
class NestedModel:
    """A recipe file in place of a model folder: the config and tensors its merge would write."""

    path: Path
    plan: MergePlan

    @property
    def config(self) -> dict[str, Any]:
        return self.plan.config_source.config

    @cached_property
    def tensors(self) -> dict[str, NestedTensor]:
        return {job.output.name: NestedTensor(self, job) for job in self.plan.jobs}


TensorSource = TensorLocation | NestedTensor
ModelSource = ModelFolder | NestedModel


class ModelOpener:
    """Opens model paths, folders or recipe files, each once: a recipe named in several places of
    a recipe tree becomes one NestedModel, and a recipe that names itself is an error."""

    def __init__(self) -> None:
        self._opened: dict[Path, ModelSource] = {}
        self._planning: list[Path] = []  # the recipe files being planned, outermost first

    def open(self, model: str) -> ModelSource:
        path = Path(model)
        key = path.resolve()
        if key in self._planning:
            cycle = [*self._planning[self._planning.index(key) :], key]
            raise ExmeError(f"recipe {path} includes itself: {' -> '.join(map(str, cycle))}")
        if key not in self._opened:
            self._opened[key] = self._nested(path, key) if names_recipe(model) else ModelFolder(path)
        return self._opened[key]

    def _nested(self, path: Path, key: Path) -> NestedModel:
        if not path.is_file():
            raise ExmeError(f"recipe file {path} does not exist")
        try:
            recipe = load_recipe(path)
        except ExmeError as error:
            raise ExmeError(f"recipe {path}: {error}") from None
        self._planning.append(key)
        try:
            return NestedModel(path, _plan(recipe, self))
        finally:
            self._planning.pop()


def names_recipe(model: str | Path) -> bool:
    return Path(model).suffix in RECIPE_SUFFIXES


def _check_compatible(folders: Sequence[ModelSource]) -> None:
    reference = folders[0]
    for folder in folders[1:]:
        for key in _COMPATIBILITY_KEYS:
            if folder.config.get(key) != reference.config.get(key):
                raise ExmeError(
                    f"models differ in {key}: {reference.path} has "
                    f"{reference.config.get(key)!r}, {folder.path} has {folder.config.get(key)!r}"
                )


def _tensor_names(folders: Sequence[ModelSource]) -> list[str]:
    names = dict.fromkeys(name for folder in folders for name in folder.tensors)
    for name in names:
        lacking = [f for f in folders if name not in f.tensors]
        fallback = TIED_FALLBACKS.get(name)
        for folder in lacking:
            if fallback is None or fallback not in folder.tensors:
                holder = next(f for f in folders if name in f.tensors)
                raise ExmeError(
                    f"tensor {name!r} is missing from model {folder.path} (present in {holder.path})"
                )
    return list(names)


def _location(folder: ModelSource, name: str) -> TensorSource:
    return folder.tensors.get(name) or folder.tensors[TIED_FALLBACKS[name]]


def _layer_position(tensor: str, layer_count: int | None) -> float | None:
    """mergekit's `t` for gradients: layer i of L is at i/(L-1); tensors outside layers at 0."""
    match = _LAYER_INDEX.search(tensor)
    if match is None:
        return 0.0
    if layer_count is None:
        return None
    return int(match.group(1)) / (layer_count - 1) if layer_count > 1 else 1.0


def _evaluate(value: Any, tensor: str, position: float | None) -> Any:
    if not isinstance(value, list):
        return value
    if value and isinstance(value[0], dict):
        for condition in value:
            pattern = condition.get("filter")
            if pattern in (None, "*") or pattern in tensor:
                return _evaluate(condition["value"], tensor, position)
        return None
    if position is None:
        raise ExmeError(f"a gradient for tensor {tensor} needs num_hidden_layers in config.json")
    if any(isinstance(v, bool) for v in value):  # booleans are picked, not interpolated
        return value[int(position * (len(value) - 1))]
    scaled = position * (len(value) - 1)
    lower = int(scaled)
    upper = min(len(value) - 1, lower + 1)
    return (1 - (scaled - lower)) * value[lower] + (scaled - lower) * value[upper]


def _resolve(
    parameter: Parameter,
    sources: Sequence[Mapping[str, Any]],
    tensor: str,
    position: float | None,
    model: Path | None,
) -> Any:
    for source in sources:
        if parameter.name in source:
            value = _evaluate(source[parameter.name], tensor, position)
            if value is not None:
                return float(value) if parameter.type is float else value
    if parameter.required:
        where = f" of model {model}" if model else ""
        raise ExmeError(f"missing required parameter {parameter.name!r}{where} for tensor {tensor}")
    return parameter.default


def _parameters(recipe: Recipe, method: MergeMethod, tensor: str, layer_count: int | None) -> dict[str, Any]:
    position = _layer_position(tensor, layer_count)
    values: dict[str, Any] = {}
    for parameter in method.parameters:
        if parameter.scope is Scope.GLOBAL:
            values[parameter.name] = _resolve(parameter, [recipe.parameters], tensor, position, None)
        else:
            values[parameter.name] = [
                _resolve(parameter, [e.parameters, recipe.parameters], tensor, position, Path(e.model))
                for e in recipe.non_base_models
            ]
    return values


def tensor_seed(seed: int, tensor: str) -> int:
    """A per-tensor seed independent of the order tensors are computed in."""
    digest = hashlib.sha256(f"{seed}\0{tensor}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def aligned_tensors(folders: Sequence[ModelSource]) -> list[tuple[str, list[TensorSource]]]:
    """Each tensor name with its source in every model, in the first model's order, once the models
    are checked to be of one architecture with the same tensors and shapes, all floating-point."""
    _check_compatible(folders)
    aligned = []
    for name in _tensor_names(folders):
        locations = [_location(folder, name) for folder in folders]
        for folder, location in zip(folders, locations, strict=True):
            if location.shape != locations[0].shape:
                raise ExmeError(
                    f"tensor {name!r} has shape {list(location.shape)} in model {folder.path} "
                    f"but {list(locations[0].shape)} in {folders[0].path}"
                )
            if not location.dtype.is_floating_point:
                raise ExmeError(f"tensor {name!r} of model {folder.path} is not floating-point")
        aligned.append((name, locations))
    if not aligned:
        raise ExmeError(f"model {folders[0].path} has no tensors")
    return aligned


def plan_merge(recipe: Recipe) -> MergePlan:
    return _plan(recipe, ModelOpener())


def _plan(recipe: Recipe, opener: ModelOpener) -> MergePlan:
    method = recipe.method
    uses_base = method.base is BasePolicy.REQUIRED
    base = opener.open(recipe.base_model) if uses_base else None
    models = tuple(opener.open(entry.model) for entry in recipe.non_base_models)
    folders = (base, *models) if base else models
    input_dtype = getattr(torch, recipe.dtype) if recipe.dtype else None
    layer_count = folders[0].config.get("num_hidden_layers")
    out_name = recipe.out_dtype or recipe.dtype
    jobs = []
    for name, locations in aligned_tensors(folders):
        output_dtype = getattr(torch, out_name) if out_name else locations[0].dtype
        jobs.append(
            TensorJob(
                output=TensorSpec(name, locations[0].shape, output_dtype),
                base=locations[0] if base else None,
                inputs=tuple(locations[1:] if base else locations),
                parameters=_parameters(recipe, method, name, layer_count),
                seed=tensor_seed(recipe.random_seed or 0, name),
            )
        )
    tokenizer = recipe.tokenizer_model
    tokenizer_folder = (
        opener.open(tokenizer).plan.tokenizer_folder if names_recipe(tokenizer) else Path(tokenizer)
    )
    output_dtype = jobs[0].output.dtype
    return MergePlan(recipe, method, base, models, input_dtype, output_dtype, tuple(jobs), tokenizer_folder)

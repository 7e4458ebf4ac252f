"""Planning a merge before any tensor is read: inputs checked, every output tensor resolved.

All checks that need only headers and configs happen here (architectures, vocabularies, missing
tensors, shapes, layer ranges, parameters), so bad input fails before anything is computed or
written. With `slices`, output layer k of a slice comes from layer FIRST + k of each source and is
renamed to its place in the output; the tensors outside the layers come from the first slice's
sources (embeddings) and the last slice's (final norm, output head), as in mergekit.

A model may also be another recipe file (a "recipe of recipes"): it is planned the same way, here,
and its tensors are computed when the outer merge reads them, so a chain of merges writes no
model-sized file. Its paths are read like any model path (relative to the working directory, as
mergekit does), not relative to the recipe file. It stands for the folder its merge would write:
the config that folder would have, and its tokenizer. A nested recipe may be a model of a `models`
recipe, a source of a slice, a base or a tokenizer source; one that re-indexes the vocabulary
(tokenizer union, tokens, padding) is refused, since its tokenizer exists only once written.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from exme.errors import ExmeError
from exme.merge.io.model_folder import ModelFolder
from exme.merge.io.reader import TensorLocation
from exme.merge.io.references import open_model
from exme.merge.io.shard_writer import TensorSpec
from exme.merge.methods.registry import MergeMethod, Parameter, Scope
from exme.merge.modules import module_layout, modules_of
from exme.merge.multi import includes_itself, load_recipe, unused_stages
from exme.merge.recipe import InputGroup, Recipe
from exme.merge.vocabulary import OutputVocabulary, VocabularyMap, is_vocabulary_tensor, output_vocabulary

# When a model ties its output embedding to its input embedding, the output one may be absent;
# like mergekit, such a model contributes its input embedding instead.
TIED_FALLBACKS = {
    "lm_head.weight": ("model.embed_tokens.weight", "transformer.wte.weight"),
    "cls.predictions.decoder.weight": ("bert.embeddings.word_embeddings.weight",),
}
# A layer's tensors: PREFIX.INDEX.SUFFIX, e.g. model.layers.3.mlp.up_proj.weight, transformer.h.3.attn;
# the outermost stack (T5's encoder.block.3.layer.0.SelfAttention is in layer 3).
_LAYER = re.compile(r"(?P<prefix>(?:.*?\.)?(?:layers|layer|h|blocks|block)\.)(?P<index>\d+)\.(?P<suffix>.+)")
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
_COMPATIBILITY_KEYS = ("architectures", "model_type")
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
    vocabulary: VocabularyMap | None = None  # re-indexing of the inputs' rows to the output tokens

    @property
    def locations(self) -> tuple[TensorSource, ...]:
        return (self.base, *self.inputs) if self.base else self.inputs

    @property
    def merges_values(self) -> bool:
        """False for integer and boolean buffers, which are copied when the inputs agree."""
        return self.output.dtype.is_floating_point


@dataclass(frozen=True)
class MergePlan:
    recipe: Recipe
    method: MergeMethod
    folders: Mapping[str, ModelSource]  # every model read, by its name in the recipe
    base: ModelSource | None
    models: tuple[ModelSource, ...]  # the other models read, in the recipe's order
    config_source: ModelSource
    input_dtype: torch.dtype | None  # mergekit's `dtype`: inputs are rounded to it first
    output_dtype: torch.dtype
    jobs: tuple[TensorJob, ...]
    layer_counts: Mapping[str, int]  # config keys (dotted: nested) of the layers slices stack
    vocabulary: OutputVocabulary | None
    tokenizer_folder: Path  # the folder whose tokenizer files the output takes

    @property
    def config_folder(self) -> Path:
        """The model folder whose config.json the merged model's config starts from (`config`)."""
        source = self.config_source
        return source.plan.config_folder if isinstance(source, NestedModel) else source.path

    @cached_property
    def config(self) -> dict[str, Any]:
        """The merged model's config.json: the config source's, with what the merge changes."""
        config = dict(self.config_source.config)
        dtype_name = str(self.output_dtype).removeprefix("torch.")
        config["dtype"] = dtype_name
        if "torch_dtype" in config:
            config["torch_dtype"] = dtype_name
        for key, layers in self.layer_counts.items():
            *parents, last = key.split(".")
            section = config
            for parent in parents:  # copied: the source's config stays as read
                nested = dict(section[parent])
                section[parent] = nested
                section = nested
            section[last] = layers
        if self.vocabulary is not None:
            config["vocab_size"] = self.vocabulary.rows
        if "lm_head.weight" in {job.output.name for job in self.jobs}:
            # Some inputs had a separate output embedding, so the merged one is not tied any more.
            config["tie_word_embeddings"] = False
        return config


@dataclass(frozen=True, eq=False)
class NestedTensor:
    """A tensor of a nested recipe's merge, computed when it is read. Compared by identity: a
    recipe named in several places of a recipe tree is one model, computed once per block."""

    model: NestedModel
    job: TensorJob

    @property
    def name(self) -> str:
        return self.job.output.name

    @property
    def shape(self) -> tuple[int, ...]:
        return self.job.output.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.job.output.dtype


@dataclass(frozen=True, eq=False)
class NestedModel:
    """A recipe file or a multi-document recipe's named merge in place of a model folder: the config,
    tensors and tokenizer of the folder its merge would write. `origin` says which (`recipe FILE`,
    `merge 'NAME'`), `name` is how the outer recipe names it."""

    origin: str
    name: str
    plan: MergePlan
    adapter: None = None  # no LoRA adapter: a folder's only

    def __str__(self) -> str:
        return self.name

    @property
    def config(self) -> dict[str, Any]:
        return self.plan.config

    @property
    def tokenizer_folder(self) -> Path:
        return self.plan.tokenizer_folder

    @cached_property
    def tensors(self) -> dict[str, NestedTensor]:
        return {job.output.name: NestedTensor(self, job) for job in self.plan.jobs}


TensorSource = TensorLocation | NestedTensor
ModelSource = ModelFolder | NestedModel


def names_recipe(model: str | Path) -> bool:
    return Path(model).suffix in RECIPE_SUFFIXES


class ModelOpener:
    """Opens the models recipes name, folders, Hub ids, recipe files or a multi-document recipe's
    named merges, each once: a recipe named in several places of a recipe tree becomes one
    NestedModel, and a recipe that names itself is an error. Nested recipes are planned with the
    same `allow_crimes`."""

    def __init__(self, allow_crimes: bool = False) -> None:
        self.allow_crimes = allow_crimes
        self._opened: dict[Any, ModelSource] = {}
        self._planning: dict[Any, str] = {}  # the nested recipes being planned (key: name), outermost first

    def open(self, model: str, stages: Mapping[str, Recipe] | None = None) -> ModelSource:
        """The model a recipe names; `stages` are the named merges that recipe may name."""
        stage = (stages or {}).get(model)
        if stage is not None and stage.folder is not None:  # written already: a folder by that name
            key = ("written", stage.folder)
            if key not in self._opened:
                self._opened[key] = replace(open_model(stage.folder), name=model)
            return self._opened[key]
        if stage is not None:  # keyed by the merge itself: a nested file may reuse a name
            key, origin = ("merge", id(stage)), f"merge {model!r}"
        elif names_recipe(model):
            key, origin = Path(model).resolve(), f"recipe {model}"
        else:
            if model not in self._opened:
                self._opened[model] = open_model(model)
            return self._opened[model]
        if key in self._planning:
            planning = list(self._planning)
            cycle = [self._planning[planned] for planned in planning[planning.index(key) :]]
            raise includes_itself(origin, [*cycle, model])
        if key not in self._opened:
            recipe = stage if stage is not None else self._recipe_file(Path(model))
            self._opened[key] = self._nested(model, key, origin, recipe)
        return self._opened[key]

    @staticmethod
    def _recipe_file(path: Path) -> Recipe:
        if not path.is_file():
            raise ExmeError(f"recipe file {path} does not exist")
        try:
            recipe = load_recipe(path)
            _check_stages_used(recipe)
        except ExmeError as error:
            raise ExmeError(f"recipe {path}: {error}") from None
        return recipe

    def _nested(self, model: str, key: Any, origin: str, recipe: Recipe) -> NestedModel:
        self._planning[key] = model
        try:
            plan = _plan(recipe, self)
        finally:
            del self._planning[key]
        if plan.vocabulary is not None:
            raise ExmeError(
                f"{origin} re-indexes the vocabulary (tokenizer union, tokens or pad_to_multiple_of), "
                "which a nested merge cannot do: its tokenizer exists only once written; merge it into "
                "a folder first and name that folder (for a named merge: exme merge --intermediate-dir)"
            )
        return NestedModel(origin, model, plan)


def layer_count(folder: ModelSource) -> int | None:
    return next((folder.config[key] for key in LAYER_COUNT_KEYS if key in folder.config), None)


def _config_value(config: Mapping[str, Any], key: str) -> Any:
    """A config's value at a dotted key (nested configs), None where it has none."""
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _before_layers(name: str) -> bool:
    """Tensors the first layer reads (embeddings; a vision tower's patch embedding and norm before
    its layers), as opposed to those after the last layer."""
    return any(
        "embed" in part or part in ("wte", "wpe") or part.startswith("patch_") or part.endswith("_pre")
        for part in name.split(".")
    )


def _check_compatible(folders: Sequence[ModelSource], allow_crimes: bool, vocabularies_merged: bool) -> None:
    keys = () if allow_crimes else _COMPATIBILITY_KEYS
    keys += () if vocabularies_merged else ("vocab_size",)
    reference = folders[0]
    for folder in folders[1:]:
        for key in keys:
            if folder.config.get(key) != reference.config.get(key):
                hint = " (pass --allow-crimes to merge them anyway)" if key in _COMPATIBILITY_KEYS else ""
                raise ExmeError(
                    f"models differ in {key}: {reference} has {reference.config.get(key)!r}, "
                    f"{folder} has {folder.config.get(key)!r}{hint}"
                )


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
        raise ExmeError(f"a gradient for tensor {tensor} needs the number of layers in config.json")
    if any(isinstance(v, bool) for v in value):  # booleans are picked, not interpolated
        return value[int(position * (len(value) - 1))]
    scaled = position * (len(value) - 1)
    lower = int(scaled)
    upper = min(len(value) - 1, lower + 1)
    return (1 - (scaled - lower)) * value[lower] + (scaled - lower) * value[upper]


def _resolve(parameter: Parameter, settings: Sequence[Mapping[str, Any]], tensor: str,
             position: float | None, model: str | None) -> Any:  # fmt: skip
    for source in settings:
        if parameter.name in source:
            value = _evaluate(source[parameter.name], tensor, position)
            if value is not None:
                return float(value) if parameter.type is float else value
    if parameter.required:
        where = f" of model {model}" if model else ""
        raise ExmeError(f"missing required parameter {parameter.name!r}{where} for tensor {tensor}")
    return parameter.default


def _position(layer: int, layers: int | None) -> float | None:
    """mergekit's `t` for gradients: layer i of L is at i/(L-1), a single layer at 1."""
    if layers is None:
        return None
    return layer / (layers - 1) if layers > 1 else 1.0


def tensor_seed(seed: int, tensor: str) -> int:
    """A per-tensor seed independent of the order tensors are computed in."""
    digest = hashlib.sha256(f"{seed}\0{tensor}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _location(folder: ModelSource, name: str, present_in: ModelSource) -> TensorSource:
    location = folder.tensors.get(name) or next(
        (folder.tensors[tied] for tied in TIED_FALLBACKS.get(name, ()) if tied in folder.tensors), None
    )
    if location is None:
        raise ExmeError(f"tensor {name!r} is missing from model {folder} (present in {present_in})")
    return location


def aligned_tensors(folders: Sequence[ModelSource]) -> list[tuple[str, list[TensorSource]]]:
    """Each tensor name with its source in every model, in the first model's order, once the models
    are checked to be of one architecture and vocabulary size with the same tensors and shapes, all
    floating-point (for measures over several models, as kinship)."""
    _check_compatible(folders, allow_crimes=False, vocabularies_merged=False)
    aligned = []
    for name in dict.fromkeys(name for folder in folders for name in folder.tensors):
        holder = next(folder for folder in folders if name in folder.tensors)
        locations = [_location(folder, name, holder) for folder in folders]
        for folder, location in zip(folders, locations, strict=True):
            if location.shape != locations[0].shape:
                raise ExmeError(
                    f"tensor {name!r} has shape {list(location.shape)} in model {folder} "
                    f"but {list(locations[0].shape)} in {folders[0]}"
                )
            if not location.dtype.is_floating_point:
                raise ExmeError(f"tensor {name!r} of model {folder} is not floating-point")
        aligned.append((name, locations))
    if not aligned:
        raise ExmeError(f"model {folders[0]} has no tensors")
    return aligned


class _Planner:
    def __init__(self, recipe: Recipe, opener: ModelOpener):
        self.recipe = recipe
        self.method = recipe.method
        self.folders = {name: opener.open(name, recipe.stages) for name in recipe.referenced_models}
        self.config_source = self.folders[recipe.config_model]
        settings = recipe.tokenizer_settings
        self.vocabulary = None
        self.tokenizer_folder = self.config_source.tokenizer_folder
        if settings is not None:
            source = None
            if settings.source not in ("base", "union"):
                source = self.folders.get(settings.source) or opener.open(settings.source, recipe.stages)
                self.tokenizer_folder = source.tokenizer_folder
            self.vocabulary = output_vocabulary(
                settings, self.config_source, list(self.folders.values()), source
            )
        _check_compatible(list(self.folders.values()), opener.allow_crimes, self.vocabulary is not None)
        self.out_dtype = recipe.out_dtype or recipe.dtype
        self.jobs: list[TensorJob] = []
        self.layer_counts: dict[str, int] = {}  # config keys the merge sets: the layers slices stack
        self._layers: dict[tuple[str, str | None], dict[int, list[tuple[str, str]]]] = {}
        self._module_of: dict[str, str] = {}  # tensor name -> its module, in a recipe of modules

    def _in_module(self, name: str, module: str | None) -> bool:
        return module is None or self._module_of[name] == module

    def _parameters(
        self, group: InputGroup, output: str, inputs: Sequence[str], position: float | None
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for parameter in self.method.parameters:
            if parameter.scope is Scope.GLOBAL:
                values[parameter.name] = _resolve(parameter, group.shared, output, position, None)
            else:  # as mergekit, a model's settings are matched against its own tensor's name
                values[parameter.name] = [
                    _resolve(parameter, [entry.parameters, *group.shared], name, position, entry.model)
                    for entry, name in zip(group.models, inputs[1:] if group.base else inputs, strict=True)
                ]
        if self.method.check_model:
            for index, entry in enumerate(group.models):
                own = {
                    p.name: values[p.name][index]
                    for p in self.method.parameters
                    if p.scope is Scope.PER_MODEL
                }
                if problem := self.method.check_model(own):
                    raise ExmeError(f"{problem} for model {entry.model!r} (tensor {output})")
        return values

    def add_job(
        self, group: InputGroup, output: str, inputs: Sequence[str], position: float | None, in_layer: bool
    ) -> None:
        """One output tensor from the tensors `inputs` names in the group's models (base first)."""
        folders = [self.folders[model] for model in group.inputs]
        holder = next((f for f, name in zip(folders, inputs, strict=True) if name in f.tensors), folders[0])
        locations = [_location(f, name, holder) for f, name in zip(folders, inputs, strict=True)]
        vocabulary = None
        if self.vocabulary and is_vocabulary_tensor(locations[0].shape, folders[0], in_layer):
            vocabulary = self.vocabulary.map_for(group.inputs, output)
        if len({location.dtype.is_floating_point for location in locations}) > 1:
            raise ExmeError(f"tensor {output!r} is floating-point in some models and not in others")
        merges_values = locations[0].dtype.is_floating_point
        for folder, location in zip(folders, locations, strict=True):
            same = (
                location.shape[1:] == locations[0].shape[1:]
                if vocabulary
                else location.shape == locations[0].shape
            )
            if not same:
                raise ExmeError(
                    f"tensor {location.name!r} has shape {list(location.shape)} in model {folder} "
                    f"but {list(locations[0].shape)} in {folders[0]}"
                )
        shape = (vocabulary.rows, *locations[0].shape[1:]) if vocabulary else locations[0].shape
        dtype = getattr(torch, self.out_dtype) if self.out_dtype and merges_values else locations[0].dtype
        has_base = group.base is not None
        self.jobs.append(
            TensorJob(
                output=TensorSpec(output, shape, dtype),
                base=locations[0] if has_base else None,
                inputs=tuple(locations[1:] if has_base else locations),
                parameters=self._parameters(group, output, inputs, position) if merges_values else {},
                seed=tensor_seed(self.recipe.random_seed or 0, output),
                vocabulary=vocabulary,
            )
        )

    def plan_models(self, group: InputGroup) -> None:
        folders = [self.folders[model] for model in group.inputs]
        module = group.module
        layers = layer_count(folders[0]) if module is None else len(self._layer_tensors(folders[0], module))
        names = dict.fromkeys(name for folder in folders for name in folder.tensors)
        for name in (name for name in names if self._in_module(name, module)):
            match = _LAYER.fullmatch(name)
            position = _position(int(match["index"]), layers) if match else 0.0
            self.add_job(group, name, [name] * len(folders), position, match is not None)

    def plan_slices(self, groups: Sequence[InputGroup]) -> int:
        """The slices' jobs (of one module's slices); returns how many layers they stack."""
        for name in self._outside_layers(groups[0], before=True):
            self.add_job(groups[0], name, [name] * len(groups[0].inputs), 0.0, False)
        output_layer = 0
        for group in groups:
            folders = [self.folders[model] for model in group.inputs]
            self._check_ranges(group, folders)
            length = group.layer_ranges[0][1] - group.layer_ranges[0][0]
            for offset in range(length):
                position = _position(offset, length)
                layer_tensors = [
                    self._layer_tensors(folder, group.module)[first + offset]
                    for folder, (first, _end) in zip(folders, group.layer_ranges, strict=True)
                ]
                for prefix, suffix in dict.fromkeys(key for tensors in layer_tensors for key in tensors):
                    inputs = [f"{prefix}{first + offset}.{suffix}" for first, _end in group.layer_ranges]
                    self.add_job(group, f"{prefix}{output_layer}.{suffix}", inputs, position, True)
                output_layer += 1
        for name in self._outside_layers(groups[-1], before=False):
            self.add_job(groups[-1], name, [name] * len(groups[-1].inputs), 0.0, False)
        return output_layer

    def plan_modules(self) -> None:
        """Each module from its own models or slices (mergekit's `modules`)."""
        source = self.config_source
        layout = module_layout(source.config, str(source))
        names = dict.fromkeys(name for folder in self.folders.values() for name in folder.tensors)
        self._module_of = modules_of(names, layout, str(source.config["model_type"]))
        given = [module.name for module in self.recipe.modules]
        if unknown := [name for name in given if name not in layout]:
            raise ExmeError(f"'modules': model_type {source.config['model_type']!r} has no module "
                            f"{unknown[0]!r} (its modules: {', '.join(layout)})")  # fmt: skip
        if missing := [module for module in dict.fromkeys(self._module_of.values()) if module not in given]:
            example = next(name for name, module in self._module_of.items() if module == missing[0])
            raise ExmeError(
                f"'modules' has no entry for module {missing[0]!r}, which holds tensors such as "
                f"{example!r}: give it its models (or slices)"
            )
        for module in self.recipe.modules:
            groups = [group for group in self.recipe.groups if group.module == module.name]
            if not module.slices:
                self.plan_models(groups[0])
                continue
            layers = self.plan_slices(groups)
            for key in layout[module.name].layer_count_keys:
                if _config_value(source.config, key) is not None:
                    self.layer_counts[key] = layers

    def _outside_layers(self, group: InputGroup, before: bool) -> list[str]:
        names = dict.fromkeys(
            name
            for model in group.inputs
            for name in self.folders[model].tensors
            if not _LAYER.fullmatch(name) and self._in_module(name, group.module)
        )
        return [name for name in names if _before_layers(name) == before]

    def _layer_tensors(self, folder: ModelSource, module: str | None) -> dict[int, list[tuple[str, str]]]:
        """Layer index -> (prefix, suffix) of each of its tensors (of a module's)."""
        if (folder.name, module) in self._layers:
            return self._layers[folder.name, module]
        layers: dict[int, list[tuple[str, str]]] = {}
        for name in folder.tensors:
            if (match := _LAYER.fullmatch(name)) and self._in_module(name, module):
                layers.setdefault(int(match["index"]), []).append((match["prefix"], match["suffix"]))
        prefixes = {prefix for tensors in layers.values() for prefix, _suffix in tensors}
        if len(prefixes) > 1:
            raise ExmeError(
                f"model {folder} has several stacks of layers ({', '.join(sorted(prefixes))}); "
                "slices need a model with one, or 'modules' (for those exme knows the modules of)"
            )
        self._layers[folder.name, module] = layers
        return layers

    def _check_ranges(self, group: InputGroup, folders: Sequence[ModelSource]) -> None:
        for folder, (first, end) in zip(folders, group.layer_ranges, strict=True):
            layers = self._layer_tensors(folder, group.module)
            available = layer_count(folder) if group.module is None else len(layers)
            if available is None:
                raise ExmeError(f"model {folder}: config.json gives no number of layers, needed for slices")
            if end > available or not set(range(first, end)) <= set(layers):
                raise ExmeError(
                    f"{group.where}: layer_range [{first}, {end}] of model {folder} is outside its "
                    f"{available} layers"
                )


def plan_merge(recipe: Recipe, *, allow_crimes: bool = False) -> MergePlan:
    """The plan of a recipe, and of the recipes it names, recursively. `allow_crimes` merges models
    whose architectures differ (mergekit's option)."""
    _check_stages_used(recipe)
    return _plan(recipe, ModelOpener(allow_crimes))


def _check_stages_used(recipe: Recipe) -> None:
    """A named merge is computed only as the merge using it reads it: one that none uses, and that
    is not written to a folder already, would be lost."""
    if unread := [name for name in unused_stages(recipe) if recipe.stages[name].folder is None]:
        raise ExmeError(
            f"the final merge does not use {', '.join(map(repr, unread))}; exme merge writes only the "
            "final merge unless given an intermediate folder (--intermediate-dir), to which it "
            "writes every named merge, as mergekit-multi does"
        )


def _plan(recipe: Recipe, opener: ModelOpener) -> MergePlan:
    planner = _Planner(recipe, opener)
    if recipe.modules:
        planner.plan_modules()
    elif recipe.slices:
        config = planner.config_source.config
        key = next((key for key in LAYER_COUNT_KEYS if key in config), LAYER_COUNT_KEYS[0])
        planner.layer_counts[key] = planner.plan_slices(recipe.groups)
    else:
        planner.plan_models(recipe.groups[0])
    if not planner.jobs:
        raise ExmeError(f"model {planner.config_source} has no tensors")
    floating = [job.output.dtype for job in planner.jobs if job.merges_values]
    base = planner.folders.get(recipe.groups[0].base) if recipe.groups[0].base else None
    return MergePlan(
        recipe=recipe,
        method=planner.method,
        folders=planner.folders,
        base=base,
        models=tuple(folder for folder in planner.folders.values() if folder is not base),
        config_source=planner.config_source,
        input_dtype=getattr(torch, recipe.dtype) if recipe.dtype else None,
        output_dtype=floating[0] if floating else planner.jobs[0].output.dtype,
        jobs=tuple(planner.jobs),
        layer_counts=planner.layer_counts,
        vocabulary=planner.vocabulary,
        tokenizer_folder=planner.tokenizer_folder,
    )

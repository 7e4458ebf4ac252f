"""Merge recipes in mergekit's YAML format (the `models:` form), validated against the methods.

Keys: merge_method, base_model, models ([{model: PATH, parameters: {...}}]), parameters (global),
dtype (input/arithmetic precision, as in mergekit), out_dtype, tokenizer_source (a model path or
"base"; `tokenizer: {source: ...}` is accepted as a synonym), random_seed (exme's own key: seeds
the DARE drop masks; default 0) and metadata (exme's own key: a free mapping describing the merged
model, e.g. for a pipeline's score table; the engine carries it along and ignores it). A parameter
value is, as in mergekit, a scalar, a gradient list interpolated over layer depth (`[0, 0.5, 1]`),
or a list of `{filter: SUBSTRING, value: SCALAR_OR_GRADIENT}` (the first entry whose filter is in the tensor
name wins; no filter or "*" matches all).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from exme.errors import ExmeError
from exme.files import write_text
from exme.merge.methods.registry import BasePolicy, MergeMethod, Parameter, Scope, get_method

DTYPES = ("float32", "float16", "bfloat16", "float64")
_KEYS = {
    "merge_method", "base_model", "models", "parameters", "dtype", "out_dtype",
    "tokenizer_source", "tokenizer", "random_seed", "metadata",
}  # fmt: skip
_MODEL_KEYS = {"model", "parameters"}

ParameterValue = bool | int | float | list[dict[str, Any]]


@dataclass(frozen=True)
class ModelEntry:
    model: str
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    merge_method: str
    models: tuple[ModelEntry, ...]
    base_model: str | None = None
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None
    random_seed: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> MergeMethod:
        return get_method(self.merge_method)

    @property
    def non_base_models(self) -> tuple[ModelEntry, ...]:
        if self.method.base is BasePolicy.IGNORED:
            return self.models
        return tuple(entry for entry in self.models if entry.model != self.base_model)

    @property
    def tokenizer_model(self) -> str:
        if self.tokenizer_source in (None, "base"):
            return self.base_model or self.models[0].model
        return self.tokenizer_source

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"merge_method": self.merge_method}
        if self.base_model is not None:
            result["base_model"] = self.base_model
        result["models"] = [
            {"model": e.model, **({"parameters": dict(e.parameters)} if e.parameters else {})}
            for e in self.models
        ]
        optional = {
            "parameters": dict(self.parameters) or None,
            "dtype": self.dtype,
            "out_dtype": self.out_dtype,
            "tokenizer_source": self.tokenizer_source,
            "random_seed": self.random_seed,
            "metadata": dict(self.metadata) or None,
        }
        result.update({key: value for key, value in optional.items() if value is not None})
        return result


def _check_value(parameter: Parameter, value: Any, where: str) -> None:
    def check_scalar(scalar: Any) -> None:
        if parameter.type is bool:
            ok = isinstance(scalar, bool)
        else:
            ok = isinstance(scalar, int | float) and not isinstance(scalar, bool)
        if not ok:
            raise ExmeError(
                f"parameter {parameter.name!r} {where} must be a {parameter.type.__name__}, got {scalar!r}"
            )

    def check_setting(setting: Any, in_filter: bool) -> None:
        if not isinstance(setting, list):
            check_scalar(setting)
        elif setting and not any(isinstance(item, dict | list) for item in setting):
            for scalar in setting:  # a gradient over layer depth
                check_scalar(scalar)
        elif setting and not in_filter and all(isinstance(item, dict) for item in setting):
            for item in setting:
                if set(item) - {"filter", "value"} or "value" not in item:
                    raise ExmeError(
                        f"parameter {parameter.name!r} {where}: each list entry must be "
                        f"{{filter: SUBSTRING, value: VALUE}}, got {item!r}"
                    )
                check_setting(item["value"], in_filter=True)
        else:
            raise ExmeError(
                f"parameter {parameter.name!r} {where}: expected a scalar, a gradient list of "
                f"scalars or a list of {{filter, value}} entries, got {setting!r}"
            )

    check_setting(value, in_filter=False)


def _check_parameters(
    method: MergeMethod, parameters: Mapping[str, Any], where: str, allowed: set[Scope]
) -> None:
    for name, value in parameters.items():
        parameter = method.parameter(name)
        if parameter is None:
            known = ", ".join(p.name for p in method.parameters) or "none"
            raise ExmeError(
                f"unknown parameter {name!r} {where} for merge_method {method.name!r} "
                f"(its parameters: {known})"
            )
        if parameter.scope not in allowed:
            raise ExmeError(
                f"parameter {name!r} of {method.name!r} is global: set it under the top-level "
                f"'parameters', not {where}"
            )
        _check_value(parameter, value, where)


def _dtype(value: Any, key: str) -> str | None:
    if value is not None and value not in DTYPES:
        raise ExmeError(f"{key} must be one of {', '.join(DTYPES)}, got {value!r}")
    return value


def _tokenizer_source(data: Mapping[str, Any]) -> str | None:
    if "tokenizer" not in data:
        return data.get("tokenizer_source")
    if "tokenizer_source" in data:
        raise ExmeError("give either 'tokenizer' or 'tokenizer_source', not both")
    tokenizer = data["tokenizer"]
    if not isinstance(tokenizer, dict) or set(tokenizer) != {"source"}:
        raise ExmeError(f"only 'tokenizer: {{source: MODEL}}' is supported, got {tokenizer!r}")
    return tokenizer["source"]


def _model_entry(item: Any) -> ModelEntry:
    if not isinstance(item, dict) or "model" not in item:
        raise ExmeError(f"each entry of 'models' needs a 'model' key, got {item!r}")
    if unknown := set(item) - _MODEL_KEYS:
        raise ExmeError(f"unknown key(s) {sorted(unknown)} in models entry {item['model']!r}")
    return ModelEntry(str(item["model"]), dict(item.get("parameters") or {}))


def recipe_from_dict(data: Mapping[str, Any]) -> Recipe:
    if not isinstance(data, Mapping):
        raise ExmeError(f"a recipe must be a mapping, got {type(data).__name__}")
    if unknown := set(data) - _KEYS:
        raise ExmeError(f"unknown recipe key(s): {', '.join(sorted(unknown))}")
    if "merge_method" not in data:
        raise ExmeError("the recipe has no 'merge_method'")
    method = get_method(data["merge_method"])
    if not isinstance(data.get("models"), list) or not data["models"]:
        raise ExmeError("the recipe needs a non-empty 'models' list")
    seed = data.get("random_seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ExmeError(f"random_seed must be an integer, got {seed!r}")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise ExmeError(f"metadata must be a mapping, got {metadata!r}")
    recipe = Recipe(
        merge_method=method.name,
        models=tuple(_model_entry(item) for item in data["models"]),
        base_model=None if data.get("base_model") is None else str(data["base_model"]),
        parameters=dict(data.get("parameters") or {}),
        dtype=_dtype(data.get("dtype"), "dtype"),
        out_dtype=_dtype(data.get("out_dtype"), "out_dtype"),
        tokenizer_source=_tokenizer_source(data),
        random_seed=seed,
        metadata=dict(metadata),
    )
    _validate(recipe, method)
    return recipe


def _validate(recipe: Recipe, method: MergeMethod) -> None:
    models = [entry.model for entry in recipe.models]
    if len(set(models)) != len(models):
        raise ExmeError(f"a model is listed twice in 'models': {models}")
    if method.base is BasePolicy.REQUIRED and recipe.base_model is None:
        raise ExmeError(f"merge_method {method.name!r} requires a base_model")
    if method.base is BasePolicy.IGNORED and recipe.base_model not in (None, *models):
        raise ExmeError(
            f"merge_method {method.name!r} uses no base model; list {recipe.base_model!r} "
            "under 'models' with a weight, or remove base_model"
        )
    non_base = recipe.non_base_models
    count = len(non_base)
    if count < method.min_models or (method.max_models and count > method.max_models):
        expected = (
            f"exactly {method.min_models}"
            if method.min_models == method.max_models
            else f"at least {method.min_models}"
        )
        raise ExmeError(f"merge_method {method.name!r} takes {expected} non-base model(s), got {count}")
    if recipe.tokenizer_source == "union":
        raise ExmeError("tokenizer source 'union' is not supported; name one model or 'base'")
    _check_parameters(method, recipe.parameters, "in the global parameters", set(Scope))
    for entry in recipe.models:
        where = f"of model {entry.model!r}"
        if entry in non_base:
            _check_parameters(method, entry.parameters, where, {Scope.PER_MODEL})
        elif entry.parameters:
            raise ExmeError(f"the base model {entry.model!r} takes no parameters here")
    for parameter in method.parameters:
        if not parameter.required:
            continue
        given_globally = parameter.name in recipe.parameters
        for entry in non_base if parameter.scope is Scope.PER_MODEL else ():
            if not given_globally and parameter.name not in entry.parameters:
                raise ExmeError(
                    f"missing required parameter {parameter.name!r} for model {entry.model!r} "
                    f"(merge_method {method.name!r})"
                )
        if parameter.scope is Scope.GLOBAL and not given_globally:
            raise ExmeError(f"missing required parameter {parameter.name!r} (merge_method {method.name!r})")


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    try:
        with open(path, encoding="utf-8") as file:
            data = yaml.safe_load(file)
    except OSError as error:
        raise ExmeError(f"cannot read recipe {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ExmeError(f"recipe {path} is not valid YAML: {error}") from error
    return recipe_from_dict(data)


def write_recipe(recipe: Recipe, path: str | os.PathLike[str]) -> None:
    """Write atomically: a reader never sees a half-written recipe."""
    write_text(path, yaml.safe_dump(recipe.to_dict(), sort_keys=False))

"""Merge recipes in mergekit's YAML format, validated against the methods before anything is read.

Keys (mergekit's): merge_method; exactly one of `models` ([{model, parameters}]), `slices`
([{sources: [{model, layer_range: [FIRST, END), parameters}], base_model, parameters}]) or `modules`
({MODULE: {models or slices, parameters}}: a merge per module of a multimodal model); base_model;
parameters (global); dtype (input/arithmetic precision); out_dtype; tokenizer_source (a model,
"base" or "union") or tokenizer ({source, tokens, pad_to_multiple_of}); chat_template (a name, "auto"
or a Jinja template); name (a merge's name in a multi-document recipe, mergekit-multi's form, where
later merges use earlier ones by name: see multi.py, which reads recipe files). exme's own keys:
random_seed (seeds the random drop masks of DARE and DELLA; default 0) and metadata (a free mapping
describing the merged model, e.g. for a pipeline's score table; the engine carries it along and
ignores it).

A model is a local folder, a Hub id ORG/NAME[@REVISION], either optionally followed by +LORA. A
parameter value is, as in mergekit, a scalar, a gradient list interpolated over layer depth
(`[0, 0.5, 1]`), or a list of `{filter: SUBSTRING, value: SCALAR_OR_GRADIENT}` (the first entry whose
filter is in the tensor name wins; no filter or "*" matches all). Settings are looked up from the
most specific place: a slice source's or model's own, the slice's, the module's, then the global
parameters.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import yaml

from exme.dtypes import MERGE_DTYPES
from exme.errors import ExmeError
from exme.files import write_text
from exme.merge.chat_templates import check_chat_template
from exme.merge.methods.registry import BasePolicy, MergeMethod, Parameter, Scope, get_method

_KEYS = {
    "merge_method", "base_model", "models", "slices", "modules", "parameters", "dtype", "out_dtype",
    "tokenizer_source", "tokenizer", "chat_template", "random_seed", "metadata", "name",
}  # fmt: skip
_MODEL_KEYS = {"model", "parameters"}
_SOURCE_KEYS = {"model", "layer_range", "parameters"}
_SLICE_KEYS = {"sources", "base_model", "parameters"}
_MODULE_KEYS = {"models", "slices", "parameters"}
_INPUT_FORMS = ("models", "slices", "modules")
_TOKENIZER_KEYS = {"source", "tokens", "pad_to_multiple_of"}

ParameterValue = bool | int | float | list[Any]


@dataclass(frozen=True)
class ModelEntry:
    model: str
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)


@dataclass(frozen=True)
class SliceSource:
    model: str
    layer_range: tuple[int, int]
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputSlice:
    sources: tuple[SliceSource, ...]
    base_model: str | None = None
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputModule:
    """A module of a multimodal model (mergekit's `modules`), merged from its own models or slices."""

    name: str
    models: tuple[ModelEntry, ...] = ()
    slices: tuple[OutputSlice, ...] = ()
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)


@dataclass(frozen=True)
class InputGroup:
    """The inputs of a stretch of the output model: one slice, or the whole `models` list.

    `models` are the non-base inputs with their own settings; `layer_ranges` has one range per
    input, base first (None: every layer, the `models` form); `shared` holds the settings every
    model falls back on, most specific first.
    """

    base: str | None
    models: tuple[ModelEntry, ...]
    layer_ranges: tuple[tuple[int, int], ...] | None
    shared: tuple[Mapping[str, ParameterValue], ...]
    where: str  # "" for the models form, "in slice N" for a slice, "in module 'M'[, slice N]"
    module: str | None = None  # the module it merges, in a recipe of modules

    @property
    def inputs(self) -> tuple[str, ...]:
        return (
            (self.base, *(m.model for m in self.models)) if self.base else tuple(m.model for m in self.models)
        )


@dataclass(frozen=True)
class TokenSource:
    """Where a token's embedding row comes from: zeros, a model's row for the same token, or a
    model's row for another token (by text or id)."""

    kind: str  # "zero", "model" or "model_token"
    model: str | None = None
    token: str | None = None
    token_id: int | None = None


@dataclass(frozen=True)
class TokenSetting:
    source: TokenSource | None = None
    force: bool = False  # use the source even in models that have the token


@dataclass(frozen=True)
class TokenizerSettings:
    source: str  # "union", "base" or a model
    tokens: Mapping[str, TokenSetting] = field(default_factory=dict)
    pad_to_multiple_of: int | None = None


@dataclass(frozen=True)
class Recipe:
    merge_method: str
    models: tuple[ModelEntry, ...] = ()
    slices: tuple[OutputSlice, ...] = ()
    modules: tuple[OutputModule, ...] = ()
    base_model: str | None = None
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None
    tokenizer: Mapping[str, Any] | None = None  # mergekit's tokenizer section, as written
    chat_template: str | None = None
    random_seed: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None  # a merge's name in a multi-document recipe (mergekit-multi's)
    # The other named merges of its multi-document recipe, which it (and they) may name as models.
    stages: Mapping[str, Recipe] = field(default_factory=dict, compare=False, repr=False)
    # Where this named merge was written (exme merge --intermediate-dir): merges naming it read it there.
    folder: str | None = field(default=None, compare=False, repr=False)

    @property
    def method(self) -> MergeMethod:
        return get_method(self.merge_method)

    @property
    def groups(self) -> tuple[InputGroup, ...]:
        if not self.modules:
            return self._groups(self.models, self.slices, (self.parameters,), None)
        return tuple(
            group
            for module in self.modules
            for group in self._groups(
                module.models, module.slices, (module.parameters, self.parameters), module.name
            )
        )

    def _groups(
        self,
        entries: tuple[ModelEntry, ...],
        slices: tuple[OutputSlice, ...],
        shared: tuple[Mapping[str, ParameterValue], ...],
        module: str | None,
    ) -> tuple[InputGroup, ...]:
        """The groups of a models list or of slices (of a module); `shared`: the settings above theirs."""
        method = self.method
        where = "" if module is None else f"in module {module!r}"
        if slices:
            slice_where = f"{where}, slice" if where else "in slice"
            return tuple(
                _slice_group(s, self.base_model, method, shared, f"{slice_where} {n}", module)
                for n, s in enumerate(slices, start=1)
            )
        listed = [entry.model for entry in entries]
        if method.base is BasePolicy.IGNORED:
            # As mergekit: a base_model that is not listed is merged as one more model.
            if self.base_model is not None and self.base_model not in listed:
                entries = (*entries, ModelEntry(self.base_model))
            return (InputGroup(None, entries, None, shared, where, module),)
        others = tuple(entry for entry in entries if entry.model != self.base_model)
        return (InputGroup(self.base_model, others, None, shared, where, module),)

    @property
    def referenced_models(self) -> tuple[str, ...]:
        """Every model the merge reads, base first, each once."""
        return tuple(dict.fromkeys(model for group in self.groups for model in group.inputs))

    @property
    def config_model(self) -> str:
        """The model whose config.json (and by default tokenizer) the output takes, as mergekit."""
        return self.base_model or self.referenced_models[0]

    @cached_property
    def tokenizer_settings(self) -> TokenizerSettings | None:
        if self.tokenizer is not None:
            return _tokenizer_settings(self.tokenizer)
        return None if self.tokenizer_source is None else TokenizerSettings(self.tokenizer_source)

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"merge_method": self.merge_method}
        if self.base_model is not None:
            result["base_model"] = self.base_model
        if self.models:
            result["models"] = [_with_parameters({"model": e.model}, e.parameters) for e in self.models]
        if self.slices:
            result["slices"] = [_slice_dict(s) for s in self.slices]
        if self.modules:
            result["modules"] = {module.name: _module_dict(module) for module in self.modules}
        optional = {
            "parameters": dict(self.parameters) or None,
            "dtype": self.dtype,
            "out_dtype": self.out_dtype,
            "tokenizer_source": self.tokenizer_source,
            "tokenizer": None if self.tokenizer is None else dict(self.tokenizer),
            "chat_template": self.chat_template,
            "random_seed": self.random_seed,
            "metadata": dict(self.metadata) or None,
        }
        result.update({key: value for key, value in optional.items() if value is not None})
        return result if self.name is None else {"name": self.name, **result}

    def to_documents(self) -> list[dict[str, Any]]:
        """The recipe's YAML documents: its named merges, in the order they were given, then itself."""
        return [*(stage.to_dict() for stage in self.stages.values()), self.to_dict()]

    @property
    def named_models(self) -> tuple[str, ...]:
        """Every model the recipe names: those it merges and a tokenizer source."""
        settings = self.tokenizer_settings
        source = settings.source if settings and settings.source not in ("base", "union") else None
        return tuple(dict.fromkeys([*self.referenced_models, *([source] if source else [])]))


def _with_parameters(entry: dict[str, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {**entry, "parameters": dict(parameters)} if parameters else entry


def _slice_dict(output_slice: OutputSlice) -> dict[str, Any]:
    result: dict[str, Any] = {
        "sources": [
            _with_parameters({"model": s.model, "layer_range": list(s.layer_range)}, s.parameters)
            for s in output_slice.sources
        ]
    }
    if output_slice.base_model is not None:
        result["base_model"] = output_slice.base_model
    return _with_parameters(result, output_slice.parameters)


def _module_dict(module: OutputModule) -> dict[str, Any]:
    if module.slices:
        result: dict[str, Any] = {"slices": [_slice_dict(s) for s in module.slices]}
    else:
        result = {"models": [_with_parameters({"model": e.model}, e.parameters) for e in module.models]}
    return _with_parameters(result, module.parameters)


def _slice_group(
    output_slice: OutputSlice,
    base_model: str | None,
    method: MergeMethod,
    shared: tuple[Mapping[str, ParameterValue], ...],
    where: str,
    module: str | None,
) -> InputGroup:
    base = None if method.base is BasePolicy.IGNORED else output_slice.base_model or base_model
    by_model = {source.model: source for source in output_slice.sources}
    if base is not None and base not in by_model:
        raise ExmeError(
            f"{where}: the base model {base!r} must be one of the slice's sources (with its layer_range)"
        )
    others = tuple(ModelEntry(s.model, s.parameters) for s in output_slice.sources if s.model != base)
    inputs = ((base,) if base else ()) + tuple(entry.model for entry in others)
    ranges = tuple(by_model[model].layer_range for model in inputs)
    return InputGroup(base, others, ranges, (output_slice.parameters, *shared), where, module)


def _check_value(parameter: Parameter, value: Any, where: str) -> None:
    def check_scalar(scalar: Any) -> None:
        if parameter.type is bool:
            ok = isinstance(scalar, bool)
        elif parameter.type is int:
            ok = isinstance(scalar, int) and not isinstance(scalar, bool)
        else:
            ok = isinstance(scalar, int | float) and not isinstance(scalar, bool)
        if not ok:
            raise ExmeError(
                f"parameter {parameter.name!r} {where} must be a {parameter.type.__name__}, got {scalar!r}"
            )
        if parameter.range is not None and not parameter.range.contains(scalar):
            raise ExmeError(
                f"parameter {parameter.name!r} {where} must be in {parameter.range}, got {scalar!r}"
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
    method: MergeMethod, parameters: Mapping[str, Any], where: str, per_model: bool
) -> None:
    for name, value in parameters.items():
        parameter = method.parameter(name)
        if parameter is None:
            known = ", ".join(p.name for p in method.parameters) or "none"
            raise ExmeError(
                f"unknown parameter {name!r} {where} for merge_method {method.name!r} "
                f"(its parameters: {known})"
            )
        if per_model and parameter.scope is Scope.GLOBAL:
            raise ExmeError(
                f"parameter {name!r} of {method.name!r} is global: set it under the top-level "
                f"'parameters', not {where}"
            )
        _check_value(parameter, value, where)


def _dtype(value: Any, key: str) -> str | None:
    # Not check_dtype's wording: a recipe's messages all read "KEY must be ..., got VALUE".
    if value is not None and value not in MERGE_DTYPES:
        raise ExmeError(f"{key} must be one of {', '.join(MERGE_DTYPES)}, got {value!r}")
    return value


def _model_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ExmeError(f"{where}: 'model' must be a path or Hub id (text), got {value!r}")
    return value


def _parameters(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise ExmeError(f"'parameters' {where} must be a mapping, got {parameters!r}")
    return dict(parameters)


def _model_entry(item: Any) -> ModelEntry:
    if not isinstance(item, dict) or "model" not in item:
        raise ExmeError(f"each entry of 'models' needs a 'model' key, got {item!r}")
    if unknown := set(item) - _MODEL_KEYS:
        raise ExmeError(f"unknown key(s) {sorted(unknown)} in models entry {item['model']!r}")
    model = _model_name(item["model"], "in 'models'")
    return ModelEntry(model, _parameters(item, f"of model {model!r}"))


def _slice_source(item: Any, where: str) -> SliceSource:
    if not isinstance(item, dict) or "model" not in item or "layer_range" not in item:
        raise ExmeError(f"{where}: each source needs 'model' and 'layer_range', got {item!r}")
    if unknown := set(item) - _SOURCE_KEYS:
        raise ExmeError(f"{where}: unknown key(s) {sorted(unknown)} in source {item['model']!r}")
    model = _model_name(item["model"], where)
    layer_range = item["layer_range"]
    if (
        not isinstance(layer_range, list | tuple)
        or len(layer_range) != 2
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in layer_range)
        or not 0 <= layer_range[0] < layer_range[1]
    ):
        raise ExmeError(
            f"{where}: layer_range of {model!r} must be [FIRST, END] with 0 <= FIRST < END "
            f"(END excluded), got {layer_range!r}"
        )
    return SliceSource(model, tuple(layer_range), _parameters(item, f"of model {model!r} {where}"))


def _check_lists(data: Mapping[str, Any], where: str) -> None:
    for key in ("models", "slices"):
        if key in data and not isinstance(data[key], list):
            raise ExmeError(f"{where}'{key}' must be a list, got {data[key]!r}")


def _output_slices(items: Iterable[Any], where: str) -> tuple[OutputSlice, ...]:
    """Slices given `where` ("in" at the top, "in module 'M',")."""
    return tuple(_output_slice(item, f"{where} slice {number}") for number, item in enumerate(items, start=1))


def _output_modules(section: Any) -> tuple[OutputModule, ...]:
    if not isinstance(section, Mapping):
        raise ExmeError(f"'modules' must be a mapping of module names to merges, got {section!r}")
    modules = []
    for name, item in section.items():
        where = f"in module {name!r}"
        if not isinstance(item, Mapping) or bool(item.get("models")) == bool(item.get("slices")):
            raise ExmeError(f"{where}: give one of a non-empty 'models' or 'slices' list, got {item!r}")
        if unknown := set(item) - _MODULE_KEYS:
            raise ExmeError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        _check_lists(item, f"{where}: ")
        models = tuple(_model_entry(entry) for entry in item.get("models") or ())
        slices = _output_slices(item.get("slices") or (), f"{where},")
        modules.append(OutputModule(str(name), models, slices, _parameters(item, where)))
    return tuple(modules)


def _output_slice(item: Any, where: str) -> OutputSlice:
    if not isinstance(item, dict) or not isinstance(item.get("sources"), list) or not item["sources"]:
        raise ExmeError(f"{where}: each slice needs a non-empty 'sources' list, got {item!r}")
    if unknown := set(item) - _SLICE_KEYS:
        raise ExmeError(f"{where}: unknown or unsupported key(s) {', '.join(sorted(unknown))}")
    sources = tuple(_slice_source(source, where) for source in item["sources"])
    models = [source.model for source in sources]
    if len(set(models)) != len(models):
        raise ExmeError(f"{where}: a model is listed twice in 'sources': {models}")
    lengths = {source.layer_range[1] - source.layer_range[0] for source in sources}
    if len(lengths) > 1:
        raise ExmeError(f"{where}: every source must span the same number of layers, got {models} "
                        f"with ranges {[list(s.layer_range) for s in sources]}")  # fmt: skip
    base = item.get("base_model")
    return OutputSlice(sources, None if base is None else str(base), _parameters(item, where))


def _token_source(value: Any, token: str) -> TokenSource:
    if isinstance(value, str):
        return TokenSource("model", model=value)
    if isinstance(value, dict) and value.get("kind") == "zero" and set(value) == {"kind"}:
        return TokenSource("zero")
    if (
        isinstance(value, dict)
        and value.get("kind") == "model_token"
        and isinstance(value.get("model"), str)
        and set(value) - {"kind", "model"} in ({"token"}, {"token_id"})
    ):
        return TokenSource("model_token", value["model"], value.get("token"), value.get("token_id"))
    raise ExmeError(
        f"tokenizer.tokens[{token!r}].source must be a model, {{kind: zero}} or "
        f"{{kind: model_token, model: MODEL, token: TEXT | token_id: ID}}, got {value!r}"
    )


def _tokenizer_settings(section: Mapping[str, Any]) -> TokenizerSettings:
    tokens = {}
    for token, setting in (section.get("tokens") or {}).items():
        if not isinstance(setting, dict) or set(setting) - {"source", "force"}:
            raise ExmeError(f"tokenizer.tokens[{token!r}] must be {{source, force}}, got {setting!r}")
        source = None if setting.get("source") is None else _token_source(setting["source"], token)
        force = setting.get("force", False)
        if not isinstance(force, bool) or (force and source is None):
            raise ExmeError(f"tokenizer.tokens[{token!r}].force must be a bool and needs a source")
        tokens[str(token)] = TokenSetting(source, force)
    pad = section.get("pad_to_multiple_of")
    if pad is not None and (not isinstance(pad, int) or isinstance(pad, bool) or pad < 1):
        raise ExmeError(f"tokenizer.pad_to_multiple_of must be a positive integer, got {pad!r}")
    return TokenizerSettings(str(section.get("source", "union")), tokens, pad)


def _tokenizer(data: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any] | None]:
    if "tokenizer" in data and "tokenizer_source" in data:
        raise ExmeError("give either 'tokenizer' or 'tokenizer_source', not both")
    source = data.get("tokenizer_source")
    if source is not None and not isinstance(source, str):
        raise ExmeError(f"tokenizer_source must be a model, 'base' or 'union', got {source!r}")
    section = data.get("tokenizer")
    if section is not None:
        if not isinstance(section, dict) or set(section) - _TOKENIZER_KEYS:
            raise ExmeError(f"tokenizer must be a mapping of {sorted(_TOKENIZER_KEYS)}, got {section!r}")
        _tokenizer_settings(section)
    return source, section


def recipe_from_dict(data: Mapping[str, Any]) -> Recipe:
    if not isinstance(data, Mapping):
        raise ExmeError(f"a recipe must be a mapping, got {type(data).__name__}")
    if unknown := set(data) - _KEYS:
        raise ExmeError(f"unknown recipe key(s): {', '.join(sorted(unknown))}")
    if "merge_method" not in data:
        raise ExmeError("the recipe has no 'merge_method'")
    method = get_method(data["merge_method"])
    if sum(bool(data.get(key)) for key in _INPUT_FORMS) != 1:
        raise ExmeError("the recipe needs exactly one of a non-empty 'models' or 'slices' list or 'modules'")
    _check_lists(data, "")
    seed = data.get("random_seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ExmeError(f"random_seed must be an integer, got {seed!r}")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise ExmeError(f"metadata must be a mapping, got {metadata!r}")
    name = data.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise ExmeError(f"a merge's name must be a non-empty string, got {name!r}")
    tokenizer_source, tokenizer = _tokenizer(data)
    recipe = Recipe(
        merge_method=method.name,
        models=tuple(_model_entry(item) for item in data.get("models") or ()),
        slices=_output_slices(data.get("slices") or (), "in"),
        modules=_output_modules(data.get("modules") or {}),
        base_model=None if data.get("base_model") is None else str(data["base_model"]),
        parameters=_parameters(data, "(global)"),
        dtype=_dtype(data.get("dtype"), "dtype"),
        out_dtype=_dtype(data.get("out_dtype"), "out_dtype"),
        tokenizer_source=tokenizer_source,
        tokenizer=tokenizer,
        chat_template=check_chat_template(data.get("chat_template")),
        random_seed=seed,
        metadata=dict(metadata),
        name=name,
    )
    _validate(recipe, method)
    return recipe


def _validate_group(group: InputGroup, method: MergeMethod) -> None:
    prefix = f"{group.where}: " if group.where else ""
    if method.base is BasePolicy.REQUIRED and group.base is None:
        raise ExmeError(f"{prefix}merge_method {method.name!r} requires a base_model")
    count = len(group.models)
    if count < method.min_models or (method.max_models and count > method.max_models):
        if method.min_models == method.max_models:
            expected = f"exactly {method.min_models}"
        elif count < method.min_models:
            expected = f"at least {method.min_models}"
        else:
            expected = f"at most {method.max_models}"
        raise ExmeError(
            f"{prefix}merge_method {method.name!r} takes {expected} non-base model(s), got {count}"
        )
    for entry in group.models:
        _check_parameters(method, entry.parameters, f"of model {entry.model!r} {group.where}".rstrip(), True)
    for settings in group.shared[:-1]:  # a slice's own parameters; the global ones are checked once
        _check_parameters(method, settings, f"{group.where}".strip(), False)
    for parameter in method.parameters:
        if not parameter.required:
            continue
        given_shared = any(parameter.name in settings for settings in group.shared)
        for entry in group.models if parameter.scope is Scope.PER_MODEL else ():
            if not given_shared and parameter.name not in entry.parameters:
                raise ExmeError(
                    f"missing required parameter {parameter.name!r} for model {entry.model!r} "
                    f"(merge_method {method.name!r})"
                )
        if parameter.scope is Scope.GLOBAL and not given_shared:
            raise ExmeError(f"missing required parameter {parameter.name!r} (merge_method {method.name!r})")


def _validate(recipe: Recipe, method: MergeMethod) -> None:
    listings = [(recipe.models, ""), *((m.models, f"in module {m.name!r}: ") for m in recipe.modules)]
    for entries, where in listings:
        models = [entry.model for entry in entries]
        if len(set(models)) != len(models):
            raise ExmeError(f"{where}a model is listed twice in 'models': {models}")
    _check_parameters(method, recipe.parameters, "in the global parameters", False)
    for group in recipe.groups:
        _validate_group(group, method)
    for entry in [*recipe.models, *(entry for module in recipe.modules for entry in module.models)]:
        if entry.model == recipe.groups[0].base and entry.parameters:
            raise ExmeError(f"the base model {entry.model!r} takes no parameters here")


def write_recipe(recipe: Recipe, path: str | os.PathLike[str]) -> None:
    """Write atomically: a reader never sees a half-written recipe."""
    write_text(path, yaml.safe_dump_all(recipe.to_documents(), sort_keys=False))

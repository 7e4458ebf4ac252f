"""Merge methods registered by name; each declares its parameters once, in its function's signature.

As with mergekit's `easy_define`, a method is a function `f(inputs, *, name: TYPE = DEFAULT, ...)`:
every keyword argument is a recipe parameter, global unless annotated `PerModel[TYPE]` (one value per
non-base model, given to the function as a list), required unless it has a default, and optionally
bounded (`Annotated[float, Range(0, 1)]`). A trailing underscore is dropped from the recipe name, so
that `lambda_` declares mergekit's `lambda`.

A family of methods is one function registered once per variant (as `dare_linear` and `dare_ties`):
each registration names the keyword arguments that make its variant (`variant`, not recipe parameters)
and the defaults it changes (`defaults`).
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, TypeVar, get_args, get_origin, get_type_hints

import torch

from exme.errors import ExmeError


class Scope(StrEnum):
    """Where a parameter is set: once for the merge, or per non-base model."""

    GLOBAL = "global"
    PER_MODEL = "per_model"


class BasePolicy(StrEnum):
    REQUIRED = "required"
    OPTIONAL = "optional"  # with a base_model, the method works on deltas from it
    IGNORED = "ignored"  # a base_model is merged as one more model


_T = TypeVar("_T")
PerModel = Annotated[list[_T], Scope.PER_MODEL]


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric parameter, checked on every value a recipe gives (gradients included)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        closing = ")" if self.high_open or self.high is None else "]"
        return f"{'(' if self.low_open else '['}{low}, {high}{closing}"


Fraction = Annotated[float, Range(0, 1)]
Positive = Annotated[float, Range(0, None, low_open=True)]

_REQUIRED = object()


@dataclass(frozen=True)
class Parameter:
    name: str
    type: type
    scope: Scope
    default: Any = _REQUIRED
    range: Range | None = None
    argument: str = ""  # the function's keyword for it ("lambda_" for "lambda")

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


@dataclass(frozen=True)
class MethodInputs:
    """fp32 tensors for one output tensor; `tensors` are the non-base models in recipe order.

    The tensors are the method's own copies: it may overwrite them to save memory and time.
    """

    tensor_name: str
    tensors: Sequence[torch.Tensor]
    base: torch.Tensor | None
    # Seeded per (recipe seed, tensor name, model position), so random methods are reproducible; a
    # CPU generator whatever the compute device, so that they give the same numbers on every device.
    generator_for: Callable[[int], torch.Generator]


MergeFunction = Callable[..., torch.Tensor]
# Checks that involve several parameters of one model (e.g. DELLA's density ± epsilon): given that
# model's resolved values, a message saying what is wrong, or None.
ModelCheck = Callable[[Mapping[str, Any]], str | None]


@dataclass(frozen=True)
class MergeMethod:
    name: str
    pretty_name: str
    reference_url: str | None
    base: BasePolicy
    parameters: tuple[Parameter, ...]
    function: MergeFunction
    min_models: int = 1  # non-base models
    max_models: int | None = None
    # Whether each output entry depends only on the same entry of the inputs (given these
    # parameter values): the engine may then merge a large tensor a block of rows at a time.
    elementwise: bool | Callable[[Mapping[str, Any]], bool] = False
    check_model: ModelCheck | None = None
    # Whether the output is its one input unchanged (given these parameter values): the engine
    # then hands the input on as read, without converting it to fp32 and back.
    copies_input: Callable[[Mapping[str, Any]], bool] | None = None

    def is_elementwise(self, parameters: Mapping[str, Any]) -> bool:
        return self.elementwise(parameters) if callable(self.elementwise) else self.elementwise

    def is_copy(self, parameters: Mapping[str, Any]) -> bool:
        return self.copies_input is not None and self.copies_input(parameters)

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    def __call__(self, inputs: MethodInputs, **parameters: Any) -> torch.Tensor:
        return self.function(inputs, **{self.parameter(k).argument: v for k, v in parameters.items()})


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    if get_origin(annotation) is Annotated:
        inner, *metadata = get_args(annotation)
        inner, more = _unwrap(inner)
        return inner, [*metadata, *more]
    return annotation, []


def _scalar_type(annotation: Any, where: str) -> type:
    if get_origin(annotation) in (typing.Union, types.UnionType):  # `float | None`
        options = [a for a in get_args(annotation) if a is not type(None)]
        annotation = options[0] if len(options) == 1 else annotation
    if annotation not in (bool, int, float):
        raise TypeError(f"{where}: parameters are bool, int or float, got {annotation!r}")
    return annotation


def parameters_from_signature(
    function: MergeFunction, fixed: Collection[str] = (), defaults: Mapping[str, Any] | None = None
) -> tuple[Parameter, ...]:
    """The recipe parameters a function declares: its keyword arguments but the `fixed` ones, with
    `defaults` (by keyword) in place of the signature's."""
    hints = get_type_hints(function, include_extras=True)
    defaults = defaults or {}
    arguments = list(inspect.signature(function).parameters.values())[1:]
    unknown = {*fixed, *defaults} - {argument.name for argument in arguments}
    if unknown:
        raise TypeError(f"{function.__name__} has no keyword argument {', '.join(sorted(unknown))}")
    parameters = []
    for argument in arguments:
        if argument.name in fixed:
            continue
        where = f"{function.__name__}({argument.name})"
        if argument.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"{where}: merge parameters are keyword-only")
        annotation, metadata = _unwrap(hints[argument.name])
        scope = Scope.PER_MODEL if Scope.PER_MODEL in metadata else Scope.GLOBAL
        if scope is Scope.PER_MODEL:
            annotation, element_metadata = _unwrap(get_args(annotation)[0])
            metadata += element_metadata
        default = defaults.get(argument.name, argument.default)
        default = _REQUIRED if default is inspect.Parameter.empty else default
        parameters.append(
            Parameter(
                name=argument.name.removesuffix("_"),
                type=_scalar_type(annotation, where),
                scope=scope,
                default=default,
                range=next((m for m in metadata if isinstance(m, Range)), None),
                argument=argument.name,
            )
        )
    return tuple(parameters)


_METHODS: dict[str, MergeMethod] = {}


def merge_method(
    *,
    name: str,
    pretty_name: str,
    reference_url: str | None = None,
    base: BasePolicy = BasePolicy.IGNORED,
    min_models: int = 1,
    max_models: int | None = None,
    elementwise: bool | Callable[[Mapping[str, Any]], bool] = False,
    check_model: ModelCheck | None = None,
    copies_input: Callable[[Mapping[str, Any]], bool] | None = None,
    variant: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Callable[[MergeFunction], MergeFunction]:
    """Register `function(inputs, *, parameters...)` under `name`, called with the keyword arguments
    `variant` (e.g. `{"sign_consensus": True}`) and with `defaults` (by keyword) in place of its
    signature's; a function may be registered under several names, one per variant."""
    variant = variant or {}

    def decorate(function: MergeFunction) -> MergeFunction:
        if name in _METHODS:
            raise ValueError(f"merge method {name!r} is registered twice")
        _METHODS[name] = MergeMethod(
            name=name,
            pretty_name=pretty_name,
            reference_url=reference_url,
            base=base,
            parameters=parameters_from_signature(function, fixed=variant, defaults=defaults),
            function=functools.partial(function, **variant) if variant else function,
            min_models=min_models,
            max_models=max_models,
            elementwise=elementwise,
            check_model=check_model,
            copies_input=copies_input,
        )
        return function

    return decorate


def get_method(name: str) -> MergeMethod:
    import exme.merge.methods  # noqa: F401  (importing the package registers every method)

    try:
        return _METHODS[name]
    except KeyError:
        known = ", ".join(sorted(_METHODS))
        raise ExmeError(f"unknown merge_method {name!r}; known methods: {known}") from None


def registered_methods() -> list[MergeMethod]:
    import exme.merge.methods  # noqa: F401

    return [_METHODS[name] for name in sorted(_METHODS)]

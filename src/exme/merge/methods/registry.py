"""Merge methods registered by name, each declaring its parameters like mergekit's `@merge_method`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch

from exme.errors import ExmeError


class Scope(StrEnum):
    """Where a parameter is set: once for the merge, or per non-base model."""

    GLOBAL = "global"
    PER_MODEL = "per_model"


class BasePolicy(StrEnum):
    REQUIRED = "required"
    IGNORED = "ignored"


_REQUIRED = object()


@dataclass(frozen=True)
class Parameter:
    name: str
    type: type
    scope: Scope
    default: Any = _REQUIRED

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


def global_parameter(name: str, type_: type, default: Any = _REQUIRED) -> Parameter:
    return Parameter(name, type_, Scope.GLOBAL, default)


def per_model_parameter(name: str, type_: type, default: Any = _REQUIRED) -> Parameter:
    return Parameter(name, type_, Scope.PER_MODEL, default)


@dataclass(frozen=True)
class MethodInputs:
    """fp32 tensors for one output tensor; `tensors` are the non-base models in recipe order.

    The tensors are the method's own copies: it may overwrite them to save memory and time.
    """

    tensor_name: str
    tensors: Sequence[torch.Tensor]
    base: torch.Tensor | None
    # Seeded per (recipe seed, tensor name, model position), so random methods are reproducible.
    generator_for: Callable[[int], torch.Generator]


MergeFunction = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class MergeMethod:
    name: str
    pretty_name: str
    reference_url: str | None
    base: BasePolicy
    parameters: tuple[Parameter, ...]
    function: MergeFunction
    min_models: int = 1
    max_models: int | None = None
    # Whether each output entry depends only on the same entry of the inputs (given these
    # parameter values): the engine may then merge a large tensor a block of rows at a time.
    elementwise: bool | Callable[[Mapping[str, Any]], bool] = False

    def is_elementwise(self, parameters: Mapping[str, Any]) -> bool:
        return self.elementwise(parameters) if callable(self.elementwise) else self.elementwise

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    def __call__(self, inputs: MethodInputs, **parameters: Any) -> torch.Tensor:
        return self.function(inputs, **parameters)


_METHODS: dict[str, MergeMethod] = {}


def register(method: MergeMethod) -> MergeMethod:
    if method.name in _METHODS:
        raise ValueError(f"merge method {method.name!r} is registered twice")
    _METHODS[method.name] = method
    return method


def merge_method(
    *,
    name: str,
    pretty_name: str,
    reference_url: str | None = None,
    base: BasePolicy = BasePolicy.IGNORED,
    parameters: Sequence[Parameter] = (),
    min_models: int = 1,
    max_models: int | None = None,
    elementwise: bool = False,
) -> Callable[[MergeFunction], MergeFunction]:
    """Register `function(inputs, **parameters)`; per-model values arrive as lists."""

    def decorate(function: MergeFunction) -> MergeFunction:
        register(
            MergeMethod(
                name,
                pretty_name,
                reference_url,
                base,
                tuple(parameters),
                function,
                min_models,
                max_models,
            )
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

"""Weighted average of the models (Model Soups)."""

from __future__ import annotations

import torch

from exme.merge.methods.registry import MethodInputs, PerModel, merge_method


@merge_method(
    name="linear",
    pretty_name="Linear",
    reference_url="https://arxiv.org/abs/2203.05482",
    elementwise=True,
)
def linear(inputs: MethodInputs, *, weight: PerModel[float], normalize: bool = True) -> torch.Tensor:
    result = inputs.tensors[0].mul_(weight[0])
    for tensor, coefficient in zip(inputs.tensors[1:], weight[1:], strict=True):
        result.add_(tensor, alpha=coefficient)
    if normalize:
        # Like mergekit: no guard, so weights summing to 0 give Inf/NaN, which the engine reports.
        result.div_(sum(weight))
    return result

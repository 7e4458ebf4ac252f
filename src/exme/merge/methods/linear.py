"""Weighted average of the models (Model Soups)."""

import torch

from exme.merge.methods.registry import MethodInputs, global_parameter, merge_method, per_model_parameter


@merge_method(
    name="linear",
    pretty_name="Linear",
    elementwise=True,
    reference_url="https://arxiv.org/abs/2203.05482",
    parameters=(per_model_parameter("weight", float), global_parameter("normalize", bool, True)),
)
def linear(inputs: MethodInputs, *, weight: list[float], normalize: bool) -> torch.Tensor:
    result = inputs.tensors[0].mul_(weight[0])
    for tensor, coefficient in zip(inputs.tensors[1:], weight[1:], strict=True):
        result.add_(tensor, alpha=coefficient)
    if normalize:
        # Like mergekit: no guard, so weights summing to 0 give Inf/NaN, which the engine reports.
        result.div_(sum(weight))
    return result

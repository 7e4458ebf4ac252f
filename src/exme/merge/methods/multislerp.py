"""Multi-SLERP: barycentric interpolation of several models (or task vectors, given a base_model) on
a hypersphere: project to the tangent space at their weighted mean direction, average there, map
back, and scale to the weighted mean norm."""

from __future__ import annotations

import torch

from exme.errors import ExmeError
from exme.merge.methods.registry import BasePolicy, MethodInputs, PerModel, Positive, merge_method


@merge_method(
    name="multislerp",
    pretty_name="Multi-SLERP",
    reference_url="https://goddard.blog/posts/multislerp-wow-what-a-cool-idea",
    base=BasePolicy.OPTIONAL,
)
def multislerp(
    inputs: MethodInputs, *, weight: PerModel[float], normalize_weights: bool = True, eps: Positive = 1e-8
) -> torch.Tensor:
    if len(inputs.tensors) == 1:
        return inputs.tensors[0]
    points = torch.stack([tensor.reshape(-1) for tensor in inputs.tensors])
    if inputs.base is not None:
        points -= inputs.base.reshape(-1)
    weights = torch.tensor(weight, dtype=points.dtype, device=points.device)
    if normalize_weights:
        weights = weights / weights.sum()
    norms = points.norm(dim=-1, keepdim=True)
    units = points / (norms + eps)
    mean = (units * weights[:, None]).sum(0)
    mean_norm = mean.norm()
    if mean_norm < eps:
        if len(points) != 2:
            raise ExmeError(
                f"multislerp: the weighted sum of the inputs of tensor {inputs.tensor_name!r} is zero "
                "(opposite inputs with balancing weights); change the weights"
            )
        result = points[0] * weights[0] + points[1] * weights[1]  # as mergekit: linear fallback
    else:
        mean = mean / mean_norm
        tangents = units - (units * mean).sum(-1, keepdim=True) * mean
        tangent = (tangents * weights[:, None]).sum(0)
        tangent_norm = tangent.norm() + eps
        direction = mean * torch.cos(tangent_norm) + tangent * (torch.sin(tangent_norm) / tangent_norm)
        result = direction * (norms.squeeze(-1) * weights).sum()
    result = result.reshape(inputs.tensors[0].shape)
    return result if inputs.base is None else result + inputs.base

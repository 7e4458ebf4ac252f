"""NuSLERP: spherical interpolation of two models (or of their task vectors, given a base_model),
at t = w_2 / (w_1 + w_2), over whole tensors or row by row."""

from __future__ import annotations

import torch

from exme.merge.methods.registry import BasePolicy, MethodInputs, PerModel, merge_method

_NORM_FLOOR = 1e-7
_COLINEAR_EPS = 1e-8
_ZERO_WEIGHT_SUM = 1e-6


def spherical_interpolation(t: float, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Slerp along the last dimension (vectors of any norms), linear where they are colinear."""
    unit_start = start / start.norm(dim=-1, keepdim=True).clamp(min=_NORM_FLOOR)
    unit_end = end / end.norm(dim=-1, keepdim=True).clamp(min=_NORM_FLOOR)
    cosine = (unit_start * unit_end).sum(dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cosine.square()) <= _COLINEAR_EPS**2
    angle = torch.acos(torch.where(colinear, 0, cosine))
    spherical = (torch.sin((1 - t) * angle) * start + torch.sin(t * angle) * end) / torch.sin(angle)
    return torch.where(colinear, (1 - t) * start + t * end, spherical)


@merge_method(
    name="nuslerp",
    pretty_name="NuSLERP",
    base=BasePolicy.OPTIONAL,
    min_models=2,
    max_models=2,
)
def nuslerp(
    inputs: MethodInputs,
    *,
    weight: PerModel[float],
    nuslerp_row_wise: bool = False,
    nuslerp_flatten: bool = True,
) -> torch.Tensor:
    """Flattened by default; else along rows (`nuslerp_row_wise`) or columns (mergekit's names)."""
    total = sum(weight)
    t = 0.5 if abs(total) < _ZERO_WEIGHT_SUM else weight[1] / total
    start, end = inputs.tensors
    if inputs.base is not None:
        start, end = start - inputs.base, end - inputs.base
    shape = start.shape
    if nuslerp_flatten:
        result = spherical_interpolation(t, start.reshape(-1), end.reshape(-1)).reshape(shape)
    elif nuslerp_row_wise:
        result = spherical_interpolation(t, start.transpose(0, -1), end.transpose(0, -1)).transpose(0, -1)
    else:
        result = spherical_interpolation(t, start, end)
    return result if inputs.base is None else result + inputs.base

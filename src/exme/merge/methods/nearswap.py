"""NearSwap: take the other model's value where it is within `t` of the base's, and interpolate
toward it by t / |θ − θ_base| where it is farther."""

from __future__ import annotations

import torch

from exme.merge.methods.registry import BasePolicy, MethodInputs, Positive, merge_method

_DISTANCE_FLOOR = 1e-6


@merge_method(
    name="nearswap",
    pretty_name="NearSwap",
    reference_url="https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001",
    base=BasePolicy.REQUIRED,
    min_models=1,
    max_models=1,
    elementwise=True,
)
def nearswap(inputs: MethodInputs, *, t: Positive) -> torch.Tensor:
    base, other = inputs.base, inputs.tensors[0]
    weight = (t / (base - other).abs_().clamp_(min=_DISTANCE_FLOOR)).clamp_(0, 1)
    return other.sub_(base).mul_(weight).add_(base)

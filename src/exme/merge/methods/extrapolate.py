"""EXPO: push a model further along its direction from the base, θ + α(θ − θ_base)."""

from __future__ import annotations

import torch

from exme.merge.methods.registry import BasePolicy, MethodInputs, PerModel, merge_method


def extrapolated(tensor: torch.Tensor, base: torch.Tensor, alpha: float) -> torch.Tensor:
    """θ + α(θ − θ_base) = (1+α)θ − αθ_base, computed in place in `tensor`."""
    return tensor.mul_(1 + alpha).add_(base, alpha=-alpha)


@merge_method(
    name="extrapolate",
    pretty_name="EXPO (model extrapolation)",
    reference_url="https://arxiv.org/abs/2404.16792",
    base=BasePolicy.REQUIRED,
    min_models=1,
    max_models=1,
    elementwise=True,
)
def extrapolate(inputs: MethodInputs, *, alpha: PerModel[float]) -> torch.Tensor:
    return extrapolated(inputs.tensors[0], inputs.base, alpha[0])

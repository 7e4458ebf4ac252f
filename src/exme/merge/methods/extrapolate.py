"""EXPO: push a model further along its direction from the base, θ + α(θ − θ_base)."""

import torch

from exme.merge.methods.registry import BasePolicy, MethodInputs, merge_method, per_model_parameter


def extrapolated(tensor: torch.Tensor, base: torch.Tensor, alpha: float) -> torch.Tensor:
    """θ + α(θ − θ_base) = (1+α)θ − αθ_base, computed in place in `tensor`."""
    return tensor.mul_(1 + alpha).add_(base, alpha=-alpha)


@merge_method(
    name="extrapolate",
    pretty_name="EXPO (model extrapolation)",
    elementwise=True,
    reference_url="https://arxiv.org/abs/2404.16792",
    base=BasePolicy.REQUIRED,
    parameters=(per_model_parameter("alpha", float),),
    min_models=1,
    max_models=1,
)
def extrapolate(inputs: MethodInputs, *, alpha: list[float]) -> torch.Tensor:
    return extrapolated(inputs.tensors[0], inputs.base, alpha[0])

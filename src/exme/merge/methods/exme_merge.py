"""ExMe: a weighted merge of EXPO-extrapolated models, Σ_i w_i (θ_i + α_i(θ_i − θ_base)).

With two models and weights β, 1−β this is θ = β·EXPO_1 + (1−β)·EXPO_2.
"""

from __future__ import annotations

import torch

from exme.merge.methods.extrapolate import extrapolated
from exme.merge.methods.registry import BasePolicy, MethodInputs, PerModel, merge_method


@merge_method(
    name="exme",
    pretty_name="ExMe (extrapolation merging)",
    reference_url="https://arxiv.org/abs/2503.04834",
    base=BasePolicy.REQUIRED,
    elementwise=True,
)
def exme(
    inputs: MethodInputs, *, alpha: PerModel[float], weight: PerModel[float], normalize: bool = False
) -> torch.Tensor:
    result = None
    for tensor, model_alpha, model_weight in zip(inputs.tensors, alpha, weight, strict=True):
        expo = extrapolated(tensor, inputs.base, model_alpha).mul_(model_weight)
        result = expo if result is None else result.add_(expo)
    if normalize:
        result.div_(sum(weight))
    return result

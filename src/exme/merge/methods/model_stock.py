"""Model Stock: move from the base toward the average of the fine-tunes by a ratio set by the angle
between their task vectors, t = N cos θ / (1 + (N − 1) cos θ)."""

from __future__ import annotations

import itertools

import torch

from exme.merge.methods.registry import BasePolicy, MethodInputs, merge_method

_NORM_FLOOR = 1e-6
_SINGULAR = 1e-6


@merge_method(
    name="model_stock",
    pretty_name="Model Stock",
    reference_url="https://arxiv.org/abs/2403.19522",
    base=BasePolicy.REQUIRED,
    min_models=2,
)
def model_stock(inputs: MethodInputs, *, filter_wise: bool = False) -> torch.Tensor:
    """With `filter_wise`, one ratio per row (output filter) instead of one per tensor."""
    shape = inputs.base.shape
    if filter_wise:
        base = inputs.base.reshape(1, -1) if inputs.base.dim() == 1 else inputs.base
    else:
        base = inputs.base.reshape(-1)
    models = [tensor.reshape(base.shape) for tensor in inputs.tensors]
    offsets = [model - base for model in models]
    cosines = [
        ((a * b).sum(dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=_NORM_FLOOR)).clamp(-1, 1)
        for a, b in itertools.combinations(offsets, 2)
    ]
    cosine = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    count = len(models)
    denominator = 1 + (count - 1) * cosine
    singular = denominator.abs() < _SINGULAR  # no finite estimate: keep the base
    ratio = torch.where(singular, 0, count * cosine / torch.where(singular, 1, denominator))
    average = sum(models) / count
    return (ratio * average + (1 - ratio) * base).reshape(shape)

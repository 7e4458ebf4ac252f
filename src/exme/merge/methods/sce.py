"""SCE (FuseChat): select the entries where the task vectors vary most (`select_topk`), weight each
model by its task vector's mean square, and average those agreeing with the majority sign."""

from __future__ import annotations

import torch

from exme.merge.methods.registry import BasePolicy, Fraction, MethodInputs, merge_method
from exme.merge.methods.sparsify import top_k_mask

_WEIGHT_FLOOR = 1e-6


def _high_variance_mask(task_vectors: torch.Tensor, fraction: float) -> torch.Tensor:
    variance = task_vectors.var(dim=0, unbiased=False)
    count = int(torch.count_nonzero(variance) * fraction)
    return top_k_mask(variance.reshape(-1), count).reshape(variance.shape)


@merge_method(
    name="sce",
    pretty_name="SCE",
    reference_url="https://arxiv.org/abs/2408.07990",
    base=BasePolicy.REQUIRED,
)
def sce(inputs: MethodInputs, *, int8_mask: bool = False, select_topk: Fraction = 1.0) -> torch.Tensor:
    base = inputs.base
    task_vectors = torch.stack([tensor.sub_(base) for tensor in inputs.tensors])
    if select_topk <= 0:
        task_vectors.zero_()
    elif select_topk < 1:
        task_vectors *= _high_variance_mask(task_vectors, select_topk)
    total = task_vectors.sum(dim=0)
    agrees = torch.where(total >= 0, task_vectors > 0, task_vectors < 0)
    mean_squares = task_vectors.square().reshape(len(task_vectors), -1).mean(dim=1)
    weight_sum = mean_squares.sum().item()
    if abs(weight_sum) < _WEIGHT_FLOOR:
        model_weights = torch.full_like(mean_squares, 1 / len(mean_squares))
    else:
        model_weights = mean_squares / weight_sum
    weights = model_weights.reshape(-1, *[1] * (task_vectors.dim() - 1)) * agrees
    merged = (task_vectors * weights).sum(dim=0) / weights.sum(dim=0).clamp(min=_WEIGHT_FLOOR)
    return merged.add_(base)

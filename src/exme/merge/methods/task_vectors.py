"""The generalized task-vector merge behind task_arithmetic, TIES, DARE, Model Breadcrumbs and DELLA.

θ = θ_base + λ · Σ_i w_i m_i sparsify(θ_i − θ_base) [/ Σ_i w_i m_i if normalize], where the sign
mask m_i (TIES-style sign consensus) keeps entries agreeing with the sign of the weighted sum of
task vectors. Each method is its own file, declaring its parameters; this is their shared body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from exme.merge.methods.registry import MethodInputs

# mergekit treats weights summing to less than this as 0 and then does not divide.
_ZERO_WEIGHT_SUM = 1e-8

# (task vector, index of its model) -> the sparsified task vector, possibly computed in place
Sparsifier = Callable[[torch.Tensor, int], torch.Tensor]


def dense(parameters: Mapping[str, Any]) -> bool:
    """Whether no entry is dropped: each output entry then depends on the same input entries only."""
    return all(density >= 1 for density in parameters["density"])


def _sign_consensus_sum(deltas: torch.Tensor, weight: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum the weighted deltas agreeing in sign with their total, and their weights."""
    weights = torch.tensor(weight, dtype=deltas.dtype, device=deltas.device)
    weights = weights.reshape(-1, *([1] * (deltas.dim() - 1)))
    deltas.mul_(weights)
    majority_positive = deltas.sum(dim=0) >= 0
    agrees = torch.where(majority_positive, deltas > 0, deltas < 0)
    merged_delta = (deltas * agrees).sum(dim=0)
    divisor = (weights * agrees).sum(dim=0)
    divisor[divisor == 0] = 1
    return merged_delta, divisor


def merge_task_vectors(
    inputs: MethodInputs,
    *,
    weight: list[float],
    scale: float,
    normalize: bool,
    sign_consensus: bool,
    sparsify: Sparsifier | None = None,
) -> torch.Tensor:
    base = inputs.base
    deltas = (
        sparsify(tensor.sub_(base), index) if sparsify else tensor.sub_(base)
        for index, tensor in enumerate(inputs.tensors)
    )
    if sign_consensus:
        merged_delta, divisor = _sign_consensus_sum(torch.stack(list(deltas)), weight)
    else:
        merged_delta = None
        for delta, model_weight in zip(deltas, weight, strict=True):
            if merged_delta is None:
                merged_delta = delta.mul_(model_weight)
            else:
                merged_delta.add_(delta, alpha=model_weight)
        divisor = sum(weight)
        if abs(divisor) < _ZERO_WEIGHT_SUM:
            divisor = 1.0
    if normalize:
        merged_delta /= divisor
    if scale != 1:
        merged_delta *= scale
    return merged_delta.add_(base)

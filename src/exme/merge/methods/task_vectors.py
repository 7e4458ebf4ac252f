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
from exme.merge.methods.sparsify import chunks

# mergekit treats weights summing to less than this as 0 and then does not divide.
_ZERO_WEIGHT_SUM = 1e-8

# (task vector, index of its model) -> the sparsified task vector, possibly computed in place
Sparsifier = Callable[[torch.Tensor, int], torch.Tensor]


def dense(parameters: Mapping[str, Any]) -> bool:
    """Whether no entry is dropped: each output entry then depends on the same input entries only."""
    return all(density >= 1 for density in parameters["density"])


def _sign_consensus_sum(
    deltas: list[torch.Tensor], weight: list[float], with_divisor: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sum the weighted deltas agreeing in sign with their total (into the first delta), and, if
    asked, their weights; a chunk at a time, so that no temporary is as large as the tensor."""
    divisor = torch.empty_like(deltas[0]) if with_divisor else None
    divisor_chunks = chunks(divisor) if with_divisor else [None] * len(chunks(deltas[0]))
    for chunk_deltas, chunk_divisor in zip(
        zip(*(chunks(delta) for delta in deltas), strict=True), divisor_chunks, strict=True
    ):
        for delta, model_weight in zip(chunk_deltas, weight, strict=True):
            delta.mul_(model_weight)
        majority_sign = torch.where(sum(chunk_deltas) >= 0, 1.0, -1.0).to(deltas[0].dtype)
        if chunk_divisor is not None:
            chunk_divisor.zero_()
        for index, (delta, model_weight) in enumerate(zip(chunk_deltas, weight, strict=True)):
            agrees = (delta * majority_sign) > 0  # a zero agrees with neither sign
            delta.mul_(agrees)
            if index:
                chunk_deltas[0].add_(delta)
            if chunk_divisor is not None:
                chunk_divisor.add_(agrees, alpha=model_weight)
        if chunk_divisor is not None:
            chunk_divisor[chunk_divisor == 0] = 1
    return deltas[0], divisor


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
    deltas = [
        sparsify(tensor.sub_(base), index) if sparsify else tensor.sub_(base)
        for index, tensor in enumerate(inputs.tensors)
    ]
    if sign_consensus:
        merged_delta, divisor = _sign_consensus_sum(deltas, weight, with_divisor=normalize)
    else:
        merged_delta = deltas[0].mul_(weight[0])
        for delta, model_weight in zip(deltas[1:], weight[1:], strict=True):
            merged_delta.add_(delta, alpha=model_weight)
        divisor = sum(weight)
        if abs(divisor) < _ZERO_WEIGHT_SUM:
            divisor = 1.0
    if normalize:
        merged_delta /= divisor
    if scale != 1:
        merged_delta *= scale
    return merged_delta.add_(base)

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


def _weighted_sum(deltas: list[torch.Tensor], weight: list[float], normalize: bool) -> torch.Tensor:
    """Σ_i w_i δ_i [/ Σ_i w_i], into the first delta."""
    merged = deltas[0].mul_(weight[0])
    for delta, model_weight in zip(deltas[1:], weight[1:], strict=True):
        merged.add_(delta, alpha=model_weight)
    if normalize:
        divisor = sum(weight)
        merged /= 1.0 if abs(divisor) < _ZERO_WEIGHT_SUM else divisor
    return merged


def _sign_consensus_sum(deltas: list[torch.Tensor], weight: list[float], normalize: bool) -> torch.Tensor:
    """Σ_i w_i δ_i m_i [/ Σ_i w_i m_i], where m_i keeps the entries of w_i δ_i that agree in sign
    with Σ_i w_i δ_i (a zero agrees with neither sign), into the first delta.

    With s = ±1 the majority sign, w_i δ_i m_i = s · max(s w_i δ_i, 0) exactly: arithmetic on
    floats throughout, as boolean masks are slow to multiply by (see sparsify.py)."""
    weighted = [delta.mul_(model_weight) for delta, model_weight in zip(deltas, weight, strict=True)]
    total = weighted[0] + weighted[1] if len(weighted) > 1 else weighted[0].clone()
    for delta in weighted[2:]:
        total.add_(delta)
    majority_sign = total.sign_().add_(0.5).sign_()  # +1 where the sum is ≥ 0 (or -0), else -1
    merged, divisor = None, None
    for delta, model_weight in zip(weighted, weight, strict=True):
        agreeing = delta.mul_(majority_sign).clamp_min_(0)
        if normalize:
            agrees = torch.sign(agreeing).mul_(model_weight)
            divisor = agrees if divisor is None else divisor.add_(agrees)
        merged = agreeing if merged is None else merged.add_(agreeing)
    if normalize:  # where no model agrees, the divisor is 1 (the sum is 0 there)
        merged.div_(divisor.add_(torch.abs(divisor).sign_().sub_(1).neg_()))
    return merged.mul_(majority_sign)


def merge_task_vectors(
    inputs: MethodInputs,
    *,
    weight: list[float],
    scale: float,
    normalize: bool,
    sign_consensus: bool,
    sparsify: Sparsifier | None = None,
) -> torch.Tensor:
    """The merged tensor, written into the base's storage a chunk at a time, so that no temporary
    is as large as the tensor."""
    base = inputs.base
    deltas = [
        sparsify(tensor.sub_(base), index) if sparsify else tensor.sub_(base)
        for index, tensor in enumerate(inputs.tensors)
    ]
    combine = _sign_consensus_sum if sign_consensus else _weighted_sum
    for base_chunk, *delta_chunks in zip(chunks(base), *(chunks(delta) for delta in deltas), strict=True):
        merged_delta = combine(delta_chunks, weight, normalize)
        if scale != 1:
            merged_delta *= scale
        base_chunk.add_(merged_delta)
    return base

"""The generalized task-vector merge behind task_arithmetic, TIES, DARE, Model Breadcrumbs and DELLA.

θ = θ_base + λ · Σ_i w_i m_i sparsify(θ_i − θ_base) [/ Σ_i w_i m_i if normalize], where the sign
mask m_i (TIES-style sign consensus) keeps entries agreeing with the sign of the weighted sum of
task vectors. Each method (or family: a method and its variants, e.g. `dare_linear` and `dare_ties`)
is its own file, declaring its parameters; this is their shared body.
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


def _weighted_sum(
    base: torch.Tensor, deltas: list[torch.Tensor], weight: list[float], normalize: bool, scale: float
) -> None:
    """base += λ Σ_i w_i δ_i [/ Σ_i w_i], rounded in mergekit's order (each product, the sum, the
    quotient, λ times it), so that a result that cancels to about 0 agrees with mergekit's; the
    deltas are overwritten."""
    merged = deltas[0].mul_(weight[0])
    for delta, model_weight in zip(deltas[1:], weight[1:], strict=True):
        merged.add_(delta.mul_(model_weight))
    divisor = sum(weight) if normalize else 1.0
    if abs(divisor) >= _ZERO_WEIGHT_SUM and divisor != 1:
        merged.div_(divisor)
    if scale != 1:
        merged.mul_(scale)
    base.add_(merged)


def _sign_consensus_sum(
    base: torch.Tensor, deltas: list[torch.Tensor], weight: list[float], normalize: bool, scale: float
) -> None:
    """base += λ Σ_i w_i δ_i m_i [/ Σ_i w_i m_i], where m_i keeps the entries of w_i δ_i that agree
    in sign with Σ_i w_i δ_i (a zero agrees with neither sign); the deltas are overwritten.

    With s = ±1 the majority sign, w_i δ_i m_i = s max(s w_i δ_i, 0) exactly: arithmetic on floats
    throughout, as boolean masks are slow to multiply by (see sparsify.py). The products w_i δ_i
    are rounded before they are summed, as mergekit does: the majority sign of a near-tie follows."""
    weighted = [delta.mul_(model_weight) for delta, model_weight in zip(deltas, weight, strict=True)]
    total = weighted[0] + weighted[1] if len(weighted) > 1 else weighted[0].clone()
    for delta in weighted[2:]:
        total.add_(delta)
    majority_sign = total.sign_().add_(0.5).sign_()  # +1 where the sum is ≥ 0 (or -0), else -1
    merged, divisor = None, None
    for delta, model_weight in zip(weighted, weight, strict=True):
        agreeing = delta.mul_(majority_sign).clamp_min_(0)  # |w_i δ_i m_i|
        merged = agreeing if merged is None else merged.add_(agreeing)
        if normalize:
            if divisor is None:
                divisor = torch.sign(agreeing).mul_(model_weight)
            else:
                divisor.add_(torch.sign(agreeing), alpha=model_weight)
    if not normalize:
        base.addcmul_(merged, majority_sign, value=scale)
        return
    # mergekit divides by 1 where |Σ w_i m_i| < 1e-8 (merged is 0 where no model agrees). With
    # every weight above that, Σ w_i m_i is 0 or above it, so a clamp does the same in one op.
    if min(weight) >= _ZERO_WEIGHT_SUM:
        divisor.clamp_min_(_ZERO_WEIGHT_SUM)
    else:
        divisor = torch.where(divisor.abs() < _ZERO_WEIGHT_SUM, 1.0, divisor)
    base.addcdiv_(merged, divisor.mul_(majority_sign), value=scale)  # s / d = 1 / (s d), s = ±1


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
    is as large as the tensor. Without sparsification, task vectors are made a chunk at a time too."""
    base = inputs.base
    if sparsify:
        deltas = [sparsify(tensor.sub_(base), index) for index, tensor in enumerate(inputs.tensors)]
    else:
        deltas = inputs.tensors
    combine = _sign_consensus_sum if sign_consensus else _weighted_sum
    pieces = zip(chunks(base), *(chunks(delta) for delta in deltas), strict=True)
    for base_chunk, *delta_chunks in pieces:
        if not sparsify:
            delta_chunks = [delta_chunk.sub_(base_chunk) for delta_chunk in delta_chunks]
        combine(base_chunk, delta_chunks, weight, normalize, scale)
    return base

"""Arcee Fusion: take the other model's value only where its change from the base is important,
importance being |θ − θ_base| times the KL divergence of the row's softmax from the base row's,
and important meaning at least median + 1.5 · IQR of the tensor's importances (an outlier)."""

from __future__ import annotations

import torch

from exme.merge.methods.registry import BasePolicy, MethodInputs, merge_method
from exme.merge.methods.sparsify import CHUNK

_SOFTMAX_EPS = 1e-8
_QUARTILES = (0.25, 0.5, 0.75)
_OUTLIER_IQRS = 1.5


def _importance(tuned: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """|θ − θ_base| · KL(softmax(θ) ‖ softmax(θ_base)) along the last dimension, in mergekit's order
    of operations (so that the same entries reach the threshold), a few rows at a time."""
    rows, base_rows = tuned.reshape(-1, tuned.shape[-1]), base.reshape(-1, base.shape[-1])
    importance = torch.empty_like(rows)
    step = max(1, CHUNK // rows.shape[1])
    for start in range(0, len(rows), step):
        tuned_block, base_block = rows[start : start + step], base_rows[start : start + step]
        p = torch.softmax(tuned_block, dim=-1) + _SOFTMAX_EPS
        q = torch.softmax(base_block, dim=-1) + _SOFTMAX_EPS
        divergence = torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)
        torch.mul((tuned_block - base_block).abs(), divergence, out=importance[start : start + step])
    return importance.view(tuned.shape)


def _outlier_threshold(importance: torch.Tensor) -> torch.Tensor:
    """median + 1.5 (q3 − q1), the quartiles at mergekit's positions floor(q (n − 1)) of the sorted
    values. mergekit takes them from a random sample of a million entries in larger tensors; they
    are exact here."""
    flat = importance.reshape(-1)
    positions = (torch.tensor(_QUARTILES) * (flat.numel() - 1)).long().tolist()
    q1, median, q3 = (flat.kthvalue(position + 1).values for position in positions)
    return median + _OUTLIER_IQRS * (q3 - q1)


@merge_method(
    name="arcee_fusion",
    pretty_name="Arcee Fusion",
    reference_url="https://arcee.ai",
    base=BasePolicy.REQUIRED,
    min_models=1,
    max_models=1,
)
def arcee_fusion(inputs: MethodInputs) -> torch.Tensor:
    base, tuned = inputs.base, inputs.tensors[0]
    importance = _importance(tuned, base)
    important = importance >= _outlier_threshold(importance)
    return tuned.sub_(base).mul_(important).add_(base)

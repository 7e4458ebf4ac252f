"""TIES: keep each task vector's largest entries, then only those agreeing with the majority sign."""

from __future__ import annotations

import torch

from exme.merge.methods.registry import BasePolicy, Fraction, MethodInputs, PerModel, merge_method
from exme.merge.methods.sparsify import magnitude
from exme.merge.methods.task_vectors import dense, merge_task_vectors


@merge_method(
    name="ties",
    pretty_name="TIES",
    reference_url="https://arxiv.org/abs/2306.01708",
    base=BasePolicy.REQUIRED,
    elementwise=dense,
)
def ties(
    inputs: MethodInputs,
    *,
    weight: PerModel[float],
    density: PerModel[Fraction] = 1.0,
    normalize: bool = True,
    rescale: bool = False,
    lambda_: float = 1.0,
    int8_mask: bool = False,  # only shrinks mergekit's mask storage; results are identical
) -> torch.Tensor:
    return merge_task_vectors(
        inputs,
        weight=weight,
        scale=lambda_,
        normalize=normalize,
        sign_consensus=True,
        sparsify=lambda delta, index: magnitude(delta, density[index], rescale),
    )

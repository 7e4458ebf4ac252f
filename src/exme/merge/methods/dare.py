"""DARE: drop task-vector entries at random (keeping `density` of them) and rescale the rest;
`dare_linear` sums the results, `dare_ties` adds TIES's sign consensus."""

from __future__ import annotations

import torch

from exme.merge.methods.registry import BasePolicy, Fraction, MethodInputs, PerModel, merge_method
from exme.merge.methods.sparsify import random_drop
from exme.merge.methods.task_vectors import dense, merge_task_vectors

_DARE = {
    "reference_url": "https://arxiv.org/abs/2311.03099",
    "base": BasePolicy.REQUIRED,
    "elementwise": dense,
}


@merge_method(name="dare_linear", pretty_name="Linear DARE", variant={"sign_consensus": False}, **_DARE)
@merge_method(name="dare_ties", pretty_name="DARE TIES", variant={"sign_consensus": True}, **_DARE)
def dare(
    inputs: MethodInputs,
    *,
    weight: PerModel[float],
    density: PerModel[Fraction] = 1.0,
    normalize: bool = False,
    rescale: bool = True,
    lambda_: float = 1.0,
    int8_mask: bool = False,
    sign_consensus: bool,
) -> torch.Tensor:
    return merge_task_vectors(
        inputs,
        weight=weight,
        scale=lambda_,
        normalize=normalize,
        sign_consensus=sign_consensus,
        sparsify=lambda delta, index: random_drop(
            delta, density[index], rescale, inputs.generator_for(index)
        ),
    )

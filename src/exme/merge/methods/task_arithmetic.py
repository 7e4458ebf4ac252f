"""Task arithmetic: add the weighted task vectors θ_i − θ_base to the base."""

from __future__ import annotations

import torch

from exme.merge.methods.registry import BasePolicy, Fraction, MethodInputs, PerModel, merge_method
from exme.merge.methods.task_vectors import merge_task_vectors


@merge_method(
    name="task_arithmetic",
    pretty_name="Task Arithmetic",
    reference_url="https://arxiv.org/abs/2212.04089",
    base=BasePolicy.REQUIRED,
    elementwise=True,
)
def task_arithmetic(
    inputs: MethodInputs,
    *,
    weight: PerModel[float],
    density: PerModel[Fraction] = 1.0,  # density and rescale are accepted, as in mergekit, and
    normalize: bool = False,
    rescale: bool = False,  # have no effect: nothing is dropped
    lambda_: float = 1.0,
    int8_mask: bool = False,  # only shrinks mergekit's mask storage; results are identical
) -> torch.Tensor:
    return merge_task_vectors(inputs, weight=weight, scale=lambda_, normalize=normalize, sign_consensus=False)

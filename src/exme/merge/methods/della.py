"""DELLA: drop task-vector entries at random with a probability falling with their magnitude rank
(density ± epsilon) and rescale the rest; `della` adds TIES's sign consensus, `della_linear` does not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from exme.merge.methods.registry import BasePolicy, Fraction, MethodInputs, PerModel, merge_method
from exme.merge.methods.sparsify import magnitude_ranked_drop
from exme.merge.methods.task_vectors import dense, merge_task_vectors


def _check_epsilon(values: Mapping[str, Any]) -> str | None:
    """The keep probabilities density ± epsilon must lie in (0, 1) (mergekit fails mid-merge)."""
    density, epsilon = values["density"], values["epsilon"]
    if 0 < density < 1 and not (density - epsilon > 0 and density + epsilon < 1):
        return f"density ± epsilon must lie in (0, 1), got density {density:g}, epsilon {epsilon:g}"
    return None


_DELLA = {
    "reference_url": "https://arxiv.org/abs/2406.11617",
    "base": BasePolicy.REQUIRED,
    "elementwise": dense,
    "check_model": _check_epsilon,
}


@merge_method(
    name="della",
    pretty_name="DELLA",
    variant={"sign_consensus": True},
    defaults={"normalize": True},
    **_DELLA,
)
@merge_method(name="della_linear", pretty_name="Linear DELLA", variant={"sign_consensus": False}, **_DELLA)
def della(
    inputs: MethodInputs,
    *,
    weight: PerModel[float],
    density: PerModel[Fraction] = 1.0,
    epsilon: PerModel[Fraction] = 0.15,
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
        sparsify=lambda delta, index: magnitude_ranked_drop(
            delta, density[index], epsilon[index], rescale, inputs.generator_for(index)
        ),
    )

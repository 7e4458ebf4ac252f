"""Model Breadcrumbs: drop each task vector's largest outliers (`gamma`) and its smallest entries,
keeping `density` of them; `breadcrumbs_ties` adds TIES's sign consensus."""

from __future__ import annotations

import torch

from exme.merge.methods.registry import BasePolicy, Fraction, MethodInputs, PerModel, merge_method
from exme.merge.methods.sparsify import magnitude_outliers
from exme.merge.methods.task_vectors import dense, merge_task_vectors

_BREADCRUMBS = {
    "reference_url": "https://arxiv.org/abs/2312.06795",
    "base": BasePolicy.REQUIRED,
    "elementwise": dense,
}


@merge_method(
    name="breadcrumbs", pretty_name="Model Breadcrumbs", variant={"sign_consensus": False}, **_BREADCRUMBS
)
@merge_method(
    name="breadcrumbs_ties",
    pretty_name="Model Breadcrumbs with TIES",
    variant={"sign_consensus": True},
    **_BREADCRUMBS,
)
def breadcrumbs(
    inputs: MethodInputs,
    *,
    weight: PerModel[float],
    density: PerModel[Fraction] = 1.0,
    gamma: PerModel[Fraction] = 0.01,
    normalize: bool = False,
    rescale: bool = False,
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
        sparsify=lambda delta, index: magnitude_outliers(delta, density[index], gamma[index], rescale),
    )

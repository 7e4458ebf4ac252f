"""Passthrough: copy one model's tensors, optionally scaled; with `slices`, it stacks layers."""

from __future__ import annotations

import torch

from exme.merge.methods.registry import MethodInputs, PerModel, merge_method


@merge_method(
    name="passthrough",
    pretty_name="Passthrough",
    max_models=1,
    elementwise=True,
    copies_input=lambda parameters: parameters["scale"] == [None],
)
def passthrough(inputs: MethodInputs, *, scale: PerModel[float | None] = None) -> torch.Tensor:
    (tensor,) = inputs.tensors
    return tensor if scale[0] is None else tensor.mul_(scale[0])

"""RAM and RAM+ (Reinforced Agent Merging): add up the task vectors' entries that moved by more than
`epsilon`, averaging an entry over the models that moved it. RAM+ (tensor-local) scales up each
model's entries that no other model moved, by the share of its moved entries that others moved too,
as a tensor-wide factor 1 + r · min(shared / unshared, alpha)."""

from __future__ import annotations

from typing import Annotated

import torch

from exme.merge.methods.registry import BasePolicy, MethodInputs, Range, merge_method

NonNegative = Annotated[float, Range(0, None)]


def _moved(
    inputs: MethodInputs, epsilon: float
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """The task vectors with their entries of |δ| ≤ epsilon zeroed, each one's 0/1 mask of the
    entries it moved, and how many models moved each entry (at least 1: the average's divisor)."""
    deltas = [tensor.sub_(inputs.base) for tensor in inputs.tensors]
    masks = [delta.abs().gt_(epsilon) for delta in deltas]  # in place on a float: 1.0 or 0.0
    movers = masks[0].clone()
    for mask in masks[1:]:
        movers.add_(mask)
    for delta, mask in zip(deltas, masks, strict=True):
        delta.mul_(mask)
    return deltas, masks, movers.clamp_min_(1)


@merge_method(
    name="ram",
    pretty_name="Reinforced Agent Merging",
    reference_url="https://arxiv.org/abs/2601.13572",
    base=BasePolicy.REQUIRED,
    elementwise=True,
)
def ram(inputs: MethodInputs, *, epsilon: NonNegative = 1e-5) -> torch.Tensor:
    deltas, _masks, movers = _moved(inputs, epsilon)
    merged = deltas[0].div_(movers)
    for delta in deltas[1:]:
        merged.add_(delta.div_(movers))
    return merged.add_(inputs.base)


@merge_method(
    name="ramplus_tl",
    pretty_name="Reinforced Agent Merging Plus (Tensor-Local)",
    reference_url="https://arxiv.org/abs/2601.13572",
    base=BasePolicy.REQUIRED,
)
def ramplus_tl(
    inputs: MethodInputs, *, r: NonNegative = 0.1, alpha: NonNegative = 0.2, epsilon: NonNegative = 1e-5
) -> torch.Tensor:
    deltas, masks, movers = _moved(inputs, epsilon)
    alone = movers == 1
    # Counted exactly, then divided in float32 as mergekit does, so that the factors agree.
    shared = torch.stack([torch.count_nonzero(mask.bool() & ~alone) for mask in masks])
    unshared = torch.stack([torch.count_nonzero(mask.bool() & alone) for mask in masks])
    factors = 1 + r * (shared / unshared.clamp(min=epsilon)).clamp(min=0, max=alpha)
    merged = None
    for delta, factor in zip(deltas, factors.tolist(), strict=True):
        # an entry only this model moved is scaled; one several moved is their average
        scaled = delta * torch.tensor(factor, dtype=delta.dtype)
        term = torch.where(alone, scaled, delta.div_(movers))
        merged = term if merged is None else merged.add_(term)
    return merged.add_(inputs.base)

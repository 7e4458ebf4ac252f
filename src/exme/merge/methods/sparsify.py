"""Task-vector sparsification for TIES (by magnitude) and DARE (random drop), as in mergekit."""

from enum import StrEnum

import torch

# mergekit skips the rescale when either L1 norm is below this, to avoid dividing by ~0.
_RESCALE_EPS = 1e-7


class Sparsification(StrEnum):
    MAGNITUDE = "magnitude"
    RANDOM = "random"


def _masked(delta: torch.Tensor, mask: torch.Tensor, rescale: bool) -> torch.Tensor:
    """Zero the dropped entries; with `rescale`, restore the delta's L1 norm (≈ 1/density)."""
    kept = delta * mask
    if not rescale:
        return kept
    norm_before, norm_after = delta.abs().sum(), kept.abs().sum()
    if norm_before < _RESCALE_EPS or norm_after < _RESCALE_EPS:
        return kept
    return kept * (norm_before / norm_after)


def sparsify(
    delta: torch.Tensor,
    *,
    density: float,
    method: Sparsification,
    rescale: bool,
    generator: torch.Generator,
) -> torch.Tensor:
    if density >= 1:
        return delta
    if method is Sparsification.MAGNITUDE:
        if density <= 0 or delta.numel() == 0:
            return torch.zeros_like(delta)
        keep = max(1, int(density * delta.numel()))
        mask = torch.zeros(delta.numel(), dtype=delta.dtype, device=delta.device)
        # argsort rather than topk: among equal magnitudes (common in bf16) it keeps the same
        # entries as mergekit does.
        mask[torch.argsort(delta.abs().reshape(-1), descending=True)[:keep]] = 1
        return _masked(delta, mask.reshape(delta.shape), rescale)
    keep_mask = torch.rand(delta.shape, generator=generator, device=delta.device) < density
    return _masked(delta, keep_mask, rescale)

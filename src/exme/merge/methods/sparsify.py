"""Task-vector sparsification, as in mergekit: by magnitude (TIES), magnitude without the largest
outliers (Model Breadcrumbs), random drops (DARE) and magnitude-ranked random drops (DELLA).

Top-k by magnitude needs only the k-th largest magnitude, not a sort: it is found by a radix select
on the float bits (two 16-bit histograms), several times faster than mergekit's full argsort. Among
entries whose magnitude equals the k-th largest exactly (common when the inputs are bf16), the
lowest-index ones are kept; mergekit keeps whichever its unstable sort puts first, so the two may
differ in those entries only.
"""

from __future__ import annotations

import torch

# mergekit skips the rescale when either L1 norm is below this, to avoid dividing by ~0.
_RESCALE_EPS = 1e-7
_HALF_BITS = 16
_LOW_MASK = (1 << _HALF_BITS) - 1


def _masked(delta: torch.Tensor, keep: torch.Tensor, rescale: bool) -> torch.Tensor:
    """Zero the dropped entries; with `rescale`, restore the delta's L1 norm (≈ 1/density)."""
    norm_before = delta.abs().sum() if rescale else None
    kept = delta.masked_fill_(~keep, 0)
    if not rescale:
        return kept
    norm_after = kept.abs().sum()
    if norm_before < _RESCALE_EPS or norm_after < _RESCALE_EPS:
        return kept
    return kept.mul_(norm_before / norm_after)


def _kth_largest_bits(bits: torch.Tensor, k: int) -> tuple[int, int]:
    """(bit pattern of the k-th largest of `bits`, how many are strictly larger), for
    non-negative int32 patterns of non-negative floats, whose integer order is their float order."""
    high = bits >> _HALF_BITS
    counts_from_top = torch.bincount(high, minlength=1 << (31 - _HALF_BITS)).flip(0).cumsum(0)
    step = int(torch.searchsorted(counts_from_top, k))
    high_value = len(counts_from_top) - 1 - step
    larger = int(counts_from_top[step - 1]) if step else 0
    low = bits[high == high_value] & _LOW_MASK
    low_counts_from_top = torch.bincount(low, minlength=1 << _HALF_BITS).flip(0).cumsum(0)
    low_step = int(torch.searchsorted(low_counts_from_top, k - larger))
    larger += int(low_counts_from_top[low_step - 1]) if low_step else 0
    return (high_value << _HALF_BITS) | (_LOW_MASK - low_step), larger


def top_k_mask(magnitudes: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest entries of a flat float32 tensor of magnitudes (≥ 0)."""
    if k <= 0:
        return torch.zeros_like(magnitudes, dtype=torch.bool)
    if k >= magnitudes.numel():
        return torch.ones_like(magnitudes, dtype=torch.bool)
    bits = magnitudes.view(torch.int32)
    threshold, larger = _kth_largest_bits(bits, k)
    keep = bits > threshold
    ties = (bits == threshold).nonzero().squeeze(1)
    keep[ties[: k - larger]] = True
    return keep


def _magnitudes(delta: torch.Tensor) -> torch.Tensor:
    return delta.abs().reshape(-1).float()


def magnitude(delta: torch.Tensor, density: float, rescale: bool) -> torch.Tensor:
    """Keep the `density` fraction of largest-magnitude entries (at least one)."""
    if density >= 1:
        return delta
    if density <= 0 or delta.numel() == 0:
        return delta.zero_()
    keep = top_k_mask(_magnitudes(delta), max(1, int(density * delta.numel())))
    return _masked(delta, keep.reshape(delta.shape), rescale)


def magnitude_outliers(delta: torch.Tensor, density: float, gamma: float, rescale: bool) -> torch.Tensor:
    """Drop the `gamma` fraction of largest entries, then the smallest, keeping `density` of them
    (fewer outliers are dropped when both cannot be met)."""
    if density >= 1:
        return delta
    count = delta.numel()
    kept_count = int(density * count)
    dropped_small = max(0, count - kept_count - int(gamma * count))
    magnitudes = _magnitudes(delta)
    keep = top_k_mask(magnitudes, count - dropped_small) & ~top_k_mask(
        magnitudes, count - dropped_small - kept_count
    )
    return _masked(delta, keep.reshape(delta.shape), rescale)


def random_drop(
    delta: torch.Tensor, density: float, rescale: bool, generator: torch.Generator
) -> torch.Tensor:
    """DARE: keep each entry with probability `density`."""
    if density >= 1:
        return delta
    keep = torch.rand(delta.shape, generator=generator, device=delta.device) < density
    return _masked(delta, keep, rescale)


def magnitude_ranked_drop(
    delta: torch.Tensor, density: float, epsilon: float, rescale: bool, generator: torch.Generator
) -> torch.Tensor:
    """DELLA's MagPrune: within each row, keep an entry with a probability rising linearly with its
    magnitude rank from density − ε (smallest) to density + ε (largest)."""
    if density >= 1:
        return delta
    if density <= 0:
        return delta.zero_()
    rows = delta.reshape(1, -1) if delta.dim() < 2 else delta
    columns = rows.shape[1]
    order = rows.abs().argsort(dim=1)
    along_rows = torch.arange(columns, device=delta.device).reshape(1, columns, *[1] * (rows.dim() - 2))
    ranks = torch.empty_like(order).scatter_(1, order, along_rows.expand_as(order))
    position = ranks.to(delta.dtype) / (columns - 1) if columns > 1 else torch.zeros_like(rows)
    probabilities = position.mul_(2 * epsilon).add_(density - epsilon)
    keep = torch.bernoulli(probabilities, generator=generator).bool()
    return _masked(delta, keep.reshape(delta.shape), rescale)

"""Task-vector sparsification, as in mergekit: by magnitude (TIES), magnitude without the largest
outliers (Model Breadcrumbs), random drops (DARE) and magnitude-ranked random drops (DELLA).

Top-k by magnitude needs only the k-th largest magnitude, not a sort: it is found by a radix select
on the float bits (two 16-bit histograms), several times faster than mergekit's full argsort, a
chunk at a time so that no temporary is as large as the tensor. Among entries whose magnitude equals
the k-th largest exactly (common when the inputs are bf16), the lowest-index ones are kept; mergekit
keeps whichever its unstable sort puts first, so the two may differ in those entries only.
"""

from __future__ import annotations

import torch

# mergekit skips the rescale when either L1 norm is below this, to avoid dividing by ~0.
_RESCALE_EPS = 1e-7
_HALF_BITS = 16
_LOW_MASK = (1 << _HALF_BITS) - 1
_MAGNITUDE_BITS = 0x7FFFFFFF


CHUNK = 4 * 2**20  # entries per chunk of the passes over a whole tensor


def chunks(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Views of consecutive pieces of a contiguous tensor, flattened: writing to them writes to it."""
    if not tensor.is_contiguous():
        raise ValueError("chunks() of a non-contiguous tensor would be copies")
    return list(tensor.view(-1).split(CHUNK))


def _l1_norm(tensor: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(tensor, ord=1)


def _masked(delta: torch.Tensor, keep: torch.Tensor, rescale: bool) -> torch.Tensor:
    """Zero the dropped entries; with `rescale`, restore the delta's L1 norm (≈ 1/density)."""
    norm_before = _l1_norm(delta) if rescale else None
    kept = delta.mul_(keep)  # (faster than masked_fill_; the dropped entries become ±0)
    if not rescale:
        return kept
    norm_after = _l1_norm(kept)
    if norm_before < _RESCALE_EPS or norm_after < _RESCALE_EPS:
        return kept
    return kept.mul_(norm_before / norm_after)


def _magnitude_bits(chunk: torch.Tensor) -> torch.Tensor:
    """|chunk| as int32 float32 bit patterns (the sign bit cleared), whose integer order is the
    magnitudes' order."""
    return chunk.float().view(torch.int32) & _MAGNITUDE_BITS


def _counts_from_top(bincounts: torch.Tensor) -> torch.Tensor:
    return bincounts.flip(0).cumsum(0)


def _kth_largest_bits(values: torch.Tensor, k: int) -> tuple[int, int, int]:
    """(bit pattern of the k-th largest magnitude in `values`, how many magnitudes are larger, how
    many are equal to it)."""
    high_counts = torch.zeros(1 << (31 - _HALF_BITS), dtype=torch.int64, device=values.device)
    for chunk in chunks(values):
        high_counts += torch.bincount(_magnitude_bits(chunk) >> _HALF_BITS, minlength=len(high_counts))
    counts_from_top = _counts_from_top(high_counts)
    step = int(torch.searchsorted(counts_from_top, k))
    high_value = len(high_counts) - 1 - step
    larger = int(counts_from_top[step - 1]) if step else 0
    # Low halves of the patterns in that bin, as bins 1 .. 2^16 (0 and 2^16 + 1 gather those below
    # and above it): clamping is much faster than selecting the bin's entries.
    low_counts = torch.zeros((1 << _HALF_BITS) + 2, dtype=torch.int64, device=values.device)
    for chunk in chunks(values):
        in_bin = (_magnitude_bits(chunk) - (high_value << _HALF_BITS)).clamp_(-1, 1 << _HALF_BITS).add_(1)
        low_counts += torch.bincount(in_bin, minlength=len(low_counts))
    low_counts = low_counts[1:-1]
    low_counts_from_top = _counts_from_top(low_counts)
    low_step = int(torch.searchsorted(low_counts_from_top, k - larger))
    larger += int(low_counts_from_top[low_step - 1]) if low_step else 0
    low_value = _LOW_MASK - low_step
    return (high_value << _HALF_BITS) | low_value, larger, int(low_counts[low_value])


def top_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask (flat) of the k entries of largest magnitude in a contiguous tensor."""
    if k <= 0:
        return torch.zeros(values.numel(), dtype=torch.bool, device=values.device)
    if k >= values.numel():
        return torch.ones(values.numel(), dtype=torch.bool, device=values.device)
    threshold, larger, equal = _kth_largest_bits(values, k)
    tied_to_keep = k - larger
    keep = torch.empty(values.numel(), dtype=torch.bool, device=values.device)
    for chunk, chunk_keep in zip(chunks(values), keep.split(CHUNK), strict=True):
        bits = _magnitude_bits(chunk)
        if tied_to_keep in (0, equal):  # no tie, or every remaining one, is kept: one comparison
            (torch.ge if tied_to_keep else torch.gt)(bits, threshold, out=chunk_keep)
            continue
        torch.gt(bits, threshold, out=chunk_keep)
        tied = bits == threshold
        in_chunk = int(torch.count_nonzero(tied))
        if in_chunk > tied_to_keep:  # the first ones only
            tied &= tied.cumsum(0, dtype=torch.int32) <= tied_to_keep
        chunk_keep |= tied
        tied_to_keep, equal = tied_to_keep - min(in_chunk, tied_to_keep), equal - in_chunk
    return keep


def magnitude(delta: torch.Tensor, density: float, rescale: bool) -> torch.Tensor:
    """Keep the `density` fraction of largest-magnitude entries (at least one)."""
    if density >= 1:
        return delta
    if density <= 0 or delta.numel() == 0:
        return delta.zero_()
    keep = top_k_mask(delta, max(1, int(density * delta.numel())))
    return _masked(delta, keep.reshape(delta.shape), rescale)


def magnitude_outliers(delta: torch.Tensor, density: float, gamma: float, rescale: bool) -> torch.Tensor:
    """Drop the `gamma` fraction of largest entries, then the smallest, keeping `density` of them
    (fewer outliers are dropped when both cannot be met)."""
    if density >= 1:
        return delta
    count = delta.numel()
    kept_count = int(density * count)
    dropped_small = max(0, count - kept_count - int(gamma * count))
    keep = top_k_mask(delta, count - dropped_small) & ~top_k_mask(delta, count - dropped_small - kept_count)
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

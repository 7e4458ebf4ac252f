"""Task-vector sparsification, as in mergekit: by magnitude (TIES), magnitude without the largest
outliers (Model Breadcrumbs), random drops (DARE) and magnitude-ranked random drops (DELLA).

Top-k by magnitude needs only the k-th largest magnitude, not a sort: it is found by a radix select
on the float bits (two 16-bit histograms), several times faster than mergekit's full argsort, a
chunk at a time so that no temporary is as large as the tensor. Among entries whose magnitude equals
the k-th largest exactly (common when the inputs are bf16), the lowest-index ones are kept; mergekit
keeps whichever its unstable sort puts first, so the two may differ in those entries only.

Masks are floating-point 0/1 tensors, built with arithmetic (sign, clamp), not comparisons:
multiplying by a boolean mask takes torch's type-promotion path, several times slower on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

# mergekit skips the rescale when either L1 norm is below this, to avoid dividing by ~0.
_RESCALE_EPS = 1e-7
_HALF_BITS = 16
_LOW_MASK = (1 << _HALF_BITS) - 1
_MAGNITUDE_BITS = 0x7FFFFFFF


CHUNK = 2**20  # entries per chunk of the passes over a whole tensor
_TIE_SEARCH_BLOCK = 4096


def chunks(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Views of consecutive pieces of a contiguous tensor, flattened: writing to them writes to it."""
    if not tensor.is_contiguous():
        raise ValueError("chunks() of a non-contiguous tensor would be copies")
    return list(tensor.view(-1).split(CHUNK))


def _l1_norm(tensor: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(tensor, ord=1)


def _masked(delta: torch.Tensor, keep: Iterable[torch.Tensor], rescale: bool) -> torch.Tensor:
    """Zero the dropped entries (`keep`: 0/1 masks of the delta's consecutive chunks); with
    `rescale`, restore the delta's L1 norm (≈ 1/density)."""
    norm_before = _l1_norm(delta) if rescale else None
    for chunk, chunk_keep in zip(chunks(delta), keep, strict=True):
        chunk.mul_(chunk_keep)  # (the dropped entries become ±0)
    if not rescale:
        return delta
    norm_after = _l1_norm(delta)
    if norm_before < _RESCALE_EPS or norm_after < _RESCALE_EPS:
        return delta
    return delta.mul_(norm_before / norm_after)


def _magnitude_bits(chunk: torch.Tensor) -> torch.Tensor:
    """|chunk| as int32 float32 bit patterns (the sign bit cleared), whose integer order is the
    magnitudes' order."""
    return chunk.float().view(torch.int32) & _MAGNITUDE_BITS


@dataclass(frozen=True)
class _Cutoff:
    """Where the top k of a tensor's magnitudes end: the bit pattern of the k-th largest, and how
    many magnitudes are larger than it and equal to it."""

    k: int
    entries: int
    bits: int = 0
    larger: int = 0
    equal: int = 0

    def masks(self, values: torch.Tensor) -> Iterator[torch.Tensor]:
        """The top-k mask of `values` (0/1 in their dtype) a chunk at a time, in order, each made
        when asked for: the values may be changed once their chunk's mask is out."""
        threshold = torch.tensor(self.bits, dtype=torch.int32).view(torch.float32).item()
        tied_to_keep, equal = self.k - self.larger, self.equal
        for chunk in chunks(values):
            if self.k <= 0 or self.k >= self.entries:
                yield torch.full_like(chunk, float(self.k > 0))
            elif tied_to_keep in (0, equal):  # no tie, or every remaining one, is kept: one comparison
                yield _above(chunk, threshold, inclusive=bool(tied_to_keep))
            else:
                tied = _magnitude_bits(chunk) == self.bits
                in_chunk = int(torch.count_nonzero(tied))
                # the tied entries up to `end` are kept (the first `tied_to_keep` of them), not after
                end = _after_nth_true(tied, tied_to_keep) if in_chunk > tied_to_keep else len(chunk)
                yield torch.cat(
                    [
                        _above(chunk[:end], threshold, inclusive=True),
                        _above(chunk[end:], threshold, inclusive=False),
                    ]
                )
                tied_to_keep, equal = tied_to_keep - min(in_chunk, tied_to_keep), equal - in_chunk


def _after_nth_true(flags: torch.Tensor, n: int) -> int:
    """The position just after the n-th True (n ≥ 1) of a flat boolean tensor that has that many:
    counted by blocks, then within the block holding it (a cumulative sum of every entry is slow)."""
    block = _TIE_SEARCH_BLOCK
    whole_blocks = len(flags) // block
    counts = flags[: whole_blocks * block].view(whole_blocks, block).sum(1).cumsum(0)
    index = int(torch.searchsorted(counts, n))  # the first block whose running count reaches n
    before = int(counts[index - 1]) if index else 0
    in_block = flags[index * block : (index + 1) * block].nonzero().squeeze(1)
    return index * block + int(in_block[n - before - 1]) + 1


def _step_from_top(bincounts: torch.Tensor, k: int) -> tuple[int, int]:
    """(the bin holding the k-th largest, counting down from the top bin; how many are above it)."""
    counts_from_top = bincounts.flip(0).cumsum(0)
    step = int(torch.searchsorted(counts_from_top, k))
    return step, int(counts_from_top[step - 1]) if step else 0


def _cutoffs(values: torch.Tensor, ks: list[int]) -> list[_Cutoff]:
    """The cut-offs of top-k selections of a contiguous tensor, found together by a radix select
    on the float bits: one pass histograms the high 16 bits, one the low 16 bits within each bin
    found."""
    entries = values.numel()
    selecting = [k for k in ks if 0 < k < entries]
    if not selecting:
        return [_Cutoff(k, entries) for k in ks]
    high_counts = torch.zeros(1 << (31 - _HALF_BITS), dtype=torch.int64, device=values.device)
    for chunk in chunks(values):
        high_counts += torch.bincount(_magnitude_bits(chunk) >> _HALF_BITS, minlength=len(high_counts))
    high_bins = {}
    for k in selecting:
        step, larger = _step_from_top(high_counts, k)
        high_bins[k] = (len(high_counts) - 1 - step, larger)
    # Low halves of the patterns in each bin, as bins 0 .. 2^16 - 1; every other pattern differs in
    # a high bit and lands in bin 2^16 (clamping is much faster than selecting the bin's entries).
    low_counts = {
        high: torch.zeros((1 << _HALF_BITS) + 1, dtype=torch.int64, device=values.device)
        for high, _ in high_bins.values()
    }
    for chunk in chunks(values):
        bits = _magnitude_bits(chunk)
        for high, counts in low_counts.items():
            in_bin = (bits ^ (high << _HALF_BITS)).clamp_max_(1 << _HALF_BITS)
            counts += torch.bincount(in_bin, minlength=len(counts))
    cutoffs = []
    for k in ks:
        if k not in high_bins:
            cutoffs.append(_Cutoff(k, entries))
            continue
        high, larger = high_bins[k]
        counts = low_counts[high][:-1]
        low_step, larger_in_bin = _step_from_top(counts, k - larger)
        low = _LOW_MASK - low_step
        bits = (high << _HALF_BITS) | low
        cutoffs.append(_Cutoff(k, entries, bits, larger + larger_in_bin, int(counts[low])))
    return cutoffs


def _above(chunk: torch.Tensor, threshold: float, inclusive: bool) -> torch.Tensor:
    """1 where |chunk| > threshold (≥ if `inclusive`), else 0; the sign of |x| − t is exact."""
    difference = torch.abs(chunk.float()).sub_(threshold).sign_()
    kept = difference.add_(1).clamp_max_(1) if inclusive else difference.clamp_min_(0)
    return kept.to(chunk.dtype)


def top_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Mask (flat, in the values' dtype: 1 kept, 0 dropped) of the k entries of largest magnitude
    in a contiguous tensor; among those equal to the k-th largest, the lowest-index ones."""
    (cutoff,) = _cutoffs(values, [k])
    return torch.cat(list(cutoff.masks(values)))


def magnitude(delta: torch.Tensor, density: float, rescale: bool) -> torch.Tensor:
    """Keep the `density` fraction of largest-magnitude entries (at least one)."""
    if density >= 1:
        return delta
    if density <= 0 or delta.numel() == 0:
        return delta.zero_()
    (cutoff,) = _cutoffs(delta, [max(1, int(density * delta.numel()))])
    return _masked(delta, cutoff.masks(delta), rescale)


def magnitude_outliers(delta: torch.Tensor, density: float, gamma: float, rescale: bool) -> torch.Tensor:
    """Drop the `gamma` fraction of largest entries, then the smallest, keeping `density` of them
    (fewer outliers are dropped when both cannot be met)."""
    if density >= 1:
        return delta
    count = delta.numel()
    kept_count = int(density * count)
    dropped_small = max(0, count - kept_count - int(gamma * count))
    upper, outliers = _cutoffs(delta, [count - dropped_small, count - dropped_small - kept_count])
    # the top k of a smaller k are among the top k of a larger one, ties included: the band is
    # the difference of the two masks
    band = (
        upper_keep.sub_(outlier_keep)
        for upper_keep, outlier_keep in zip(upper.masks(delta), outliers.masks(delta), strict=True)
    )
    return _masked(delta, band, rescale)


def random_drop(
    delta: torch.Tensor, density: float, rescale: bool, generator: torch.Generator
) -> torch.Tensor:
    """DARE: keep each entry with probability `density`."""
    if density >= 1:
        return delta
    keep = (  # 1 where the draw < density; drawn a chunk at a time (the same numbers as at once)
        torch.rand(len(chunk), generator=generator, device=delta.device)
        .sub_(density)
        .sign_()
        .neg_()
        .clamp_min_(0)
        for chunk in chunks(delta)
    )
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
    keep = torch.bernoulli(probabilities, generator=generator)
    return _masked(delta, chunks(keep), rescale)

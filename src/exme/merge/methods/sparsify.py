"""Task-vector sparsification, as in mergekit: by magnitude (TIES), magnitude without the largest
outliers (Model Breadcrumbs), random drops (DARE) and magnitude-ranked random drops (DELLA).

Top-k by magnitude needs only the k-th largest magnitude, not a sort: it is found by a radix select
on the float bits (two 16-bit histograms), several times faster than mergekit's full argsort, a
chunk at a time so that no temporary is as large as the tensor; where a sample shows it among a few
distinct magnitudes (bf16 task vectors), one counting pass confirms which, with arithmetic rather
than comparisons (see below), and counts the ties in each chunk. Among entries whose magnitude
equals the k-th largest exactly (common when the inputs are bf16), the lowest-index ones are kept;
mergekit keeps whichever its unstable sort puts first, so the two may differ in those entries only.

Dropping entries is one `hardshrink` (x where |x| > t, else 0) per chunk; masks, where a caller
needs one, are floating-point 0/1 tensors built with arithmetic (sign, clamp), not comparisons:
comparisons yield booleans, slow to make and to count, and multiplying by a boolean mask takes
torch's type-promotion path, several times slower on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy
import torch

# mergekit skips the rescale when either L1 norm is below this, to avoid dividing by ~0.
_RESCALE_EPS = 1e-7
_HALF_BITS = 16
_LOW_MASK = (1 << _HALF_BITS) - 1


# Entries per chunk of the passes over a whole tensor: on the CPU, few enough that a chunk's
# temporaries stay in a core's cache through the ops that use them; on a GPU, enough that kernel
# launches do not dominate.
CHUNK = 2**16
_GPU_CHUNK = 2**24
_TIE_SEARCH_BLOCK = 4096
# A cut-off is first looked for among the magnitudes of a sample of this many, in tensors of at
# least _SAMPLED_MIN_ENTRIES, around the sample's place of the k-th largest, trusted to within
# _SAMPLE_MARGIN standard deviations.
_SAMPLE_SIZE = 2**14
_SAMPLED_MIN_ENTRIES = 2**18
_SAMPLE_MARGIN = 4
# Distinct magnitudes of the samples' windows counted at most: each costs about a tenth of the
# radix select's two passes.
_MAX_SAMPLED_GUESSES = 8
# Top-k cut-offs of at most this share of the entries are selected among gathered candidates:
# gathering costs about half the radix select's two passes.
_CANDIDATE_SHARE = 0.05


def chunks(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Views of consecutive pieces of a contiguous tensor, flattened: writing to them writes to it."""
    if not tensor.is_contiguous():
        raise ValueError("chunks() of a non-contiguous tensor would be copies")
    return list(tensor.view(-1).split(CHUNK if tensor.device.type == "cpu" else _GPU_CHUNK))


def _l1_norm(tensor: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(tensor, ord=1)


def _dropping(delta: torch.Tensor, drop: Callable[[], None], rescale: bool) -> torch.Tensor:
    """The delta after `drop()` zeroes some of its entries in place; with `rescale`, its L1 norm
    restored (≈ 1/density)."""
    norm_before = _l1_norm(delta) if rescale else None
    drop()
    if not rescale:
        return delta
    norm_after = _l1_norm(delta)
    if norm_before < _RESCALE_EPS or norm_after < _RESCALE_EPS:
        return delta
    return delta.mul_(norm_before / norm_after)


def _magnitude_bits(chunk: torch.Tensor) -> torch.Tensor:
    """|chunk| in float32 as int32 bit patterns (abs clears the sign bit), whose integer order is
    the magnitudes' order."""
    return chunk.float().abs().view(torch.int32)


def _float_of_bits(bits: int) -> float:
    return torch.tensor(bits, dtype=torch.int32).view(torch.float32).item()


def _shrink(source: torch.Tensor, threshold: float, out: torch.Tensor) -> None:
    """out = source where |source| > threshold (compared in float32, as the cut-offs are found),
    else 0; `out` may be `source`."""
    if source.dtype == torch.float32:
        torch.ops.aten.hardshrink.out(source, threshold, out=out)
    else:
        kept = torch.nn.functional.hardshrink(source.float(), threshold).abs_().sign_()
        torch.mul(source, kept, out=out)


def _above(chunk: torch.Tensor, threshold: float) -> torch.Tensor:
    """1 where |chunk| > threshold (in float32), else 0, in the chunk's dtype; the sign of |x| − t
    is exact."""
    return torch.abs(chunk.float()).sub_(threshold).sign_().clamp_min_(0).to(chunk.dtype)


@dataclass(frozen=True)
class _Cutoff:
    """Where the top k of a tensor's magnitudes end: the bit pattern of the k-th largest, and how
    many magnitudes are larger than it and equal to it (and, where known, how many are equal to it
    in each chunk). k ≤ 0 is a cut-off above infinity; k ≥ the entries, one at 0 that keeps every
    entry equal to it."""

    k: int
    entries: int
    bits: int = 0
    larger: int = 0
    equal: int = 0
    equal_in_chunks: tuple[int, ...] | None = field(default=None, compare=False)

    def _splits(self, values: torch.Tensor) -> Iterator[tuple[torch.Tensor, int]]:
        """Each chunk of the values, in order, with the position before which entries equal to the
        cut-off are kept (the first k − larger of them in the tensor), each when asked for: the
        values may be changed once their chunk is out."""
        if self.k <= 0:
            tied_to_keep, equal = 0, 0
        elif self.k >= self.entries:
            tied_to_keep, equal = self.entries, self.entries
        else:
            tied_to_keep, equal = self.k - self.larger, self.equal
        threshold = self.threshold
        pieces = chunks(values)
        in_chunks = self.equal_in_chunks or [None] * len(pieces)
        for chunk, known_in_chunk in zip(pieces, in_chunks, strict=True):
            if tied_to_keep in (0, equal):  # no tie, or every remaining one, is kept
                yield chunk, len(chunk) if tied_to_keep else 0
                continue
            if known_in_chunk is not None and known_in_chunk <= tied_to_keep:
                yield chunk, len(chunk)
                in_chunk = known_in_chunk
            else:
                tied = chunk.float().abs() == threshold
                in_chunk = known_in_chunk if known_in_chunk is not None else int(torch.count_nonzero(tied))
                yield chunk, _after_nth_true(tied, tied_to_keep) if in_chunk > tied_to_keep else len(chunk)
            tied_to_keep, equal = tied_to_keep - min(in_chunk, tied_to_keep), equal - in_chunk

    @property
    def threshold(self) -> float:
        if self.k <= 0:
            return math.inf
        return 0.0 if self.k >= self.entries else _float_of_bits(self.bits)

    @property
    def _just_below(self) -> float:
        """The float32 just below the threshold: |x| > it ⟺ |x| ≥ the threshold."""
        return torch.nextafter(*torch.tensor([self.threshold, -1.0], dtype=torch.float32)).item()

    def kept(self, values: torch.Tensor, in_place: bool) -> Iterator[torch.Tensor]:
        """The values of the top k, 0 elsewhere, a chunk at a time: written into the values if
        `in_place`, else new tensors (or the values' own chunks, where nothing is dropped)."""
        threshold, just_below = self.threshold, self._just_below
        if threshold == 0 and self.k > 0:  # only zeros may be dropped, which changes no value
            yield from chunks(values)
            return
        for chunk, end in self._splits(values):
            out = chunk if in_place else torch.empty_like(chunk)
            if end:
                _shrink(chunk[:end], just_below, out[:end])
            if end < len(chunk):
                _shrink(chunk[end:], threshold, out[end:])
            yield out

    def masks(self, values: torch.Tensor) -> Iterator[torch.Tensor]:
        """The top-k mask of the values (0/1 in their dtype) a chunk at a time."""
        threshold, just_below = self.threshold, self._just_below
        for chunk, end in self._splits(values):
            yield torch.cat([_above(chunk[:end], just_below), _above(chunk[end:], threshold)])


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


def _count_into(counts: torch.Tensor, bins: torch.Tensor) -> None:
    """counts[b] += how many of `bins` are b. (bincount would allocate its counts and scan for the
    bins' range on every call, which costs more than the counting on a small chunk.)"""
    counts.index_add_(0, bins, counts.new_ones(()).expand(len(bins)))


def _step_from_top(bincounts: torch.Tensor, k: int) -> tuple[int, int]:
    """(the bin holding the k-th largest, counting down from the top bin; how many are above it)."""
    counts_from_top = bincounts.flip(0).cumsum(0)
    step = int(torch.searchsorted(counts_from_top, k))
    return step, int(counts_from_top[step - 1]) if step else 0


def _cutoffs(values: torch.Tensor, ks: list[int]) -> list[_Cutoff]:
    """The cut-offs of top-k selections of a contiguous tensor: in a large tensor, first from a
    sample (see _sampled_cutoffs), else, or where the sample misled, by a radix select."""
    entries = values.numel()
    selecting = [k for k in ks if 0 < k < entries]
    found = _sampled_cutoffs(values, selecting) if entries >= _SAMPLED_MIN_ENTRIES and selecting else {}
    missing = [k for k in selecting if k not in found]
    if missing:
        found.update(_radix_cutoffs(values, missing))
    return [found.get(k, _Cutoff(k, entries)) for k in ks]


class _Sample:
    """Magnitudes (as float32 bit patterns) of a seeded random sample of a tensor's entries, sorted;
    any sample gives exact cut-offs, as every guess it suggests is then confirmed by counting."""

    def __init__(self, values: torch.Tensor) -> None:
        self.entries = values.numel()
        generator = torch.Generator(values.device).manual_seed(0)
        picks = torch.randint(self.entries, (_SAMPLE_SIZE,), generator=generator, device=values.device)
        # sorted by numpy: torch's CPU sort of a small array is an order of magnitude slower
        self.bits = numpy.sort(_magnitude_bits(values.view(-1)[picks]).cpu().numpy())

    def window(self, k: int) -> numpy.ndarray:
        """The sorted sample's entries around the k-th largest's place, within its margin."""
        rank = (self.entries - k) / self.entries * _SAMPLE_SIZE
        spread = _SAMPLE_MARGIN * math.sqrt(rank * (1 - rank / _SAMPLE_SIZE)) + 1
        lowest, highest = max(0, math.floor(rank - spread)), min(_SAMPLE_SIZE - 1, math.ceil(rank + spread))
        return self.bits[lowest : highest + 1]


def _sampled_cutoffs(
    values: torch.Tensor, ks: list[int], sample: _Sample | None = None
) -> dict[int, _Cutoff]:
    """Cut-offs found in one pass over the values, where a random sample of their magnitudes
    shows about where each k-th largest lies; a radix select makes two. Where the sample's window
    around the k-th largest's place holds a few distinct magnitudes (most bf16 task vectors:
    fine-tuning moves a weight a few bf16 steps), the pass counts the magnitudes above and equal
    to each, and one of them is confirmed as the k-th largest. Else, for a small k (Breadcrumbs'
    outliers), the pass gathers every magnitude from the window's lowest up (a few more than k)
    and the k-th largest is selected among them. The cut-offs not confirmed are left out."""
    sample = sample or _Sample(values)
    windows: dict[int, list[int]] = {}
    guesses: set[int] = set()
    for k in ks:
        in_window = numpy.unique(sample.window(k)).tolist()
        if len(guesses.union(in_window)) <= _MAX_SAMPLED_GUESSES:
            windows[k] = in_window
            guesses.update(in_window)
    small = [k for k in ks if k not in windows and k <= _CANDIDATE_SHARE * sample.entries]
    bound = min((int(sample.window(k)[0]) for k in small), default=None)
    capacity = 0 if bound is None else _candidate_capacity(sample, bound)
    counted = _counting_pass(values, sorted(guesses), bound, capacity) if guesses or small else None
    if counted is None:
        return {}
    counts, gathered = counted
    cutoffs = {}
    for k, window in windows.items():
        for bits in window:
            larger, equal_in_chunks = counts[bits]
            equal = sum(equal_in_chunks)
            if larger < k <= larger + equal:
                cutoffs[k] = _Cutoff(k, sample.entries, bits, larger, equal, equal_in_chunks)
    candidates = torch.cat(gathered) if gathered else None
    for k in small:
        if candidates is None or len(candidates) < k:  # more than room for, or fewer than k
            continue
        bits = candidates.kthvalue(len(candidates) - k + 1).values
        equal_in_chunks = tuple(torch.stack([(chunk == bits).sum() for chunk in gathered]).tolist())
        larger = int((candidates > bits).sum())
        cutoffs[k] = _Cutoff(k, sample.entries, int(bits), larger, sum(equal_in_chunks), equal_in_chunks)
    return cutoffs


def _candidate_capacity(sample: _Sample, bound: int) -> int:
    """Room for the magnitudes of at least `bound`: twice the share the sample shows, and more."""
    share = (len(sample.bits) - numpy.searchsorted(sample.bits, bound)) / len(sample.bits)
    return min(sample.entries, int(2 * share * sample.entries) + 2 * CHUNK)


def _counting_pass(
    values: torch.Tensor, guesses: list[int], bound: int | None, capacity: int
) -> tuple[dict[int, tuple[int, tuple[int, ...]]], list[torch.Tensor] | None] | None:
    """One pass over the values: for each guessed magnitude (a float32 bit pattern) how many are
    larger than it and, in each chunk, equal to it; and each chunk's magnitudes of at least
    `bound`, as bit patterns (None if more than `capacity`). Counted from s = sign(|x| − g):
    Σ s = larger − smaller and Σ s² = larger + smaller (sums of small integers, exact in float32;
    several times faster than comparisons, which yield bools). None if the values hold a NaN or an
    infinity (sign(NaN) is 0: it would count as equal)."""
    thresholds = [_float_of_bits(bits) for bits in guesses]
    lowest = None if bound is None else _float_of_bits(bound)
    sums: list[torch.Tensor] = []  # per chunk: Σ |x|, then Σ s and Σ s² for each guess
    # Gathered into one buffer: kept as a small tensor per chunk, they raised a merge's peak memory
    # (in the C allocator's heap) by more than their size.
    gathered = torch.empty(capacity if lowest is not None else 0, dtype=torch.int32, device=values.device)
    gathered_in_chunks: list[int] | None = []  # None once they overflow the buffer
    filled = 0
    for chunk in chunks(values):
        magnitudes = chunk.float().abs()
        in_chunk = [magnitudes.sum()]
        for threshold in thresholds:
            signs = magnitudes.sub(threshold).sign_()
            in_chunk += [signs.sum(), torch.dot(signs, signs)]
        sums.append(torch.stack(in_chunk))
        if lowest is not None and gathered_in_chunks is not None:
            picked = magnitudes[magnitudes >= lowest].view(torch.int32)
            if filled + len(picked) > capacity:
                gathered_in_chunks = None
            else:
                gathered[filled : filled + len(picked)] = picked
                gathered_in_chunks.append(len(picked))
                filled += len(picked)
    total, *per_guess = torch.stack(sums).T.tolist()
    if not math.isfinite(sum(total)):
        return None
    lengths = [len(chunk) for chunk in chunks(values)]
    counts = {}
    for bits, signed, nonzero in zip(guesses, per_guess[::2], per_guess[1::2], strict=True):
        equal_in_chunks = tuple(length - round(n) for length, n in zip(lengths, nonzero, strict=True))
        counts[bits] = (round((sum(signed) + sum(nonzero)) / 2), equal_in_chunks)
    if lowest is None or gathered_in_chunks is None:
        return counts, None
    return counts, list(gathered[:filled].split(gathered_in_chunks))


def _radix_cutoffs(values: torch.Tensor, ks: list[int]) -> dict[int, _Cutoff]:
    """Cut-offs by a radix select on the float bits, found together: one pass histograms the high
    16 bits, one the low 16 bits within each bin found (0 < k < the entries)."""
    entries = values.numel()
    high_counts = torch.zeros(1 << (31 - _HALF_BITS), dtype=torch.int64, device=values.device)
    for chunk in chunks(values):
        _count_into(high_counts, _magnitude_bits(chunk).bitwise_right_shift_(_HALF_BITS))
    high_bins = {}
    for k in ks:
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
            _count_into(counts, (bits ^ (high << _HALF_BITS)).clamp_max_(1 << _HALF_BITS))
    cutoffs = {}
    for k, (high, larger) in high_bins.items():
        counts = low_counts[high][:-1]
        low_step, larger_in_bin = _step_from_top(counts, k - larger)
        low = _LOW_MASK - low_step
        bits = (high << _HALF_BITS) | low
        cutoffs[k] = _Cutoff(k, entries, bits, larger + larger_in_bin, int(counts[low]))
    return cutoffs


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

    def keep_top() -> None:
        for _ in cutoff.kept(delta, in_place=True):  # each chunk is written as it is made
            pass

    return _dropping(delta, keep_top, rescale)


def magnitude_outliers(delta: torch.Tensor, density: float, gamma: float, rescale: bool) -> torch.Tensor:
    """Drop the `gamma` fraction of largest entries, then the smallest, keeping `density` of them
    (fewer outliers are dropped when both cannot be met)."""
    if density >= 1:
        return delta
    count = delta.numel()
    kept_count = int(density * count)
    dropped_small = max(0, count - kept_count - int(gamma * count))
    upper, outliers = _cutoffs(delta, [count - dropped_small, count - dropped_small - kept_count])

    def keep_band() -> None:
        # the top k of a smaller k are among the top k of a larger one, ties included: the band is
        # the difference of the two selections' values (each chunk's outliers taken first, as the
        # wider selection then overwrites it)
        pieces = zip(outliers.kept(delta, in_place=False), upper.kept(delta, in_place=True), strict=True)
        for outliers_kept, upper_kept in pieces:
            upper_kept.sub_(outliers_kept)

    return _dropping(delta, keep_band, rescale)


def random_drop(
    delta: torch.Tensor, density: float, rescale: bool, generator: torch.Generator
) -> torch.Tensor:
    """DARE: keep each entry with probability `density`, drawn from the generator on its device
    (the same mask on any device from a CPU generator; a GPU merge then waits on one CPU core's
    draw, copied over a chunk at a time)."""
    if density >= 1:
        return delta

    def drop() -> None:  # drawn a chunk at a time: the same numbers as one draw
        for chunk in chunks(delta):
            # drawn on the generator's device (a no-op move where it is the delta's)
            draws = torch.rand(len(chunk), generator=generator, device=generator.device)
            chunk.mul_(draws.to(delta.device).lt_(density))  # 1 where the draw < density: a float mask

    return _dropping(delta, drop, rescale)


def magnitude_ranked_drop(
    delta: torch.Tensor, density: float, epsilon: float, rescale: bool, generator: torch.Generator
) -> torch.Tensor:
    """DELLA's MagPrune: within each row, keep an entry with a probability rising linearly with its
    magnitude rank from density − ε (smallest) to density + ε (largest); drawn from the generator
    on its device, as in random_drop."""
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
    keep = torch.bernoulli(probabilities.to(generator.device), generator=generator).to(delta.device)
    return _dropping(delta, lambda: delta.mul_(keep.view_as(delta)), rescale)

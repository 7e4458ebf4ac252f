"""Sparsification: the top-k selection without a sort, Model Breadcrumbs' band, DELLA's ranked drops."""

from __future__ import annotations

import pytest
import torch

import exme.merge.methods.sparsify as sparsify
from exme.merge.methods.sparsify import magnitude_outliers, magnitude_ranked_drop, top_k_mask


def _argsort_mask(magnitudes: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.zeros_like(magnitudes, dtype=torch.bool)
    mask[torch.argsort(magnitudes, descending=True)[:k]] = True
    return mask


@pytest.mark.parametrize("k", [1, 17, 500, 999, 1000])
def test_top_k_without_ties_is_what_a_sort_gives(k):
    magnitudes = torch.randn(1000, generator=torch.Generator().manual_seed(k)).abs()
    assert torch.equal(top_k_mask(magnitudes, k), _argsort_mask(magnitudes, k))


@pytest.mark.parametrize(("k", "entries"), [(3, 5000), (400, 5000), (4000, 5000), (30_000, 50_000)])
def test_top_k_with_ties_keeps_the_lowest_indices_among_them(k, entries):
    """bf16 values tie often: all above the cut-off are kept, none below, k in all (the last case
    finds the last tie kept among many blocks of the tie search)."""
    magnitudes = (
        (torch.randn(entries, generator=torch.Generator().manual_seed(k)) * 0.02).bfloat16().float().abs()
    )
    mask = top_k_mask(magnitudes, k)
    threshold = magnitudes.kthvalue(len(magnitudes) - k + 1).values
    assert int(mask.sum()) == k
    assert mask[magnitudes > threshold].all() and not mask[magnitudes < threshold].any()
    tied = (magnitudes == threshold).nonzero().squeeze(1)
    kept = int(mask[tied].sum())
    assert mask[tied[:kept]].all() and not mask[tied[kept:]].any()


def test_top_k_edge_cases():
    zeros = torch.zeros(10)
    assert int(top_k_mask(zeros, 4).sum()) == 4 and top_k_mask(zeros, 4)[:4].all()
    assert not top_k_mask(zeros, 0).any() and top_k_mask(zeros, 10).all()
    huge = torch.tensor([3e38, 0.0, float("inf"), 1e-45])
    assert torch.equal(top_k_mask(huge, 2), torch.tensor([True, False, True, False]))


@pytest.fixture(scope="module")
def bf16_task_vector() -> torch.Tensor:
    """Fine-tuning's few-bf16-steps changes, over five CPU chunks."""
    entries = 2**18 + 3
    generator = torch.Generator().manual_seed(0)
    base = (torch.randn(entries, generator=generator) * 0.02).bfloat16().float()
    return (base + torch.randn(entries, generator=generator) * 2e-4).bfloat16().float() - base


@pytest.mark.parametrize(
    ("density", "sampled"), [(0.001, True), (0.01, True), (0.5, True), (0.7, False), (0.99, True)]
)
def test_cutoffs_confirmed_among_sampled_magnitudes_are_the_radix_selects(bf16_task_vector, density, sampled):
    """In a bf16 task vector the k-th largest magnitude is mostly one of a few values around its
    place in the sample (at 0.99, zero), or (a small k, 0.001) among the few magnitudes above the
    sample's bound: one pass confirms it, and it is what the radix select finds, down to the ties
    in each chunk. Not where the k-th largest of a large k falls between two sampled magnitudes
    (0.7): that is left to the radix select."""
    k = int(density * len(bf16_task_vector))
    found = sparsify._sampled_cutoffs(bf16_task_vector, [k])
    assert found == (sparsify._radix_cutoffs(bf16_task_vector, [k]) if sampled else {})
    if sampled:
        magnitudes = bf16_task_vector.abs()
        in_chunks = [int((chunk == found[k].threshold).sum()) for chunk in sparsify.chunks(magnitudes)]
        assert found[k].equal_in_chunks == tuple(in_chunks)


def test_sampled_cutoffs_are_declined_for_continuous_or_non_finite_values(bf16_task_vector):
    k = len(bf16_task_vector) // 2
    continuous = torch.randn(len(bf16_task_vector), generator=torch.Generator().manual_seed(1))
    assert sparsify._sampled_cutoffs(continuous, [k]) == {}
    for bad in (float("nan"), float("inf")):  # sign(NaN) is 0: a NaN would count as a tie
        with_bad = bf16_task_vector.clone()
        with_bad[5] = bad
        assert sparsify._sampled_cutoffs(with_bad, [k]) == {}
        assert sparsify._sampled_cutoffs(with_bad, [k // 100]) == {}


@pytest.mark.parametrize("share", [0.0005, 0.01, 0.04])
@pytest.mark.parametrize("kind", ["bf16 task vector", "continuous"])
def test_small_top_k_cutoffs_selected_among_gathered_candidates_are_the_radix_selects(
    bf16_task_vector, share, kind
):
    """Breadcrumbs' outliers: the few magnitudes above the sample's bound hold the k-th largest,
    and counting among them gives the radix select's cut-off, down to the ties in each chunk."""
    values = bf16_task_vector if kind == "bf16 task vector" else torch.randn(len(bf16_task_vector))
    k = int(share * len(values))
    found = sparsify._sampled_cutoffs(values, [k])
    assert found == sparsify._radix_cutoffs(values, [k])
    in_chunks = [int((chunk == found[k].threshold).sum()) for chunk in sparsify.chunks(values.abs())]
    assert found[k].equal_in_chunks == tuple(in_chunks)


def test_candidates_are_declined_where_the_sample_overestimates_the_cutoff(bf16_task_vector):
    k = len(bf16_task_vector) // 100
    sample = sparsify._Sample(bf16_task_vector)
    sample.bits = sample.bits.copy()
    sample.bits[-2000:] = sample.bits[-1]  # as if the sample had seen only the very largest
    assert sparsify._sampled_cutoffs(bf16_task_vector, [k], sample) == {}


def test_top_k_keeps_the_first_ties_whichever_way_the_cutoff_was_found(bf16_task_vector, monkeypatch):
    """The per-chunk tie counts of a sampled cut-off place the split where the tie search would."""
    ks = [len(bf16_task_vector) // 2, len(bf16_task_vector) // 100]  # sampled ties; candidates
    sampled = [top_k_mask(bf16_task_vector, k) for k in ks]
    monkeypatch.setattr(sparsify, "_SAMPLED_MIN_ENTRIES", len(bf16_task_vector) + 1)
    assert all(
        torch.equal(mask, top_k_mask(bf16_task_vector, k)) for mask, k in zip(sampled, ks, strict=True)
    )


def test_breadcrumbs_drops_the_largest_outliers_and_the_smallest():
    delta = torch.arange(1, 101, dtype=torch.float32) * torch.tensor([1.0, -1.0]).repeat(50)
    kept = magnitude_outliers(delta.clone(), density=0.3, gamma=0.1, rescale=False) != 0
    assert kept.nonzero().squeeze(1).tolist() == list(range(60, 90))  # magnitudes 61..90


@pytest.fixture(scope="module")
def rows() -> torch.Tensor:
    return torch.randn(64, 2048, generator=torch.Generator().manual_seed(0))  # not the masks' seed


def _della(rows: torch.Tensor, seed: int = 7, rescale: bool = False) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return magnitude_ranked_drop(rows.clone(), density=0.5, epsilon=0.2, rescale=rescale, generator=generator)


def test_della_keeps_density_of_entries_more_often_the_larger_they_are(rows):
    kept = _della(rows) != 0
    assert abs(kept.float().mean().item() - 0.5) < 0.01
    ranks = rows.abs().argsort(dim=1).argsort(dim=1)
    smallest, largest = kept[ranks < 205], kept[ranks >= 2048 - 205]  # lowest and highest tenth
    assert abs(smallest.float().mean().item() - 0.32) < 0.02  # density − ε + 2ε · (rank ≈ 5%)
    assert abs(largest.float().mean().item() - 0.68) < 0.02


def test_della_rescale_restores_the_l1_norm_and_masks_follow_the_seed(rows):
    rescaled = _della(rows, rescale=True)
    assert rescaled.abs().sum().item() == pytest.approx(rows.abs().sum().item(), rel=1e-5)
    assert torch.equal(_della(rows, seed=3), _della(rows, seed=3))
    assert not torch.equal(_della(rows, seed=3), _della(rows, seed=4))


def test_passes_a_chunk_at_a_time_give_what_one_chunk_gives(monkeypatch):
    """Whole-tensor passes go a chunk at a time; ties at the cut-off may straddle chunks, and
    DARE's random numbers are drawn a chunk at a time."""
    from exme.merge.methods.registry import MethodInputs, get_method

    generator = torch.Generator().manual_seed(1)
    base = (torch.randn(300, 70, generator=generator) * 0.02).bfloat16().float()
    tuned = [(base + torch.randn(300, 70, generator=generator) * 0.01).bfloat16().float() for _ in range(3)]

    def merge(method: str, **parameters) -> torch.Tensor:
        inputs = MethodInputs("w", [t.clone() for t in tuned], base.clone(), lambda i: torch.Generator())
        return get_method(method)(inputs, weight=[0.5, 0.3, 0.2], normalize=True, rescale=True,
                                  int8_mask=False, **{"lambda": 1.0}, **parameters)  # fmt: skip

    cases = {"ties": {"density": [0.3, 0.5, 0.7]},
             "breadcrumbs_ties": {"density": [0.3, 0.5, 0.7], "gamma": [0.05, 0.1, 0.0]},
             "dare_ties": {"density": [0.3, 0.5, 0.7]}}  # fmt: skip
    whole = {method: merge(method, **parameters) for method, parameters in cases.items()}
    monkeypatch.setattr(sparsify, "CHUNK", 999)
    for method, parameters in cases.items():
        assert torch.equal(merge(method, **parameters), whole[method]), method

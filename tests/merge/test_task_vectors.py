"""The shared body of the task-vector methods against mergekit's formulas, written out here."""

from __future__ import annotations

import pytest
import torch

import exme.merge.methods.sparsify as sparsify
from exme.errors import ExmeError
from exme.merge.methods.registry import MethodInputs, get_method, merge_method
from exme.merge.methods.sparsify import magnitude, magnitude_outliers, top_k_mask
from exme.merge.methods.task_vectors import merge_task_vectors


def _mergekit_formula(base, tuned, weight, scale, normalize, sign_consensus):
    """mergekit 0.1.5's generalized task arithmetic: products w_i δ_i, the sign-consensus mask
    (sign(w_i δ_i) = the sign of their sum, ≥ 0 counted as +), the divisor guard |Σ| < 1e-8 → 1."""
    weights = torch.tensor(weight, dtype=torch.float32).view(-1, 1)
    weighted = torch.stack([t - base for t in tuned]) * weights
    mask = torch.ones_like(weighted)
    if sign_consensus:
        majority = (weighted.sum(dim=0) >= 0).float() * 2 - 1
        mask = (weighted.sign() == majority).float()
    merged = (weighted * mask).sum(dim=0)
    if normalize:
        divisor = (weights * mask).sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
        merged /= divisor
    return base + merged * scale


@pytest.mark.parametrize("sign_consensus", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize(
    ("weight", "scale"),
    [([0.7, 0.5], 1.0), ([0.7, -0.4], 1.0), ([1e-9, 0.6, 0.3], 1.0), ([0.5, 0.5], 0.8), ([-0.5, -0.25], 1.0)],
)
def test_merge_task_vectors_is_mergekit_formula(weight, scale, normalize, sign_consensus):
    """On bf16-valued tensors (many exact ties and cancellations), within fp32 rounding, and over
    several chunks."""
    generator = torch.Generator().manual_seed(len(weight))
    base = (torch.randn(3 * sparsify.CHUNK + 5, generator=generator) * 0.02).bfloat16().float()
    tuned = [(base + torch.randn(len(base), generator=generator) * 3e-4).bfloat16().float() for _ in weight]
    expected = _mergekit_formula(base, tuned, weight, scale, normalize, sign_consensus)
    inputs = MethodInputs("w", [t.clone() for t in tuned], base.clone(), lambda index: torch.Generator())
    merged = merge_task_vectors(
        inputs, weight=weight, scale=scale, normalize=normalize, sign_consensus=sign_consensus
    )
    torch.testing.assert_close(merged, expected, rtol=0, atol=1e-7)


def _bf16_delta(entries: int, dtype: torch.dtype) -> torch.Tensor:
    """A fine-tune's task vector in bf16: many zeros and many ties."""
    generator = torch.Generator().manual_seed(entries)
    base = (torch.randn(entries, generator=generator) * 0.02).bfloat16().float()
    tuned = (base + torch.randn(entries, generator=generator) * 2e-4).bfloat16().float()
    return (tuned - base).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("density", [0.05, 0.5, 0.95])
@pytest.mark.parametrize(("entries", "chunk"), [(5000, None), (5000, 97), (300_000, None)])
def test_magnitude_keeps_the_values_the_top_k_mask_selects(monkeypatch, dtype, density, entries, chunk):
    """Dropping by value (hardshrink) keeps what the mask keeps, ties straddling chunks included;
    at density 0.95 the cut-off is 0 (a fifth of the entries are exact zeros). The larger tensor's
    cut-offs are found among the ties a sample shows."""
    delta = _bf16_delta(entries, dtype)
    assert (delta == 0).float().mean() > 0.1
    expected = delta * top_k_mask(delta, max(1, int(density * len(delta))))
    if chunk:
        monkeypatch.setattr(sparsify, "CHUNK", chunk)
    assert torch.equal(magnitude(delta.clone(), density, rescale=False), expected)


@pytest.mark.parametrize("chunk", [None, 97])
@pytest.mark.parametrize(("density", "gamma"), [(0.5, 0.1), (0.9, 0.01), (0.3, 0.0)])
def test_breadcrumbs_band_is_the_difference_of_two_top_k_masks(monkeypatch, chunk, density, gamma):
    delta = _bf16_delta(5000, torch.float32)
    count = len(delta)
    dropped_small = count - int(density * count) - int(gamma * count)
    band = top_k_mask(delta, count - dropped_small) - top_k_mask(
        delta, count - dropped_small - int(density * count)
    )
    if chunk:
        monkeypatch.setattr(sparsify, "CHUNK", chunk)
    assert torch.equal(magnitude_outliers(delta.clone(), density, gamma, rescale=False), delta * band)


@pytest.mark.parametrize(
    ("plain", "with_ties", "ties_normalizes"),
    [
        ("breadcrumbs", "breadcrumbs_ties", False),
        ("dare_linear", "dare_ties", False),
        ("della_linear", "della", True),
    ],
)
def test_a_family_s_variants_share_their_parameters_as_in_mergekit(plain, with_ties, ties_normalizes):
    """One declaration per family: its variants take the same recipe parameters (sign consensus is the
    variant, not a parameter), with mergekit's defaults (della alone normalizes by default)."""
    plain, with_ties = get_method(plain), get_method(with_ties)
    assert [p.name for p in plain.parameters] == [p.name for p in with_ties.parameters]
    assert plain.parameter("sign_consensus") is None
    assert plain.parameter("normalize").default is False
    assert with_ties.parameter("normalize").default is ties_normalizes
    pairs = zip(plain.parameters, with_ties.parameters, strict=True)
    assert all(p == q for p, q in pairs if p.name != "normalize")


def test_a_variant_naming_no_keyword_of_its_function_is_refused():
    def method(inputs: MethodInputs, *, weight: float) -> torch.Tensor:
        return inputs.base

    with pytest.raises(TypeError, match="has no keyword argument sign_consensus"):
        merge_method(name="misdeclared", pretty_name="Misdeclared", variant={"sign_consensus": True})(method)
    with pytest.raises(ExmeError, match="unknown merge_method"):  # nothing was registered
        get_method("misdeclared")

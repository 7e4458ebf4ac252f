"""RAM, RAM+ and Arcee Fusion give their formulas on hand-made tensors (parity with mergekit on
tiny models is in test_mergekit_parity.py)."""

from __future__ import annotations

import pytest
import torch

from exme.errors import ExmeError
from exme.merge.methods.registry import MethodInputs, get_method
from exme.merge.recipe import recipe_from_dict

BASE = torch.tensor([1.0, 1.0, 1.0, 1.0])
# entry 0 moved by both, 1 by the second model only, 2 by the first only, 3 by neither (≤ epsilon)
MOVED_A = BASE + torch.tensor([0.5, 0.0, 0.2, 1e-6])
MOVED_B = BASE + torch.tensor([0.3, 0.4, 0.0, 1e-6])


def _merge(method: str, tensors: list[torch.Tensor], base: torch.Tensor = BASE, **parameters) -> torch.Tensor:
    inputs = MethodInputs("t", [t.clone() for t in tensors], base.clone(), lambda _: torch.Generator())
    return get_method(method)(inputs, **parameters)


def test_ram_averages_each_entry_over_the_models_that_moved_it():
    merged = _merge("ram", [MOVED_A, MOVED_B], epsilon=1e-5)
    torch.testing.assert_close(merged, BASE + torch.tensor([0.4, 0.4, 0.2, 0.0]), rtol=0, atol=1e-6)


def test_ramplus_scales_unshared_entries_by_the_shared_share():
    # each model: one entry shared, one its own -> 1 + r min(1 / 1, alpha) = 1 + 1 * 0.5
    merged = _merge("ramplus_tl", [MOVED_A, MOVED_B], epsilon=1e-5, r=1.0, alpha=0.5)
    torch.testing.assert_close(merged, BASE + torch.tensor([0.4, 0.6, 0.3, 0.0]), rtol=0, atol=1e-6)


def test_ramplus_without_unshared_entries_caps_the_factor_at_alpha():
    both = BASE + torch.tensor([0.5, 0.5, 0.0, 0.0])
    only_a = BASE + torch.tensor([0.0, 0.0, 0.2, 0.0])  # its own entry scaled by 1 + 0.1 * 0.2
    merged = _merge("ramplus_tl", [both, both, only_a], epsilon=1e-5)
    torch.testing.assert_close(merged, BASE + torch.tensor([0.5, 0.5, 0.2, 0.0]), rtol=0, atol=1e-6)
    merged = _merge("ramplus_tl", [both + torch.tensor([0, 0, 0, 0.1]), both], epsilon=1e-5)
    # the first has 2 shared, 1 own entry: factor 1 + 0.1 min(2, 0.2) = 1.02
    torch.testing.assert_close(merged[3], BASE[3] + 0.1 * 1.02, rtol=0, atol=1e-6)


def test_arcee_fusion_keeps_only_outlying_changes():
    # one row: its KL divergence scales every importance alike, so the cut is on |delta|:
    # quartiles 0.2, 0.3, 0.4 -> threshold 0.3 + 1.5 * 0.2 = 0.6; only the change of 5 is kept
    base = torch.zeros(5)
    tuned = torch.tensor([0.1, -0.2, 0.3, 0.4, 5.0])
    merged = _merge("arcee_fusion", [tuned], base=base)
    torch.testing.assert_close(merged, torch.tensor([0.0, 0.0, 0.0, 0.0, 5.0]), rtol=0, atol=0)


def test_arcee_fusion_takes_one_model_and_a_base(family):
    recipe = {"merge_method": "arcee_fusion", "base_model": str(family.base),
              "models": [{"model": str(family.ft_a)}, {"model": str(family.ft_b)}]}  # fmt: skip
    with pytest.raises(ExmeError, match="arcee_fusion"):
        recipe_from_dict(recipe)


def test_ram_refuses_a_negative_epsilon(family):
    recipe = {"merge_method": "ram", "base_model": str(family.base),
              "models": [{"model": str(family.ft_a)}], "parameters": {"epsilon": -1}}  # fmt: skip
    with pytest.raises(ExmeError, match="epsilon"):
        recipe_from_dict(recipe)

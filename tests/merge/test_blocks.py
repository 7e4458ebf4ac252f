"""The engine's scheduling: reads run ahead within a byte budget, blocks are merged in parallel on
the CPU, and neither changes a merged value."""

from __future__ import annotations

import threading

import pytest
import torch

from exme.merge import blocks, runtime
from exme.merge.execute import build_state_dict
from exme.merge.recipe import recipe_from_dict
from exme.merge.runtime import prefetched


@pytest.mark.parametrize("held", [1, 2, 3])
def test_items_larger_than_the_budget_are_read_one_at_a_time_while_others_are_held(held, monkeypatch):
    """A consumer holding `held` items still gets the next one when it alone exceeds the budget
    (no deadlock), and no read runs ahead beyond the budget meanwhile."""
    monkeypatch.setattr(runtime, "PREFETCH_BYTES", 10)
    sizes = [25, 4, 30, 3, 3, 40, 1]
    loading, most_loaded = [], [0]
    lock = threading.Lock()

    def load(index: int) -> int:
        with lock:
            loading.append(index)
        return index

    handed = []
    for index, _ in prefetched(range(len(sizes)), load, lambda i: sizes[i], held=held):
        handed.append(index)
        with lock:
            most_loaded[0] = max(most_loaded[0], len(loading) - len(handed))
    assert handed == list(range(len(sizes)))
    assert most_loaded[0] <= 2  # _PREFETCH_DEPTH


def _ties(family, density: float) -> dict:
    return {
        "merge_method": "ties",
        "base_model": str(family.base),
        "models": [
            {"model": str(family.ft_a), "parameters": {"weight": 0.7, "density": density}},
            {"model": str(family.ft_b), "parameters": {"weight": 0.3, "density": density}},
        ],
    }


@pytest.mark.parametrize("density", [0.5, 1.0])  # whole tensors, blocks of rows
def test_parallel_workers_merge_the_same_values_as_one(family, density, monkeypatch):
    recipe = recipe_from_dict(_ties(family, density))
    monkeypatch.setattr(blocks, "BLOCK_ELEMENTS", 100)
    monkeypatch.setattr("exme.merge.execute.compute_workers", lambda device: 1)
    serial = build_state_dict(recipe, device="cpu")
    monkeypatch.setattr("exme.merge.execute.compute_workers", lambda device: 3)
    parallel = build_state_dict(recipe, device="cpu")
    assert serial.keys() == parallel.keys()
    assert all(torch.equal(serial[name], parallel[name]) for name in serial)

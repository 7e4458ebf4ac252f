"""Fixtures of the merge engine's tests: more fine-tunes, deeper models, models with tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_models import save_llama


@pytest.fixture(scope="session")
def four_layer_models(tmp_path_factory) -> dict[str, Path]:
    """A 4-layer fp32 base and three fine-tunes of it: enough for slices, gradients, model_stock."""
    root = tmp_path_factory.mktemp("four_layers")
    base = save_llama(root / "base", 10, num_hidden_layers=4)
    tuned = {name: save_llama(root / name, seed, base=base, num_hidden_layers=4)
             for name, seed in (("ft_a", 11), ("ft_b", 12), ("ft_c", 13))}  # fmt: skip
    return {"base": base, **tuned}

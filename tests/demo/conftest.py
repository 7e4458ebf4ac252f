"""Shared tiny fixtures: demo data, and a barely pretrained tiny base model (a few seconds)."""

from pathlib import Path

import pytest

from exme.demo.base_model import pretrain_base
from exme.demo.tasks import TASK_GENERATORS, write_demo_data

TINY_MODEL = {
    "hidden_size": 32,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("demo") / "data"
    write_demo_data(
        out_dir, list(TASK_GENERATORS), n_train=40, n_dev=20, n_test=20, seed=1, pretrain_lines=300
    )
    return out_dir


@pytest.fixture(scope="session")
def tiny_base(demo_data, tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("models") / "base"
    pretrain_base(
        out_dir,
        demo_data / "pretrain.txt",
        **TINY_MODEL,
        steps=3,
        learning_rate=1e-3,
        batch_size=4,
        seq_len=32,
        seed=0,
        device="cpu",
    )
    return out_dir

"""Shared test settings and fixtures: nothing is downloaded; tiny models are built once per session."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from exme.offline import use_offline_environment

use_offline_environment()

from exme.demo.base_model import pretrain_base  # noqa: E402
from exme.demo.tasks import TASK_GENERATORS, write_demo_data  # noqa: E402
from tests.real_model import converted_model, without_pad_token  # noqa: E402
from tests.tiny_models import ModelFamily, load_folder, save_llama  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_DEMO_MODEL = {
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
        **TINY_DEMO_MODEL,
        steps=3,
        learning_rate=1e-3,
        batch_size=4,
        seq_len=32,
        seed=0,
        device="cpu",
    )
    return out_dir


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def make_family(tmp_path_factory) -> Callable[..., ModelFamily]:
    cache: dict[tuple, ModelFamily] = {}

    def make(
        *, dtype=torch.float32, tied=False, sharded=False, tied_base_only=False, layers=2
    ) -> ModelFamily:
        key = (dtype, tied, sharded, tied_base_only, layers)
        if key not in cache:
            root = tmp_path_factory.mktemp("family")
            shard_size = "30KB" if sharded else None
            options = dict(dtype=dtype, shard_size=shard_size, num_hidden_layers=layers)
            base = save_llama(root / "base", 0, tied=tied or tied_base_only, **options)
            cache[key] = ModelFamily(
                base,
                save_llama(root / "ft_a", 1, tied=tied, base=base, **options),
                save_llama(root / "ft_b", 2, tied=tied, base=base, **options),
            )
        return cache[key]

    return make


@pytest.fixture(scope="session")
def family(make_family) -> ModelFamily:
    return make_family()


@pytest.fixture(scope="session")
def tokenizer_model(tmp_path_factory) -> Path:
    """A tiny model with a BPE tokenizer trained offline from a few strings."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    path = save_llama(tmp_path_factory.mktemp("tok") / "model", 7)
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "<s>", "</s>"])
    bpe.train_from_iterator(["hello world", "merge the models", "extrapolate more"], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def run_mergekit(tmp_path_factory) -> Callable[[dict[str, Any]], dict[str, torch.Tensor]]:
    """Run mergekit 0.1.5 in-process on a mergekit YAML dict; return the merged tensors."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    def run(config: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = tmp_path_factory.mktemp("mergekit") / "out"
        options = MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True)
        run_merge(MergeConfiguration.model_validate(config), str(out), options=options)
        return load_folder(out)

    return run


@pytest.fixture(scope="session")
def real_model() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder (converted once per machine, see real_model.py)."""
    return converted_model()


@pytest.fixture(scope="session")
def real_model_without_pad(real_model, tmp_path_factory) -> Path:
    """The same model with no pad token in its tokenizer and configs, as Llama-3 and Mistral ship."""
    return without_pad_token(real_model, tmp_path_factory.mktemp("real") / "base")

"""Tiny random Llama models (mergekit test-suite pattern) and helpers for the engine tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_LLAMA = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_attention_heads=4,
    num_key_value_heads=4,
    num_hidden_layers=2,
)
FINE_TUNE_SCALE = 0.01  # init std is 0.02: fine-tunes differ by a realistic small delta


@dataclass(frozen=True)
class ModelFamily:
    """A base model and two fine-tunes of it, sharing architecture, dtype and storage layout."""

    base: Path
    ft_a: Path
    ft_b: Path


def save_llama(
    path: Path,
    seed: int,
    *,
    dtype: torch.dtype = torch.float32,
    tied: bool = False,
    shard_size: str | None = None,
    base: Path | None = None,
    **config_overrides: Any,
) -> Path:
    """Save a random tiny Llama; with `base`, a small perturbation of that model's weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**{**TINY_LLAMA, **config_overrides}, tie_word_embeddings=tied)
    model = LlamaForCausalLM(config)
    if base is not None:
        base_weights = load_folder(base)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                source = base_weights.get(name, base_weights["model.embed_tokens.weight"])
                parameter.copy_(source + FINE_TUNE_SCALE * torch.randn_like(parameter))
    model.to(dtype).save_pretrained(path, max_shard_size=shard_size or "5GB")
    return path


def load_folder(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder, whatever its sharding."""
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


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


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
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

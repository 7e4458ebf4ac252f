"""The one tiny-model factory of the tests: random tiny Llamas (mergekit test-suite pattern), a model
family of a base and two fine-tunes, and reading a model folder's tensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file

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


def save_fine_tune(base: Path, path: Path, seed: int, scale: float = FINE_TUNE_SCALE) -> Path:
    """Save a perturbed copy of any model folder's weights (same config; no tokenizer)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(path)
    return path


def load_folder(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder, whatever its sharding."""
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path

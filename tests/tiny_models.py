"""The one tiny-model factory of the tests: random tiny Llamas (mergekit test-suite pattern), a model
family of a base and two fine-tunes, tiny Qwen2-VL models (several modules), and reading a model
folder's tensors or loading it."""

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


def save_vision_language(path: Path, seed: int, *, base: Path | None = None) -> Path:
    """Save a random tiny Qwen2-VL (a text decoder, a vision tower and its projector) whose config.json
    also holds the text settings at the top level, as the Hub's Qwen2-VL checkpoints (and mergekit's
    definition of the architecture) have them; with `base`, that model's weights plus small noise."""
    import json
    import shutil

    from safetensors.torch import save_file
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    if base is not None:
        shutil.copytree(base, path)
        generator = torch.Generator().manual_seed(seed)
        weights = {
            name: tensor + FINE_TUNE_SCALE * torch.randn(tensor.shape, generator=generator)
            for name, tensor in load_folder(base).items()
        }
        save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
        return path
    torch.manual_seed(seed)
    text = {**TINY_LLAMA, "rope_scaling": {"type": "mrope", "mrope_section": [2, 1, 1]}, "bos_token_id": 1,
            "eos_token_id": 2}  # fmt: skip
    vision = dict(depth=3, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)  # fmt: skip
    config = Qwen2VLConfig(text_config=text, vision_config=vision)
    Qwen2VLForConditionalGeneration(config).save_pretrained(path)
    saved = json.loads((path / "config.json").read_text())
    saved.update({key: value for key, value in saved["text_config"].items() if key not in saved})
    (path / "config.json").write_text(json.dumps(saved, indent=2))
    return path


def load_model(path: Path) -> torch.nn.Module:
    """A model folder as transformers loads it: a causal LM, or an image-text-to-text model."""
    import json

    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    multimodal = "vision_config" in json.loads((Path(path) / "config.json").read_text())
    return (AutoModelForImageTextToText if multimodal else AutoModelForCausalLM).from_pretrained(path)


def load_folder(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder, whatever its sharding."""
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path

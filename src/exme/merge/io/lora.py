"""LoRA adapters (PEFT's format) merged into a model's weights as they are read: W + s · B @ A, with
s = lora_alpha / r (lora_alpha / √r with use_rslora), as PEFT's merge_and_unload computes it.

Plain LoRA on linear and embedding layers is applied; adapters that change weights in other ways
(DoRA, biases, modules_to_save, other PEFT methods) are refused by name rather than half-applied.
A full weight saved in the adapter (PEFT's save_embedding_layers) replaces the model's.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from exme.errors import ExmeError
from exme.merge.io.reader import (
    LoraPatch,
    TensorLocation,
    read_pickled_header,
    read_safetensors_header,
)

_PREFIX = "base_model.model."
# adapter tensor suffix -> (which factor, whether the target weight is stored transposed)
_FACTORS = {
    ".lora_A.weight": ("down", False),
    ".lora_B.weight": ("up", False),
    ".lora_embedding_A": ("down", True),
    ".lora_embedding_B": ("up", True),
    # PEFT saves a targeted embedding's full weight beside its factors (save_embedding_layers);
    # loading the adapter puts it in place of the model's own.
    ".base_layer.weight": ("weight", False),
}


def _adapter_config(folder: Path, model: str) -> dict[str, Any]:
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
    except FileNotFoundError:
        raise ExmeError(f"model {model}: LoRA adapter {folder} has no adapter_config.json") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ExmeError(f"model {model}: cannot read {folder}/adapter_config.json ({error})") from None
    unsupported = {
        "peft_type": config.get("peft_type", "LORA") != "LORA",
        "use_dora": bool(config.get("use_dora")),
        "modules_to_save": bool(config.get("modules_to_save")),
        "layer_replication": bool(config.get("layer_replication")),
        "bias": config.get("bias", "none") != "none",
    }
    if found := [f"{key}={config.get(key)!r}" for key, bad in unsupported.items() if bad]:
        raise ExmeError(
            f"model {model}: LoRA adapter {folder} uses {', '.join(found)}, which exme does not "
            "merge (only plain LoRA); merge it with PEFT's merge_and_unload first"
        )
    return config


def _adapter_tensors(folder: Path, model: str) -> dict[str, TensorLocation]:
    for name, read_header in (
        ("adapter_model.safetensors", read_safetensors_header),
        ("adapter_model.bin", read_pickled_header),
    ):
        if (folder / name).exists():
            return read_header(folder / name)
    raise ExmeError(f"model {model}: LoRA adapter {folder} has no adapter_model.safetensors or .bin")


def _alpha(config: dict[str, Any], module: str) -> float:
    """lora_alpha, or the alpha_pattern entry whose key ends the module's name (as PEFT)."""
    for pattern, alpha in (config.get("alpha_pattern") or {}).items():
        if re.fullmatch(rf"(.*\.)?{pattern}", module):
            return alpha
    return config.get("lora_alpha", 8)


def with_lora(tensors: dict[str, TensorLocation], folder: Path, model: str) -> dict[str, TensorLocation]:
    """The model's tensors with the adapter's update attached to each weight it targets."""
    config = _adapter_config(folder, model)
    factors: dict[str, dict[str, Any]] = {}
    for key, location in _adapter_tensors(folder, model).items():
        suffix = next((s for s in _FACTORS if key.endswith(s)), None)
        if suffix is None or not key.startswith(_PREFIX):
            raise ExmeError(
                f"model {model}: LoRA adapter {folder} holds tensor {key!r}, which is not a LoRA "
                "factor (lora_A/lora_B); exme merges plain LoRA only"
            )
        module = key[len(_PREFIX) : -len(suffix)]
        role, embedding = _FACTORS[suffix]
        entry = factors.setdefault(module, {"embedding": False})
        entry[role] = location
        entry["embedding"] |= embedding
    patched = dict(tensors)
    for module, pair in factors.items():
        target = f"{module}.weight"
        if target not in tensors or "down" not in pair or "up" not in pair:
            problem = "has no weight " + repr(target) if target not in tensors else "lacks lora_A or lora_B"
            raise ExmeError(f"model {model}: LoRA adapter {folder}: module {module!r} {problem}")
        rank = pair["down"].shape[0]
        alpha = _alpha(config, module)
        transposed = pair["embedding"] or bool(config.get("fan_in_fan_out"))
        update_shape = (pair["up"].shape[0], pair["down"].shape[-1])
        if (update_shape[::-1] if transposed else update_shape) != tensors[target].shape:
            raise ExmeError(
                f"model {model}: LoRA adapter {folder}: the update of {target!r} has shape "
                f"{list(update_shape)}, the weight {list(tensors[target].shape)}"
            )
        scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        weight = pair.get("weight", tensors[target])
        patched[target] = replace(weight, lora=LoraPatch(pair["down"], pair["up"], scale, transposed))
    return patched

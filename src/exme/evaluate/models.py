"""Loading a model for evaluation: a Hugging Face folder, or a recipe built in memory.

A recipe's weights are computed by the merge engine tensor by tensor (in fp32, cast to the
evaluation dtype) on the evaluation device and assigned to a model built without initialisation
(its parameters on the meta device), so that evaluating a grid point writes no model-sized file,
holds no second copy of the model and spends nothing on random initialisation.
A recipe may merge other recipes (see exme.merge.plan): its config and tokenizer are those of the
folders its recipe tree takes them from, with what the merges change in the config (the number of
layers of `slices`, a merged vocabulary's size, an untied output embedding).
"""

import dataclasses
import os
from pathlib import Path

import torch
from accelerate import init_empty_weights
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from exme.device import resolve_device
from exme.dtypes import AUTO, check_dtype, torch_dtype
from exme.errors import ExmeError
from exme.files import CONFIG_FILE
from exme.merge.execute import build_state_dict
from exme.merge.multi import load_recipe
from exme.merge.plan import LAYER_COUNT_KEYS, names_recipe, plan_merge
from exme.merge.recipe import Recipe

# The config keys a merge may change that shape the model built from it.
_SHAPE_KEYS = ("vocab_size", "tie_word_embeddings", *LAYER_COUNT_KEYS)
_DTYPE_KEY = "evaluation.dtype"  # the config key of the dtype a model is evaluated in


def load_model(source: str | os.PathLike, device: torch.device | None = None, dtype: str = AUTO):
    """(model, tokenizer) for a model folder or a recipe file, in eval mode on `device`.

    dtype "auto" is the model's own: a folder's stored dtype, as `lm_eval --model hf` loads it, or
    for a recipe the dtype its merge writes (its out_dtype or dtype, else its inputs' dtype)."""
    source = Path(source)
    device = resolve_device(device)
    if not names_recipe(source):
        model, tokenizer = load_model_dir(source, device, dtype)
        _check_finite(model, source)
        return model, tokenizer
    return load_recipe_model(load_recipe(source), device, source, dtype)


def load_model_dir(
    path: str | os.PathLike, device: torch.device | str | None = None, dtype: str = AUTO
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load an HF model folder (in `dtype`, eval mode, on `device`) and its tokenizer."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise ExmeError(f"model folder {path} has no {CONFIG_FILE}")
    device = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch_dtype(dtype, _DTYPE_KEY), device_map=device
    )
    return model.eval(), AutoTokenizer.from_pretrained(path)


def load_recipe_model(
    recipe: Recipe,
    device: torch.device | None = None,
    source: str | os.PathLike = "recipe",
    dtype: str = AUTO,
):
    """(model, tokenizer) for a recipe held in memory (`source` names it in errors), its weights built
    by the merge engine in `dtype` ("auto": the dtype its merge writes), in eval mode on `device`."""
    device = resolve_device(device)
    if dtype != AUTO:
        check_dtype(dtype, _DTYPE_KEY)  # a clear error for an unknown name
        recipe = dataclasses.replace(recipe, out_dtype=dtype)
    plan = plan_merge(recipe)
    shape = {key: plan.config[key] for key in _SHAPE_KEYS if key in plan.config}
    config = AutoConfig.from_pretrained(plan.config_folder, **shape)
    state_dict = build_state_dict(recipe, device=device, keep_on_device=True)
    weights_dtype = next(iter(state_dict.values())).dtype
    config.dtype = weights_dtype
    if "lm_head.weight" in state_dict:  # as the merge engine's folders: a separate lm_head is untied
        config.tie_word_embeddings = False
    # Parameters on the meta device (no memory, no initialisation); buffers (e.g. rotary
    # frequencies) are computed as usual, as from_pretrained does.
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=weights_dtype)
    _assign_weights(model, state_dict, Path(source))
    tokenizer = AutoTokenizer.from_pretrained(plan.tokenizer_folder)
    return model.to(device).eval(), tokenizer


def _check_finite(model: PreTrainedModel, source: Path) -> None:
    """NaN or Inf weights are an error, not a score (the engine checks recipes as it builds them)."""
    for name, tensor in model.state_dict().items():
        if not torch.isfinite(tensor).all():
            raise ExmeError(f"model {source}: tensor {name} holds NaN or Inf")


def _assign_weights(model: PreTrainedModel, state_dict: dict, source: Path) -> None:
    """Make the built tensors the model's parameters (no copy); only tensors tied to others (e.g. a
    tied lm_head) may be absent, and are tied afterwards."""
    result = model.load_state_dict(state_dict, strict=False, assign=True)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    missing = [key for key in result.missing_keys if key not in tied]
    if missing or result.unexpected_keys:
        raise ExmeError(
            f"recipe {source}: built weights do not fit the model "
            f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    model.tie_weights()
    still_empty = [name for name, parameter in model.named_parameters() if parameter.is_meta]
    if still_empty:
        raise ExmeError(f"recipe {source}: no weights were built for {still_empty[:3]}")

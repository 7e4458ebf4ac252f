"""Loading a model for evaluation: a Hugging Face folder, or a recipe built in memory.

A recipe's weights are computed by the merge engine tensor by tensor and loaded into a model made
from the recipe's config, so that evaluating a grid point writes no model-sized file. A recipe may
merge other recipes (see exme.merge.plan): its config and tokenizer are those of the folders its
recipe tree takes them from, with what the merges change in the config (the number of layers of
`slices`, a merged vocabulary's size, an untied output embedding).
"""

import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from exme.device import default_device
from exme.errors import ExmeError
from exme.evaluate.harness import load_model_dir
from exme.merge.execute import build_state_dict
from exme.merge.plan import LAYER_COUNT_KEYS, names_recipe, plan_merge
from exme.merge.recipe import Recipe, load_recipe

# The config keys a merge may change that shape the model built from it.
_SHAPE_KEYS = ("vocab_size", "tie_word_embeddings", *LAYER_COUNT_KEYS)


def load_model(source: str | os.PathLike, device: torch.device | None = None):
    """(model, tokenizer) for a model folder or a recipe file, in eval mode on `device`."""
    source = Path(source)
    device = device or default_device()
    if not names_recipe(source):
        model, tokenizer = load_model_dir(source, device)
        _check_finite(model, source)
        return model, tokenizer
    return load_recipe_model(load_recipe(source), device, source)


def load_recipe_model(
    recipe: Recipe, device: torch.device | None = None, source: str | os.PathLike = "recipe"
):
    """(model, tokenizer) for a recipe held in memory (`source` names it in errors), its weights built
    by the merge engine, in eval mode on `device`."""
    device = device or default_device()
    plan = plan_merge(recipe)
    shape = {key: plan.config[key] for key in _SHAPE_KEYS if key in plan.config}
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(plan.config_folder, **shape))
    _load_weights(model, build_state_dict(recipe, device=device), Path(source))
    tokenizer = AutoTokenizer.from_pretrained(plan.tokenizer_folder)
    return model.to(device).eval(), tokenizer


def _check_finite(model: PreTrainedModel, source: Path) -> None:
    """NaN or Inf weights are an error, not a score (the engine checks recipes as it builds them)."""
    for name, tensor in model.state_dict().items():
        if not torch.isfinite(tensor).all():
            raise ExmeError(f"model {source}: tensor {name} holds NaN or Inf")


def _load_weights(model: PreTrainedModel, state_dict: dict, source: Path) -> None:
    """Load built weights; only tensors tied to others (e.g. a tied lm_head) may be absent."""
    result = model.load_state_dict(state_dict, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    missing = [key for key in result.missing_keys if key not in tied]
    if missing or result.unexpected_keys:
        raise ExmeError(
            f"recipe {source}: built weights do not fit the model "
            f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    model.tie_weights()

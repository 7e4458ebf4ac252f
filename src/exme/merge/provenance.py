"""What a merged folder says about its making: mergekit_config.yml (a recipe mergekit 0.1.5 can
rerun) and the model card, whose `base_model` and `base_model_relation: merge` the Hub reads.

EXPO and ExMe recipes are written to mergekit_config.yml in their task_arithmetic form (or linear,
when ExMe's weights neither sum to 1 nor are normalized), which exists when their parameters are
plain numbers; exme's own keys (random_seed, metadata) are left out. A multi-document recipe is
written as mergekit-multi's documents. A recipe naming other recipe files (nested recipes, exme's)
has no mergekit form; its card's base_model lists the Hub models of the whole recipe tree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from exme.merge.io.model_ids import parse_reference
from exme.merge.io.references import hub_id
from exme.merge.plan import ModelSource, NestedModel, names_recipe
from exme.merge.recipe import Recipe

MERGEKIT_CONFIG_FILE = "mergekit_config.yml"
CARD_FILE = "README.md"
# Left out of a mergekit form; a merge's name is given back where a later merge uses it (_mergekit_form).
_EXME_ONLY_KEYS = ("random_seed", "metadata", "name")
_EXME_METHODS = ("extrapolate", "exme")
_UNIT_SUM = 1e-9


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _per_model(recipe: Recipe, name: str, default: Any = None) -> list[float | None]:
    return [_number(e.parameters.get(name, recipe.parameters.get(name, default))) for e in recipe.models]


def _as_task_arithmetic(recipe: Recipe) -> dict[str, Any] | None:
    """θ = Σ w_i ((1+α_i) θ_i − α_i θ_base) as a merge mergekit runs, when it has one."""
    if recipe.slices or recipe.modules:
        return None
    alphas = _per_model(recipe, "alpha")
    weights = [1.0] if recipe.merge_method == "extrapolate" else _per_model(recipe, "weight")
    normalize = recipe.parameters.get("normalize", False)
    if None in alphas or None in weights or not isinstance(normalize, bool):
        return None
    total = sum(weights)
    if normalize and total:
        weights = [weight / total for weight in weights]
    coefficients = [weight * (1 + alpha) for weight, alpha in zip(weights, alphas, strict=True)]
    models = [
        {"model": entry.model, "parameters": {"weight": c}}
        for entry, c in zip(recipe.models, coefficients, strict=True)
    ]
    if normalize or abs(sum(weights) - 1) < _UNIT_SUM:
        form = {"merge_method": "task_arithmetic", "base_model": recipe.base_model, "models": models}
    else:  # the base's weight is then not 1 − Σ c_i: give it explicitly
        base_weight = -sum(weight * alpha for weight, alpha in zip(weights, alphas, strict=True))
        base_entry = {"model": recipe.base_model, "parameters": {"weight": base_weight}}
        form = {"merge_method": "linear", "models": [*models, base_entry], "parameters": {"normalize": False}}
    return form


def mergekit_documents(recipe: Recipe) -> list[dict[str, Any]] | None:
    """The recipe as mergekit runs it: one document (mergekit-yaml's) or, with named merges, those
    of mergekit-multi, the final one without its name so that mergekit-multi's --out-path receives
    it; None when mergekit has no equivalent."""
    forms = [*(_mergekit_form(stage, named=True) for stage in recipe.stages.values()),
             _mergekit_form(recipe, named=False)]  # fmt: skip
    return None if None in forms else forms


def _mergekit_form(recipe: Recipe, named: bool) -> dict[str, Any] | None:
    if any(names_recipe(model) for model in recipe.named_models):
        return None
    data = recipe.to_dict()
    name = {"name": recipe.name} if named else {}
    if recipe.merge_method in _EXME_METHODS:
        form = _as_task_arithmetic(recipe)
        if form is None:
            return None
        kept = {key: data[key] for key in ("dtype", "out_dtype", "tokenizer_source", "tokenizer",
                                           "chat_template") if key in data}  # fmt: skip
        return {**name, **form, **kept}
    return {**name, **{key: value for key, value in data.items() if key not in _EXME_ONLY_KEYS}}


def hub_ids(folders: Mapping[str, ModelSource], stages: Mapping[str, Recipe]) -> list[str]:
    """The Hub ids of the inputs (and of their LoRA adapters; a nested recipe's own inputs', and those
    a named merge written to a folder names in its card), for the card's base_model; `stages` are the
    named merges the recipe may name."""
    ids = []
    for name, folder in folders.items():
        if isinstance(folder, NestedModel):
            ids.extend(hub_ids(folder.plan.folders, folder.plan.recipe.stages))
        elif name in stages:
            ids.extend(_card_base_models(folder.path))
        else:
            reference = parse_reference(name)
            ids.append(hub_id(reference.model, folder.path))
            if reference.lora and folder.adapter:
                ids.append(hub_id(reference.lora, folder.adapter))
    return list(dict.fromkeys(i for i in ids if i))


def _card_base_models(folder: Path) -> list[str]:
    """The base_model of a folder's model card (none without a card)."""
    from huggingface_hub import ModelCard

    if not (folder / CARD_FILE).is_file():
        return []
    base_model = ModelCard.load(folder / CARD_FILE).data.base_model
    return [base_model] if isinstance(base_model, str) else list(base_model or [])


def model_card(
    recipe: Recipe,
    folders: Mapping[str, ModelSource],
    *,
    title: str,
    method_name: str,
    reference_url: str | None,
    inputs: Sequence[str],
    mergekit_config: list[dict[str, Any]] | None,
) -> Any:
    """A huggingface_hub ModelCard (imported here: it takes a noticeable time, see execute.py)."""
    from huggingface_hub import ModelCard, ModelCardData

    bases = hub_ids(folders, recipe.stages)
    data = ModelCardData(
        library_name="transformers",
        tags=["merge", "exme"],
        base_model=bases or None,
        base_model_relation="merge" if bases else None,
    )
    link = f"[{method_name}]({reference_url})" if reference_url else method_name
    if mergekit_config and len(mergekit_config) > 1:
        command = f"mergekit-multi {MERGEKIT_CONFIG_FILE} --intermediate-dir DIR --out-path OUT"
    else:
        command = f"mergekit-yaml {MERGEKIT_CONFIG_FILE} OUT"
    rerun = [f"`{MERGEKIT_CONFIG_FILE}` reruns it with mergekit: `{command}`.", ""] if mergekit_config else []
    body = [
        f"# {title}",
        "",
        f"A merge of pre-trained language models made with exme's streaming merge engine using {link}.",
        "",
        "## Inputs",
        *inputs,
        "",
        *rerun,
        "## Recipe",
        "```yaml",
        yaml.safe_dump_all(recipe.to_documents(), sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n" + "\n".join(body))

"""The recipes of the models an ExMe run evaluates, in mergekit's YAML format, each with a
`metadata` block that says what the model is (the score table's description of it).

EXPO-r at alpha extrapolates the rank-r selected checkpoint away from the base; ExMe at beta merges
the extrapolated checkpoints (each at its chosen alpha) with weight beta on EXPO-1 and the rest,
1 - beta, shared equally by the others (with the paper's top two: beta and 1 - beta).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exme.merge.recipe import Recipe


@dataclass(frozen=True)
class Checkpoint:
    """A fine-tuning checkpoint: its model name, rank on dev (None where it was not selected) and
    folder."""

    name: str
    rank: int | None
    path: str


def expo_recipe(base: str, checkpoint: Checkpoint, alpha: float) -> Recipe:
    return engine_recipe(
        "extrapolate",
        [{"model": checkpoint.path, "parameters": {"alpha": alpha}}],
        base=base,
        tokenizer=checkpoint.path,
        metadata={
            "method": "expo",
            "track": "checkpoint",
            "source": checkpoint.name,
            **({"rank": checkpoint.rank} if checkpoint.rank is not None else {}),
            "alpha": alpha,
        },
    )


def exme_recipe(
    base: str, checkpoints: list[Checkpoint], alphas: list[float], beta: float, dtype: str | None
) -> Recipe:
    others = len(checkpoints) - 1
    weights = [beta] + [(1.0 - beta) / others] * others
    models = [
        {"model": checkpoint.path, "parameters": {"alpha": alpha, "weight": weight}}
        for checkpoint, alpha, weight in zip(checkpoints, alphas, weights, strict=True)
    ]
    source = "+".join(checkpoint.name for checkpoint in checkpoints)
    return engine_recipe(
        "exme",
        models,
        base=base,
        tokenizer=checkpoints[0].path,
        dtype=dtype or None,
        metadata={"method": "exme", "track": "checkpoint", "source": source, "beta": beta},
    )


def engine_recipe(
    merge_method: str,
    models: list[dict[str, Any]],
    *,
    base: str | None,
    tokenizer: str | None,
    metadata: dict[str, Any],
    **keys: Any,
) -> Recipe:
    """A recipe of the run, given in mergekit's keys, as the merge engine's Recipe: checked now
    rather than when it is first evaluated. `metadata` describes the model (see catalogue)."""
    # Imported here: the merge engine imports torch, and building the DAG imports this module.
    from exme.merge.recipe import recipe_from_dict

    recipe = {
        "merge_method": merge_method,
        "base_model": base,
        "models": models,
        "tokenizer_source": tokenizer,
    }
    return recipe_from_dict({**recipe, **keys, "metadata": metadata})

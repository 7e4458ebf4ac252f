"""The recipes of the models an ExMe run evaluates, in mergekit's YAML format, each with a
`metadata` block that says what the model is (the score table's description of it).

EXPO-r at alpha extrapolates the rank-r selected checkpoint away from the base; ExMe at beta merges
the extrapolated checkpoints (each at its chosen alpha) with weight beta on EXPO-1 and the rest,
1 - beta, shared equally by the others (with the paper's top two: beta and 1 - beta).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Checkpoint:
    """A fine-tuning checkpoint: its model name, rank on dev (None where it was not selected) and
    folder."""

    name: str
    rank: int | None
    path: str


def expo_recipe(base: str, checkpoint: Checkpoint, alpha: float) -> dict:
    return _recipe(
        "extrapolate",
        base,
        [{"model": checkpoint.path, "parameters": {"alpha": alpha}}],
        tokenizer=checkpoint.path,
        dtype=None,
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
) -> dict:
    others = len(checkpoints) - 1
    weights = [beta] + [(1.0 - beta) / others] * others
    models = [
        {"model": checkpoint.path, "parameters": {"alpha": alpha, "weight": weight}}
        for checkpoint, alpha, weight in zip(checkpoints, alphas, weights, strict=True)
    ]
    source = "+".join(checkpoint.name for checkpoint in checkpoints)
    return _recipe(
        "exme",
        base,
        models,
        tokenizer=checkpoints[0].path,
        dtype=dtype,
        metadata={"method": "exme", "track": "checkpoint", "source": source, "beta": beta},
    )


def _recipe(
    method: str, base: str, models: list[dict], *, tokenizer: str, dtype: str | None, metadata: dict
) -> dict:
    recipe = {
        "merge_method": method,
        "base_model": base,
        "models": models,
        "tokenizer_source": tokenizer,
    }
    if dtype:
        recipe["dtype"] = dtype
    recipe["metadata"] = metadata
    return recipe

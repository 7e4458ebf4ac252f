"""The recipes of the models an ExMe run evaluates, in mergekit's YAML format.

EXPO-r at alpha extrapolates the rank-r selected checkpoint away from the base; ExMe at beta merges
the extrapolated checkpoints (each at its chosen alpha) with weight beta on EXPO-1 and the rest,
1 - beta, shared equally by the others (with the paper's top two: beta and 1 - beta).
"""

from exme.naming import ModelName


def expo_recipe(base: str, checkpoint: str, alpha: float, dtype: str | None) -> dict:
    return _recipe(
        "extrapolate",
        base,
        [{"model": checkpoint, "parameters": {"alpha": alpha}}],
        checkpoint,
        dtype,
    )


def exme_recipe(
    base: str, checkpoints: list[str], alphas: list[float], beta: float, dtype: str | None
) -> dict:
    others = len(checkpoints) - 1
    weights = [beta] + [(1.0 - beta) / others] * others
    models = [
        {"model": checkpoint, "parameters": {"alpha": alpha, "weight": weight}}
        for checkpoint, alpha, weight in zip(checkpoints, alphas, weights, strict=True)
    ]
    return _recipe("exme", base, models, checkpoints[0], dtype)


def _recipe(method: str, base: str, models: list[dict], tokenizer: str, dtype: str | None) -> dict:
    recipe = {
        "merge_method": method,
        "base_model": base,
        "models": models,
        "tokenizer_source": tokenizer,
    }
    if dtype:
        recipe["dtype"] = dtype
    return recipe


def recipe_for(
    name: ModelName,
    *,
    base: str,
    selected: list[str],
    chosen_alphas: list[float] | None,
    chosen_beta: float | None,
    dtype: str | None,
) -> dict:
    """The recipe of an `expo*` or `exme*` model; `selected` lists the checkpoint folders by rank."""
    if name.method == "expo":
        alpha = name.alpha if name.alpha is not None else chosen_alphas[name.rank - 1]
        return expo_recipe(base, selected[name.rank - 1], alpha, dtype)
    beta = name.beta if name.beta is not None else chosen_beta
    return exme_recipe(base, selected, chosen_alphas, beta, dtype)

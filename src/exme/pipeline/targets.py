"""What a run evaluates and produces: the models of each split, the figures and the final targets.

The dev split evaluates what selection and the coefficient searches read; the test split evaluates
only the models the comparison reports. Imports no torch: the Snakefile plans jobs from it.
"""

from collections.abc import Sequence

from exme.pipeline.catalogue import BASE, FINAL, model_name

MEAN_TASK = "mean"  # the figures' name for the unweighted mean over tasks


def models_on_dev(
    steps: Sequence[int], ranks: Sequence[int], alphas: Sequence[float], betas: Sequence[float]
) -> list[str]:
    """Base and every checkpoint (for selection), every alpha and beta grid point (for the searches)."""
    models = [BASE, *(model_name("sft", step=step) for step in steps)]
    models += [model_name("expo_grid", rank=rank, alpha=alpha) for rank in ranks for alpha in alphas]
    models += [model_name("exme_grid", beta=beta) for beta in betas]
    return models


def models_on_test(steps: Sequence[int], ranks: Sequence[int]) -> list[str]:
    """Base, every checkpoint, EXPO-k at its chosen alpha and the final ExMe model."""
    return [
        BASE,
        *(model_name("sft", step=step) for step in steps),
        *(model_name("expo", rank=rank) for rank in ranks),
        FINAL,
    ]


def figure_paths(out: str, task_names: Sequence[str]) -> dict[str, list[str] | str]:
    """The report's figures: an extrapolation figure per task and for the mean, beta, comparison."""
    return {
        "extrapolation": [f"{out}/figures/extrapolation_{task}.png" for task in [*task_names, MEAN_TASK]],
        "beta": f"{out}/figures/beta.png",
        "comparison": f"{out}/figures/comparison.png",
    }


def final_targets(out: str, task_names: Sequence[str]) -> list[str]:
    """What `rule all` asks for: the score table, the summary, every figure and the final model."""
    figures = figure_paths(out, task_names)
    return [
        f"{out}/scores.csv",
        f"{out}/summary.md",
        *figures["extrapolation"],
        figures["beta"],
        figures["comparison"],
        f"{out}/final",
    ]

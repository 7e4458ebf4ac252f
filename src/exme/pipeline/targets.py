"""What a run evaluates and produces: the models of each split, the figures and the final targets.

The dev split evaluates what selection and the coefficient searches read; the test split evaluates
only the models the comparison reports. Imports no torch: the Snakefile plans jobs from it.
"""

from collections.abc import Sequence

from exme.pipeline.catalogue import BASE, FINAL, model_name
from exme.pipeline.greedy import first_generation
from exme.pipeline.greedy_steps import SHARED_VARIANT, file_name
from exme.pipeline.merging import get_system

MEAN_TASK = "mean"  # the figures' name for the unweighted mean over tasks


def models_on_dev(
    steps: Sequence[int],
    ranks: Sequence[int],
    alphas: Sequence[float],
    betas: Sequence[float],
    extrapolated_steps: Sequence[int] = (),
) -> list[str]:
    """Base and every checkpoint (for selection), every alpha and beta grid point (for the searches),
    and the checkpoints of `extrapolated_steps` over the alpha grid (for the figure)."""
    models = [BASE, *(model_name("sft", step=step) for step in steps)]
    models += [model_name("expo_grid", rank=rank, alpha=alpha) for rank in ranks for alpha in alphas]
    models += [model_name("exme_grid", beta=beta) for beta in betas]
    return models + checkpoint_extrapolation_models(extrapolated_steps, alphas)


def checkpoint_extrapolation_models(steps: Sequence[int], alphas: Sequence[float]) -> list[str]:
    """Each checkpoint of `steps` extrapolated at each alpha but 0 (that point is the checkpoint
    itself): the paper's Fig. 5 extrapolates all eight, not only the two selected."""
    return [
        model_name("expo_step_grid", step=step, alpha=alpha)
        for step in steps
        for alpha in alphas
        if alpha != 0
    ]


def models_on_test(steps: Sequence[int], ranks: Sequence[int]) -> list[str]:
    """Base, every checkpoint, EXPO-k at its chosen alpha and the final ExMe model."""
    return [
        BASE,
        *(model_name("sft", step=step) for step in steps),
        *(model_name("expo", rank=rank) for rank in ranks),
        FINAL,
    ]


def merge_models(track: str, methods: Sequence[str], merge_methods: dict) -> dict[str, list[str]]:
    """{split: models} of a track's merge systems: grid points on dev (and on test where a figure
    shows them all), each system's model on test."""
    models: dict[str, list[str]] = {"dev": [], "test": []}
    for method in methods:
        system = get_system(method)
        points = [
            model_name("merge_point", track=track, method=method, point=point)
            for point in system.points(system.settings(merge_methods))
        ]
        models["dev"] += points
        models["test"] += [
            model_name("merge", track=track, method=method),
            *(points if system.test_every_point else []),
        ]
    return models


def evaluation_batches(
    ranks: Sequence[int],
    alphas: Sequence[float],
    betas: Sequence[float],
    tracks: dict[str, Sequence[str]],
    merge_methods: dict,
    extrapolated_steps: Sequence[int] = (),
) -> dict[str, list[str]]:
    """{batch name: models}: the models of each grid, evaluated together in one job per split, so
    that the start-up of a job (importing torch and lm-eval) is paid once per grid, not per point."""
    batches = {
        "expo_grid": [model_name("expo_grid", rank=rank, alpha=alpha) for rank in ranks for alpha in alphas],
        "exme_grid": [model_name("exme_grid", beta=beta) for beta in betas],
    }
    if extrapolated_steps:
        batches["expo_step_grid"] = checkpoint_extrapolation_models(extrapolated_steps, alphas)
    for track, methods in tracks.items():
        for method in methods:
            system = get_system(method)
            points = system.points(system.settings(merge_methods))
            if points:
                models = [
                    model_name("merge_point", track=track, method=method, point=point) for point in points
                ]
                batches[model_name("merge", track=track, method=method)] = models
    return batches


def split_batches(batches: dict[str, list[str]], models_per_job: int | None) -> dict[str, list[str]]:
    """Batches of at most models_per_job models (None: whole grids), named <batch>-part<i> where
    a grid is split: on a GPU cluster, jobs of a few models each run in parallel and within a
    time limit, where one job per grid would take hours."""
    if models_per_job is None:
        return dict(batches)
    parts = {}
    for batch, models in batches.items():
        chunks = [models[start : start + models_per_job] for start in range(0, len(models), models_per_job)]
        if len(chunks) == 1:
            parts[batch] = models
        else:
            parts.update({f"{batch}-part{index}": chunk for index, chunk in enumerate(chunks, 1)})
    return parts


def greedy_pair_models(track: str, inputs: Sequence[str]) -> list[str]:
    """The model names of greedy merging's generation 1: every pair of the track's input models."""
    pool = first_generation(inputs)
    return [file_name(track, SHARED_VARIANT, member.name) for member in pool.models if member.parents]


def expert_models(experts: Sequence[str]) -> list[str]:
    """The experts, evaluated on both splits: dev picks the best single expert for comparisons."""
    return [model_name("expert", expert=expert) for expert in experts]


def figure_paths(out: str, task_names: Sequence[str]) -> dict[str, list[str] | str]:
    """The ExMe figures of one seed's folder `out`: extrapolation per task and for the mean, beta,
    and the comparison of base, SFT, EXPO and ExMe."""
    return {
        "extrapolation": [f"{out}/figures/extrapolation_{task}.png" for task in [*task_names, MEAN_TASK]],
        "beta": f"{out}/figures/beta.png",
        "comparison": f"{out}/figures/comparison.png",
    }


def checkpoint_extrapolation_figure(out: str) -> str:
    """Dev score against alpha of every checkpoint (extrapolation.every_checkpoint), in one seed's
    folder `out`."""
    return f"{out}/figures/extrapolation_checkpoints.png"


def mixup_figure(out: str, track: str) -> str:
    """Dev and test score of every M³ draw against λ, in one seed's folder `out`."""
    return f"{out}/figures/mixup_{track}.png"


def comparison_paths(out: str) -> dict[str, str]:
    """The run's comparison over tracks, methods and seeds."""
    return {"table": f"{out}/comparison.md", "figure": f"{out}/figures/comparison.png"}


def kinship_paths(out: str, track: str) -> list[str]:
    """One seed's kinship table and figures (`out` is the seed's folder)."""
    return [
        f"{out}/kinship/{track}.md",
        *(f"{out}/figures/{name}_{track}.png" for name in ("kinship", "kinship_gain", "greedy")),
    ]


def final_targets(
    out: str,
    scopes: Sequence[str],
    task_names: Sequence[str],
    mixup_tracks: Sequence[str],
    kinship_tracks: Sequence[str] = (),
    every_checkpoint: bool = False,
) -> list[str]:
    """What `rule all` asks for: the score table and comparison, and per seed the ExMe report,
    the M³ and kinship figures (and that of every checkpoint extrapolated) and the final ExMe model."""
    targets = [f"{out}/scores.csv", *comparison_paths(out).values()]
    for scope in scopes:
        figures = figure_paths(f"{out}/{scope}", task_names)
        targets += [
            f"{out}/{scope}/summary.md",
            *figures["extrapolation"],
            figures["beta"],
            figures["comparison"],
        ]
        targets += [mixup_figure(f"{out}/{scope}", track) for track in mixup_tracks]
        if every_checkpoint:
            targets.append(checkpoint_extrapolation_figure(f"{out}/{scope}"))
        targets += [path for track in kinship_tracks for path in kinship_paths(f"{out}/{scope}", track)]
        targets.append(f"{out}/{scope}/final")
    return targets

"""The merge systems compared on both tracks besides ExMe: the standard baselines and Mixup Model
Merge (M³), each a function that writes a recipe for the merge engine, registered by name.

A system merges the track's input models (the selected checkpoints, or the experts) over their
common base. Systems with a coefficient chosen on dev have a grid of points (task arithmetic's
scaling; M³'s draws); the model at each point is evaluated on dev and the best point is the
system's model. Every recipe carries its description in `metadata` (see catalogue).

M³ (Zhou et al., arXiv 2502.15434) draws λ ~ Beta(a, a) and merges two models with weights λ, 1 − λ.
This project generalises it to N models with λ ~ Dirichlet(a, …, a), whose two-model case is
Beta(a, a); draws come from a generator seeded by the run's seed, and the draw is chosen on dev.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from exme.errors import ExmeError
from exme.pipeline.recipes import engine_recipe

if TYPE_CHECKING:
    from exme.merge.recipe import Recipe


@dataclass(frozen=True)
class Source:
    """An input model of a merge: its name in the score table and its folder."""

    name: str
    path: str


@dataclass(frozen=True)
class MergeInputs:
    base: str
    models: tuple[Source, ...]
    seed: int

    @property
    def source(self) -> str:
        return "+".join(model.name for model in self.models)


@dataclass(frozen=True)
class MergeSystem:
    name: str
    recipe: Callable[[MergeInputs, dict, str | None], Recipe]  # (inputs, settings, grid point)
    grid: Callable[[dict], list[str]] | None = None  # its grid points, from its settings
    models: tuple[int, int | None] = (2, None)  # how many input models it merges (min, max)
    settings_key: str | None = None  # its section under `merge_methods` (default: its name)
    test_every_point: bool = False  # evaluate every grid point on test too (for a figure)

    def settings(self, merge_methods: dict) -> dict:
        return merge_methods.get(self.settings_key or self.name, {})

    def points(self, settings: dict) -> list[str]:
        """The grid points searched on dev (none for a method without a coefficient to choose)."""
        return self.grid(settings) if self.grid else []


SYSTEMS: dict[str, MergeSystem] = {}


def register(system: MergeSystem) -> MergeSystem:
    SYSTEMS[system.name] = system
    return system


def get_system(name: str) -> MergeSystem:
    if name not in SYSTEMS:
        raise ExmeError(f"unknown merge method {name!r} (known: {', '.join(sorted(SYSTEMS))})")
    return SYSTEMS[name]


def merge_recipe(method: str, track: str, inputs: MergeInputs, settings: dict, point: str | None) -> Recipe:
    """The recipe of `method`'s model on `track` (at `point` of its grid, for a method with one)."""
    system = get_system(method)
    if (point is None) == bool(system.points(settings)):
        raise ExmeError(
            f"{method}: grid point {point!r} given for a method with grid {system.points(settings)}"
        )
    recipe = system.recipe(inputs, settings, point)
    return replace(recipe, metadata={**recipe.metadata, "track": track})


def check_system(name: str, n_models: int, where: str) -> None:
    """A clear error where a method cannot merge a track's number of models (slerp takes two)."""
    low, high = get_system(name).models
    if n_models < low or (high is not None and n_models > high):
        takes = f"exactly {low}" if low == high else f"at least {low}"
        raise ExmeError(f"{where}: {name} merges {takes} models, the track has {n_models}")


def _models(inputs: MergeInputs, weights: list[float]) -> list[dict]:
    return [
        {"model": model.path, "parameters": {"weight": weight}}
        for model, weight in zip(inputs.models, weights, strict=True)
    ]


def _recipe(
    method: str, inputs: MergeInputs, models: list[dict], metadata: dict, *, base: str | None, **extra
) -> Recipe:
    """A system's recipe: the tokenizer of the first input model, described with the inputs' names."""
    tokenizer = inputs.models[0].path
    return engine_recipe(
        method,
        models,
        base=base,
        tokenizer=tokenizer,
        metadata={"source": inputs.source, **metadata},
        **extra,
    )


# Grid points are written into file names: "s0.5" is a scaling, "d3" the fourth M³ draw.
def scaling_points(settings: dict) -> list[str]:
    return [f"s{scale:g}" for scale in settings["scaling_grid"]]


def point_values(point: str) -> dict[str, float]:
    """{letter: value} of a grid point: "t0.1l2" -> {"t": 0.1, "l": 2.0}."""
    return {letter: float(value) for letter, value in re.findall(r"([a-z])(\d+(?:\.\d+)?)", point)}


def point_value(point: str) -> float:
    return float(point[1:])


def _linear(inputs: MergeInputs, settings: dict, point: str | None) -> Recipe:
    weights = [1 / len(inputs.models)] * len(inputs.models)
    # An average of the models themselves: no base model.
    return _recipe("linear", inputs, _models(inputs, weights), {"method": "linear"}, base=None)


def _task_arithmetic(inputs: MergeInputs, settings: dict, point: str | None) -> Recipe:
    scale = point_value(point)
    models = _models(inputs, [scale] * len(inputs.models))
    metadata = {"method": "task_arithmetic", "scaling": scale}
    return _recipe("task_arithmetic", inputs, models, metadata, base=inputs.base)


def _ties_like(method: str) -> Callable[[MergeInputs, dict, str | None], Recipe]:
    def recipe(inputs: MergeInputs, settings: dict, point: str | None) -> Recipe:
        models = _models(inputs, [1.0] * len(inputs.models))
        for model in models:
            model["parameters"]["density"] = settings["density"]
        metadata = {"method": method, "scaling": settings["scaling"], "density": settings["density"]}
        parameters = {"lambda": settings["scaling"], "normalize": True}
        return _recipe(
            method, inputs, models, metadata, base=inputs.base, parameters=parameters, random_seed=inputs.seed
        )

    return recipe


def _slerp(inputs: MergeInputs, settings: dict, point: str | None) -> Recipe:
    first, second = inputs.models
    return engine_recipe(
        "slerp",
        [{"model": second.path}],
        base=first.path,  # slerp interpolates from its base_model towards the other model
        tokenizer=first.path,
        parameters={"t": settings["t"]},
        metadata={"method": "slerp", "source": inputs.source, "t": settings["t"]},
    )


register(MergeSystem("linear", _linear))
register(MergeSystem("task_arithmetic", _task_arithmetic, grid=scaling_points))
register(MergeSystem("ties", _ties_like("ties")))
register(MergeSystem("dare_ties", _ties_like("dare_ties")))
register(MergeSystem("slerp", _slerp, models=(2, 2)))


def mixup_lambdas(seed: int, concentration: float, draws: int, n_models: int) -> list[list[float]]:
    """The M³ coefficient vectors of a run: `draws` samples of Dirichlet(a, …, a) (Beta(a, a) for
    two models), reproducible from the seed and the same for every M³ variant."""
    if concentration <= 0:
        raise ExmeError(f"mixup.concentration must be > 0, got {concentration}")
    generator = np.random.default_rng(seed)
    return generator.dirichlet([concentration] * n_models, size=draws).tolist()


def _mixup_points(settings: dict) -> list[str]:
    return [f"d{draw}" for draw in range(settings["draws"])]


def _mixup(variant: str) -> Callable[[MergeInputs, dict, str | None], Recipe]:
    """M³ at one draw λ: averaging Σλᵢθᵢ, task arithmetic θ₀ + s·Σλᵢτᵢ, or TIES with λ-weighted
    agreeing entries (mergekit's normalised TIES with weights λᵢ); with `dare`, DARE first drops
    and rescales each task vector (for TIES this is mergekit's dare_ties: random drop in place of
    the magnitude trim)."""

    def recipe(inputs: MergeInputs, settings: dict, point: str) -> Recipe:
        draw = int(point_value(point))
        lambdas = mixup_lambdas(inputs.seed, settings["concentration"], settings["draws"], len(inputs.models))
        weights = lambdas[draw]
        scale = settings["scaling"]
        metadata = {"method": f"m3_{variant}", "draw": draw, "lambda": weights[0]}
        dare = settings["dare"]
        parameters: dict = {}
        if variant == "linear":
            method = "dare_linear" if dare else "linear"
            parameters["normalize"] = False
        elif variant == "task_arithmetic":
            method = "dare_linear" if dare else "task_arithmetic"
            weights = [scale * weight for weight in weights]
            metadata["scaling"] = scale
        else:
            method = "dare_ties" if dare else "ties"
            parameters = {"lambda": scale, "normalize": True}
            metadata["scaling"] = scale
        models = _models(inputs, weights)
        density = (
            settings["dare_density"] if dare else settings["ties_density"] if variant == "ties" else None
        )
        for model in models if density is not None else ():
            model["parameters"]["density"] = density
        base = None if method == "linear" else inputs.base
        return _recipe(
            method, inputs, models, metadata, base=base, parameters=parameters, random_seed=inputs.seed
        )

    return recipe


for _variant in ("linear", "task_arithmetic", "ties"):
    register(
        MergeSystem(
            f"m3_{_variant}",
            _mixup(_variant),
            grid=_mixup_points,
            settings_key="mixup",
            test_every_point=True,
        )
    )


def _se_points(settings: dict) -> list[str]:
    return [f"t{t:g}l{layer}" for t in settings["temperatures"] for layer in settings["layers"]]


def _se_merging(inputs: MergeInputs, settings: dict, point: str) -> Recipe:
    """SE-Merging (Chen et al., arXiv 2506.18135) over the static merge θ₀ + s·Σₖτₖ: the recipe is
    that static merge; its metadata holds the per-sample rescaling's temperature, layer and
    similarity, which exme.evaluate.se_merging applies at evaluation (the model is dynamic, so no
    weights are ever written)."""
    values = point_values(point)
    scale = settings["scaling"]
    metadata = {
        "method": "se_merging",
        "scaling": scale,
        "temperature": values["t"],
        "layer": int(values["l"]),
        "similarity": settings["similarity"],
    }
    models = _models(inputs, [scale] * len(inputs.models))
    return _recipe("task_arithmetic", inputs, models, metadata, base=inputs.base)


register(MergeSystem("se_merging", _se_merging, grid=_se_points))

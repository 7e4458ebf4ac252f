"""Top-k greedy merging in the workflow: the file names of a pool's models, the recipes of a
generation, and one step of the loop (score the last generation, stop or grow the next one).

Generation 1 (every pair of the track's input models) is the same for both variants, with and
without exploration, so its models are named and evaluated once, under the variant `greedy`.
Every generated model is a recipe whose models are its parents' recipes or folders (a recipe of
recipes, resolved by the merge engine tensor by tensor), so no generation writes model weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from exme.pipeline.catalogue import match_name, model_name
from exme.pipeline.greedy import Pool, converged, next_generation
from exme.pipeline.merging import MergeInputs, Source, merge_recipe
from exme.pipeline.recipes import engine_recipe
from exme.pipeline.selection import top_k

if TYPE_CHECKING:
    from exme.merge.recipe import Recipe

SHARED_VARIANT = "greedy"  # generation 1's models are named under this variant for both variants


def file_name(track: str, variant: str, pool_name: str) -> str:
    """The model name of a pool member: an input keeps its own, a merge `g{N}-m{i}` is named
    `{track}-{variant}-g{N}-m{i}`."""
    fields = match_name("greedy_model", f"{track}-{SHARED_VARIANT}-{pool_name}")
    if fields is None:
        return pool_name
    generation = int(fields["generation"])
    return model_name(
        "greedy_model",
        track=track,
        variant=SHARED_VARIANT if generation == 1 else variant,
        generation=generation,
        index=fields["index"],
    )


def generation_dir(root: str, track: str, variant: str, generation: int | str) -> str:
    """The folder, under a seed's greedy folder `root`, of a generation's recipes and pool (the
    shared generation 1 is `{track}-pairs`)."""
    if int(generation) == 1:
        return f"{root}/{track}-pairs"
    return f"{root}/{track}-{variant}/g{generation}"


def generation_recipe_file(folder: str | Path, name: str) -> str:
    """The recipe file of the generated model `name` in its generation's `folder`."""
    return f"{folder}/recipes/{name}.yaml"


def member_location(name: str, root: str, experts: Mapping[str, str]) -> str:
    """The folder or recipe file of a pool member named `name` (an expert, or a generated model)."""
    if name in experts:
        return experts[name]
    fields = match_name("greedy_model", name)
    return generation_recipe_file(
        generation_dir(root, fields["track"], fields["variant"], fields["generation"]), name
    )


def generation_recipes(
    pool: Pool,
    *,
    track: str,
    variant: str,
    root: str,
    experts: Mapping[str, str],
    base: str,
    method: str,
    settings: dict,
    seed: int,
) -> dict[str, Recipe]:
    """{model name: recipe} of the pool's newest generation, whose parents are found through
    member_location(root, experts)."""
    recipes = {}
    for member in pool.models:
        if member.generation != pool.generation or not member.parents:
            continue
        names = [file_name(track, variant, parent) for parent in member.parents]
        parents = tuple(Source(name, member_location(name, root, experts)) for name in names)
        recipe = merge_recipe(method, track, MergeInputs(base, parents, seed), settings, None)
        metadata = {
            "method": variant,
            "track": track,
            "source": "+".join(parent.name for parent in parents),
            "generation": member.generation,
        }
        recipes[file_name(track, variant, member.name)] = replace(recipe, metadata=metadata)
    return recipes


def step(
    pool: Pool,
    scores: Mapping[str, float],
    *,
    track: str,
    variant: str,
    k: int,
    max_generations: int,
    kinship: Callable[[str, str], float] | None,
    exploration: str,
) -> tuple[Pool, Pool | None]:
    """Score the pool's unscored members (`scores` by file name) and either stop (None) or return
    the pool grown by the next generation."""
    scored = pool.with_scores({name: scores[file_name(track, variant, name)] for name in pool.unscored()})
    before = Pool(tuple(m for m in scored.models if m.generation < scored.generation), scored.generation - 1)
    if converged(before if scored.generation > 1 else None, scored, k, max_generations):
        return scored, None
    explore = variant != SHARED_VARIANT
    return scored, next_generation(scored, k, explore=explore, kinship=kinship, exploration=exploration)


def best_model_recipe(pool: Pool, track: str, variant: str, root: str, experts: Mapping[str, str]) -> Recipe:
    """The recipe of the pool's best member by dev score (ties: the earlier), as a recipe naming
    that member's folder or recipe, described as the variant's result."""
    best = top_k({member.name: member.score for member in pool.models}, 1)[0]
    name = file_name(track, variant, best)
    return engine_recipe(
        "linear",
        [{"model": member_location(name, root, experts), "parameters": {"weight": 1.0}}],
        base=None,
        tokenizer=None,
        metadata={
            "method": variant,
            "track": track,
            "source": name,
            "generation": pool.model(best).generation,
        },
    )

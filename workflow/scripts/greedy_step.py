"""Checkpoint greedy_step: score the last generation on dev; stop, or write the next generation's
recipes (pairs of the top k and, exploring, the best model with its least related partner)."""

from pathlib import Path

from exme.device import use_threads
from exme.files import read_json, staged_dir, write_json
from exme.merge.kinship import kinship
from exme.merge.recipe import write_recipe
from exme.pipeline.greedy import Pool
from exme.pipeline.greedy_steps import (
    file_name,
    generation_recipe_file,
    generation_recipes,
    member_location,
    step,
)
from exme.pipeline.rule_script import run_rule
from exme.pipeline.selection import dev_means


def main(smk):
    use_threads(smk.threads)
    track, variant, greedy = smk.wildcards.track, smk.wildcards.variant, smk.params.greedy
    root, experts, metric = smk.params.root, smk.params.experts, greedy["metric"]

    def similarity(a: str, b: str) -> float:
        """Kinship as a similarity: the Euclidean distance counts negatively."""
        paths = [member_location(file_name(track, variant, name), root, experts) for name in (a, b)]
        value = getattr(kinship(*paths, smk.input.base), metric)
        return -value if metric == "ed" else value

    scored, grown = step(
        Pool.from_dict(read_json(smk.input.pool)["next"]),
        dev_means(smk.input.evaluations),
        track=track,
        variant=variant,
        k=greedy["k"],
        max_generations=greedy["max_generations"],
        kinship=similarity,
        exploration=greedy["exploration"],
    )
    with staged_dir(smk.output[0]) as staging:
        if grown is not None:
            recipes = generation_recipes(
                grown,
                track=track,
                variant=variant,
                root=root,
                experts=experts,
                base=smk.input.base,
                method=greedy["method"],
                settings=smk.params.settings,
                seed=smk.params.seed,
            )
            for name, recipe in recipes.items():
                write_recipe(recipe, generation_recipe_file(staging, name))
        write_json(
            Path(staging) / "pool.json", {"scored": scored.to_dict(), "next": grown and grown.to_dict()}
        )


run_rule(main, snakemake)  # noqa: F821

"""Checkpoint write_greedy_pairs: greedy merging's generation 1, a merge of every pair of experts,
as recipes beside the pool that lists them (shared by both greedy variants)."""

from pathlib import Path

from exme.files import staged_dir, write_json
from exme.merge.recipe import write_recipe
from exme.pipeline.greedy import first_generation
from exme.pipeline.greedy_steps import SHARED_VARIANT, generation_recipe_file, generation_recipes
from exme.pipeline.rule_script import run_rule


def main(smk):
    pool = first_generation(list(smk.params.experts))
    recipes = generation_recipes(
        pool,
        track=smk.wildcards.track,
        variant=SHARED_VARIANT,
        root=smk.params.root,
        experts=smk.params.experts,
        base=smk.input.base,
        method=smk.params.greedy["method"],
        settings=smk.params.settings,
        seed=smk.params.seed,
    )
    with staged_dir(smk.output[0]) as staging:
        for name, recipe in recipes.items():
            write_recipe(recipe, generation_recipe_file(staging, name))
        write_json(Path(staging) / "pool.json", {"scored": None, "next": pool.to_dict()})


run_rule(main, snakemake)  # noqa: F821

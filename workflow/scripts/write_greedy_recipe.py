"""Rule write_greedy_recipe: the best model greedy merging found (by dev score), as a recipe, and
the final pool with every member's dev score (for the figure of the best score per generation)."""

from exme.files import read_json, write_json
from exme.merge.recipe import write_recipe
from exme.pipeline.greedy import Pool
from exme.pipeline.greedy_steps import best_model_recipe
from exme.pipeline.rule_script import run_rule


def main(smk):
    pool = Pool.from_dict(read_json(smk.input.pool)["scored"])
    wildcards, params = smk.wildcards, smk.params
    recipe = best_model_recipe(pool, wildcards.track, wildcards.variant, params.root, params.experts)
    write_recipe(recipe, smk.output.recipe)
    write_json(smk.output.pool, pool.to_dict())


run_rule(main, snakemake)  # noqa: F821

"""Rules write_exme_grid_recipe, write_exme_recipe: the recipe of ExMe at a beta of the grid, or at
the beta chosen on dev, with each checkpoint at its chosen alpha (no weights are written)."""

from exme.files import read_json
from exme.merge.recipe import write_recipe
from exme.pipeline.recipes import exme_recipe
from exme.pipeline.rule_script import run_rule
from exme.pipeline.selection import chosen_alpha, selected_checkpoints


def main(smk):
    checkpoints = selected_checkpoints(read_json(smk.input.selection), smk.input.checkpoints)
    alphas = read_json(smk.input.alphas)
    beta = smk.params.beta
    if beta is None:
        beta = read_json(smk.input.betas)["beta"]
    recipe = exme_recipe(
        smk.input.base,
        checkpoints,
        [chosen_alpha(alphas, checkpoint.rank) for checkpoint in checkpoints],
        beta,
        smk.params.dtype,
    )
    write_recipe(recipe, smk.output[0])


run_rule(main, snakemake)  # noqa: F821

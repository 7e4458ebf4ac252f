"""Rules write_expo_grid_recipe, write_expo_recipe, write_expo_step_recipe: the recipe of EXPO-{rank}
at an alpha of the grid or at the alpha chosen on dev, or of any checkpoint (by its step) at an alpha
of the grid (no weights are written)."""

from exme.files import read_json
from exme.merge.recipe import write_recipe
from exme.pipeline.recipes import expo_recipe
from exme.pipeline.rule_script import run_rule
from exme.pipeline.selection import checkpoint_at, chosen_alpha, selected_checkpoints


def main(smk):
    alpha = smk.params.alpha
    if hasattr(smk.wildcards, "step"):
        checkpoint = checkpoint_at(smk.input.checkpoints, int(smk.wildcards.step))
    else:
        rank = int(smk.wildcards.rank)
        checkpoint = selected_checkpoints(read_json(smk.input.selection), smk.input.checkpoints)[rank - 1]
        if alpha is None:
            alpha = chosen_alpha(read_json(smk.input.alphas), rank)
    write_recipe(expo_recipe(smk.input.base, checkpoint, alpha), smk.output[0])


run_rule(main, snakemake)  # noqa: F821

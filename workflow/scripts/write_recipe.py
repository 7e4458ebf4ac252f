"""Rule recipe: the mergekit-format recipe of an EXPO or ExMe model (no weights are written)."""

from exme.files import read_json
from exme.naming import parse_model_name
from exme.pipeline_recipes import recipe_for
from exme.recipe import recipe_from_dict, write_recipe
from exme.rule_script import run_rule


def main(smk):
    selection = read_json(smk.input.selection)["selected"]
    chosen_alphas = None
    if "alphas" in smk.input.keys():  # noqa: SIM118 (Namedlist `in` tests values)
        chosen = read_json(smk.input.alphas)["chosen"]
        chosen_alphas = [chosen[str(entry["rank"])]["alpha"] for entry in selection]
    chosen_beta = read_json(smk.input.betas)["beta"] if "betas" in smk.input.keys() else None  # noqa: SIM118
    recipe = recipe_for(
        parse_model_name(smk.wildcards.recipe),
        base=smk.input.base,
        selected=[f"{smk.input.checkpoints}/step-{entry['step']}" for entry in selection],
        chosen_alphas=chosen_alphas,
        chosen_beta=chosen_beta,
        dtype=smk.params.dtype,
    )
    write_recipe(recipe_from_dict(recipe), smk.output[0])


run_rule(main, snakemake)  # noqa: F821

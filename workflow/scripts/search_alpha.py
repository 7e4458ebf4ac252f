"""Rule search_alpha: for each selected checkpoint, the extrapolation alpha with the best dev score."""

from exme.files import write_json
from exme.pipeline.catalogue import format_coef, model_name
from exme.pipeline.rule_script import run_rule
from exme.pipeline.selection import best_on_grid, dev_means


def main(smk):
    means = dev_means(smk.input.evaluations)
    chosen, curves = {}, {}
    for rank in smk.params.ranks:
        curve = {alpha: means[model_name("expo_grid", rank=rank, alpha=alpha)] for alpha in smk.params.grid}
        alpha = best_on_grid(curve)
        chosen[rank] = {"alpha": alpha, "dev_mean": curve[alpha]}
        curves[rank] = {format_coef(alpha): mean for alpha, mean in curve.items()}
    write_json(smk.output[0], {"strategy": smk.params.strategy, "chosen": chosen, "curves": curves})


run_rule(main, snakemake)  # noqa: F821

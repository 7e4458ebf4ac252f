"""Rule search_beta: the ExMe merging weight beta with the best dev score, at the chosen alphas."""

from exme.files import write_json
from exme.pipeline.catalogue import format_coef, model_name
from exme.pipeline.rule_script import run_rule
from exme.pipeline.selection import best_on_grid, dev_means


def main(smk):
    means = dev_means(smk.input.evaluations)
    curve = {beta: means[model_name("exme_grid", beta=beta)] for beta in smk.params.grid}
    beta = best_on_grid(curve)
    write_json(
        smk.output[0],
        {
            "strategy": smk.params.strategy,
            "beta": beta,
            "dev_mean": curve[beta],
            "curve": {format_coef(b): mean for b, mean in curve.items()},
        },
    )


run_rule(main, snakemake)  # noqa: F821

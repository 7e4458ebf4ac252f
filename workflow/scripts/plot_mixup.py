"""Rule plot_mixup: every M³ draw's dev and test score against λ, for one track and seed."""

import pandas as pd

from exme.pipeline.report import plot_mixup
from exme.pipeline.rule_script import run_rule


def main(smk):
    table = pd.read_csv(smk.input.scores)
    plot_mixup(table[table["seed"] == smk.params.seed], smk.wildcards.track, smk.output[0])


run_rule(main, snakemake)  # noqa: F821

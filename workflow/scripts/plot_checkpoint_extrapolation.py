"""Rule plot_checkpoint_extrapolation: every checkpoint's dev score against α, for one seed."""

import pandas as pd

from exme.pipeline.report import plot_checkpoint_extrapolation
from exme.pipeline.rule_script import run_rule


def main(smk):
    table = pd.read_csv(smk.input.scores)
    plot_checkpoint_extrapolation(table[table["seed"] == smk.params.seed], smk.output[0])


run_rule(main, snakemake)  # noqa: F821

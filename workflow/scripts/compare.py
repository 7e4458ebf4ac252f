"""Rule compare: every method on both tracks over the seeds, as comparison.md and a figure."""

import pandas as pd

from exme.files import write_text
from exme.pipeline.comparison import comparison_markdown, plot_comparison
from exme.pipeline.rule_script import run_rule


def main(smk):
    table = pd.read_csv(smk.input.scores)
    write_text(smk.output.table, comparison_markdown(smk.params.run, table))
    plot_comparison(table, smk.output.figure)


run_rule(main, snakemake)  # noqa: F821

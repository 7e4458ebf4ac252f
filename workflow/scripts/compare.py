"""Rule compare: every method on both tracks over the seeds, and its paired differences against its
reference models, as comparison.md and a forest plot."""

import pandas as pd

from exme.files import write_text
from exme.pipeline.comparison import comparison_markdown, paired_differences, plot_comparison
from exme.pipeline.rule_script import run_rule
from exme.pipeline.scores import read_items


def main(smk):
    table = pd.read_csv(smk.input.scores)
    paired = paired_differences(table, read_items(smk.input.per_item))
    write_text(smk.output.table, comparison_markdown(smk.params.run, table, paired))
    plot_comparison(paired, smk.output.figure)


run_rule(main, snakemake)  # noqa: F821

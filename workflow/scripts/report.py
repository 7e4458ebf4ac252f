"""Rule report: extrapolation and merging curves, the final comparison, and summary.md."""

from pathlib import Path

import pandas as pd

from exme.files import read_json, write_text
from exme.pipeline.report import plot_beta, plot_comparison, plot_extrapolation, summary_markdown
from exme.pipeline.rule_script import run_rule


def main(smk):
    table = pd.read_csv(smk.input.scores)
    table = table[table["seed"] == smk.params.seed]
    selection, alphas, betas = (read_json(smk.input[key]) for key in ("selection", "alphas", "betas"))
    for path in smk.output.extrapolation:
        task = Path(path).stem.removeprefix("extrapolation_")
        plot_extrapolation(table, selection, alphas, task, path)
    plot_beta(table, betas, smk.output.beta)
    plot_comparison(table, selection, smk.output.comparison)
    write_text(smk.output.summary, summary_markdown(smk.params.run, table, selection, alphas, betas))


run_rule(main, snakemake)  # noqa: F821

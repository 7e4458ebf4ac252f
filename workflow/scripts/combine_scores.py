"""Rule combine_scores: the seeds' score tables as one."""

from exme.files import write_text
from exme.pipeline.rule_script import run_rule
from exme.pipeline.scores import combined


def main(smk):
    write_text(smk.output[0], combined(smk.input).to_csv(index=False))


run_rule(main, snakemake)  # noqa: F821

"""Rule combine_scores: the seeds' score tables as one, and their item tables as one."""

from exme.files import write_text
from exme.pipeline.rule_script import run_rule
from exme.pipeline.scores import combined, combined_items, write_items


def main(smk):
    write_text(smk.output.scores, combined(smk.input.scores).to_csv(index=False))
    write_items(combined_items(smk.input.per_item), smk.output.per_item)


run_rule(main, snakemake)  # noqa: F821

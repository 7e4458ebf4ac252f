"""Rule collect_scores: every evaluation of one seed (and the shared base model's) in one tidy CSV,
and each test item's metric value in another."""

from exme.files import read_json, write_text
from exme.pipeline.rule_script import run_rule
from exme.pipeline.scores import tidy_items, tidy_scores, write_items


def main(smk):
    seed = smk.params.seed
    table = tidy_scores(
        smk.input.evaluations, selections={seed: read_json(smk.input.selection)}, seeds=[seed]
    )
    write_text(smk.output.scores, table.to_csv(index=False))
    write_items(tidy_items(smk.input.evaluations, seeds=[seed]), smk.output.per_item)


run_rule(main, snakemake)  # noqa: F821

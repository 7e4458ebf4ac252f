"""Rule collect_scores: every evaluation of the run in one tidy CSV."""

from exme.files import read_json, write_text
from exme.pipeline.rule_script import run_rule
from exme.pipeline.scores import tidy_scores


def main(smk):
    selections = {
        seed: read_json(path) for seed, path in zip(smk.params.seeds, smk.input.selections, strict=True)
    }
    table = tidy_scores(smk.input.evaluations, selections=selections, seeds=smk.params.seeds)
    write_text(smk.output[0], table.to_csv(index=False))


run_rule(main, snakemake)  # noqa: F821

"""Checkpoint select_checkpoints: the top-k SFT checkpoints by mean dev score."""

from exme.files import write_json
from exme.pipeline.catalogue import sft_step
from exme.pipeline.rule_script import run_rule
from exme.pipeline.selection import dev_means, top_k


def main(smk):
    means = dev_means(smk.input.evaluations)
    ranking = [{"model": name, "step": sft_step(name), "dev_mean": mean} for name, mean in means.items()]
    selected = [
        {"rank": rank, **next(entry for entry in ranking if entry["model"] == name)}
        for rank, name in enumerate(top_k(means, smk.params.top_k), start=1)
    ]
    write_json(smk.output.selection, {"selected": selected, "ranking": ranking})


run_rule(main, snakemake)  # noqa: F821

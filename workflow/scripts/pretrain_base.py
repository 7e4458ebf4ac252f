"""Rule pretrain_base: the demo's tiny base model, pretrained briefly on generic text."""

from pathlib import Path

from exme.demo.base_model import pretrain_base
from exme.device import use_threads
from exme.pipeline.rule_script import run_rule


def main(smk):
    use_threads(smk.threads)
    pretrain_base(
        smk.output[0],
        Path(smk.input.data) / "pretrain.txt",
        **smk.params.model,
        **smk.params.pretrain,
        seed=smk.params.seed,
    )


run_rule(main, snakemake)  # noqa: F821

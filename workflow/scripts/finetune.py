"""Rule finetune: SFT with the Hugging Face Trainer; resumes from its state folder after a kill."""

from exme.device import use_threads
from exme.pipeline.rule_script import run_rule
from exme.train.sft import finetune


def main(smk):
    use_threads(smk.threads)
    finetune(
        smk.input.base,
        smk.params.train_file,
        smk.output[0],
        smk.params.state_dir,
        **smk.params.hyperparameters,
        seed=smk.params.seed,
    )


run_rule(main, snakemake)  # noqa: F821

"""Rule download_sft_data: the SFT data given as a Hub data set, as the JSONL fine-tuning reads."""

from exme.offline import set_offline
from exme.pipeline.rule_script import run_rule


def main(smk):
    set_offline(False)  # before `datasets` is imported, which reads the flags then
    from exme.train.hub_data import write_hub_sft_data

    written = write_hub_sft_data(smk.output[0], **smk.params.dataset)
    print(f"{written} records from {smk.params.dataset['path']}")


run_rule(main, snakemake)  # noqa: F821

"""Rule download_base: the base model named by a Hub id, downloaded into the Hugging Face cache on
the submitting machine and linked into the run's folder, where the (offline) jobs read it."""

from exme.merge.io.model_ids import hub_model
from exme.merge.io.references import link_hub_model
from exme.offline import set_offline
from exme.pipeline.rule_script import run_rule


def main(smk):
    set_offline(False)  # this local rule runs where the Hub can be reached
    link_hub_model(hub_model(smk.params.model), smk.output[0], "model.base")


run_rule(main, snakemake)  # noqa: F821

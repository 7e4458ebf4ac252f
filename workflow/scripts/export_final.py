"""Rule export_final: the ExMe model as a Hugging Face folder, streamed by the merge engine."""

from exme.device import use_threads
from exme.merge.execute import merge_to_dir
from exme.merge.multi import load_recipe
from exme.pipeline.rule_script import run_rule


def main(smk):
    use_threads(smk.threads)
    merge_to_dir(load_recipe(smk.input.recipe), smk.output[0], shard_size=smk.params.shard_size)


run_rule(main, snakemake)  # noqa: F821

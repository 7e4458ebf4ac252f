"""Rule prefetch: download the Hugging Face data sets of the configured lm-eval tasks into the cache
that the (offline) evaluation jobs read. The demo passes no tasks: its data are local files."""

from exme.files import write_json
from exme.offline import set_offline
from exme.pipeline.rule_script import run_rule


def main(smk):
    fetched = []
    if smk.params.tasks:
        set_offline(False)  # before Hugging Face libraries are imported: they read the flags then
        from exme.evaluate.harness import fetch_datasets, hub_datasets

        fetched = hub_datasets(smk.params.tasks, smk.params.include_path)
        fetch_datasets(fetched)
    write_json(smk.output[0], {"datasets": fetched})


run_rule(main, snakemake)  # noqa: F821

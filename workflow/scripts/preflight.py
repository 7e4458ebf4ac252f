"""Rule preflight: check, before any fine-tuning, that the jobs will find everything they read
(exme.pipeline.preflight); its output records what was checked."""

import time

from exme.files import write_json
from exme.pipeline.rule_script import run_rule


def main(smk):
    from exme.pipeline.preflight import run_preflight

    start = time.perf_counter()
    checked = run_preflight(
        tasks=smk.params.tasks,
        include_path=smk.params.include_path,
        settings=smk.params.settings,
        base_dir=smk.input.base,
        training_files=smk.params.training_files,
        se_merging_layers=smk.params.se_merging_layers,
    )
    write_json(smk.output[0], {**checked, "seconds": round(time.perf_counter() - start, 1)})


run_rule(main, snakemake)  # noqa: F821

"""Rule build_demo_data: the demo's synthetic tasks, SFT data, pretraining text and lm-eval YAMLs."""

from exme.demo.tasks import write_demo_data
from exme.pipeline.rule_script import run_rule


def main(smk):
    params = smk.params
    write_demo_data(
        smk.output[0],
        task_names=params.tasks,
        n_train=params.n_train,
        n_dev=params.n_dev,
        n_test=params.n_test,
        seed=params.seed,
        pretrain_lines=params.n_pretrain_lines,
    )


run_rule(main, snakemake)  # noqa: F821

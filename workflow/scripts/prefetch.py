"""Rule prefetch: build every configured lm-eval task with the Hub reachable, so that what the tasks
load (data sets, HF evaluate metric modules) lands in the cache the offline jobs read. The demo
passes no tasks: its data are local files."""

from exme.files import write_json
from exme.pipeline.rule_script import run_rule


def main(smk):
    if smk.params.tasks:
        from exme.pipeline.preflight import check_tasks, report

        settings = smk.params.settings
        problems = check_tasks(
            smk.params.tasks,
            include_path=smk.params.include_path,
            settings=settings,
            datasets=settings["datasets"],
            offline=False,
        )
        report(problems, "prefetch")
    write_json(smk.output[0], {"tasks": [task["name"] for task in smk.params.tasks]})


run_rule(main, snakemake)  # noqa: F821

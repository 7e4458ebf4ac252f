"""Rules evaluate and evaluate_<grid>: lm-eval on models (folders, or recipes built in memory) and
one split, each model's scores written as soon as it is evaluated."""

from exme.device import use_threads
from exme.evaluate.harness import evaluate_model, scores_from_results
from exme.evaluate.models import load_model
from exme.files import write_json
from exme.pipeline.catalogue import recipe_description
from exme.pipeline.rule_script import run_rule


def main(smk):
    use_threads(smk.threads)
    params, split = smk.params, smk.wildcards.split
    # The pipeline's dev and test are, per task, the data set splits its `splits` names.
    task_splits = {task["name"]: task["splits"][split] for task in params.tasks}
    metrics = {task["name"]: task["metric"] for task in params.tasks}
    for name, location, description, output in zip(
        params.models, params.locations, params.descriptions, smk.output, strict=True
    ):
        model, tokenizer = load_model(location)
        results = evaluate_model(
            model,
            tokenizer,
            task_splits=task_splits,
            include_path=params.include_path,
            batch_size=params.batch_size,
            seed=0,  # lm-eval's own default random_seed, the same for every model
            limit=params.limit,
        )
        write_json(
            output,
            {
                "model": name,
                "scope": smk.wildcards.scope,
                "split": split,
                "dataset_splits": task_splits,
                "source": str(location),
                "description": description or recipe_description(location),
                "scores": scores_from_results(results, metrics),
                "n_samples": results.get("n-samples"),
                "lm_eval_results": results["results"],
            },
        )


run_rule(main, snakemake)  # noqa: F821

"""Rule evaluate: lm-eval on one model (a folder, or a recipe built in memory) and one split."""

from exme.device import use_threads
from exme.evaluate.harness import evaluate_model, scores_from_results
from exme.evaluate.models import load_model
from exme.files import write_json
from exme.pipeline.catalogue import recipe_description
from exme.pipeline.rule_script import run_rule


def main(smk):
    use_threads(smk.threads)
    params = smk.params
    model, tokenizer = load_model(params.location)
    # The pipeline's dev and test are, per task, the data set splits its `splits` names.
    task_splits = {task["name"]: task["splits"][smk.wildcards.split] for task in params.tasks}
    results = evaluate_model(
        model,
        tokenizer,
        task_splits=task_splits,
        include_path=params.include_path,
        batch_size=params.batch_size,
        seed=0,  # lm-eval's own default random_seed, the same for every model
        limit=params.limit,
    )
    scores = scores_from_results(results, {task["name"]: task["metric"] for task in params.tasks})
    write_json(
        smk.output[0],
        {
            "model": smk.wildcards.model,
            "scope": smk.wildcards.scope,
            "split": smk.wildcards.split,
            "dataset_splits": task_splits,
            "source": str(params.location),
            "description": params.description or recipe_description(params.location),
            "scores": scores,
            "n_samples": results.get("n-samples"),
            "lm_eval_results": results["results"],
        },
    )


run_rule(main, snakemake)  # noqa: F821

"""Rule evaluate: lm-eval on one model (a folder, or a recipe built in memory) and one split."""

from pathlib import Path

from exme.device import use_threads
from exme.offline import set_offline
from exme.pipeline.config import TASK_LM_EVAL_SETTINGS
from exme.pipeline.rule_script import run_rule


def main(smk):
    params, settings = smk.params, smk.params.settings
    set_offline(not settings["allow_downloads"])  # before transformers and lm-eval are imported
    from exme.evaluate.harness import evaluate_model, scores_from_results, write_samples
    from exme.evaluate.models import RECIPE_SUFFIXES, load_model
    from exme.files import write_json
    from exme.pipeline.catalogue import recipe_description

    use_threads(smk.threads)
    model, tokenizer = load_model(params.location, dtype=settings["dtype"])
    # The pipeline's dev and test are, per task, the data set splits its `splits` names.
    task_splits = {task["name"]: task["splits"][smk.wildcards.split] for task in params.tasks}
    # Beside the evaluation file: the generated task YAMLs that choose the split (the recorded
    # `lm_eval` commands read them) and, with log_samples, lm-eval's per-sample outputs.
    stem = Path(smk.output[0]).with_suffix("")
    is_folder = Path(params.location).suffix not in RECIPE_SUFFIXES
    results = evaluate_model(
        model,
        tokenizer,
        task_splits=task_splits,
        include_path=params.include_path,
        batch_size=params.batch_size,
        limit=params.limit,
        settings={key: settings[key] for key in TASK_LM_EVAL_SETTINGS},
        task_settings={
            task["name"]: {key: task[key] for key in TASK_LM_EVAL_SETTINGS if key in task}
            for task in params.tasks
        },
        seeds=settings["seed"],
        bootstrap_iters=settings["bootstrap_iters"],
        log_samples=settings["log_samples"],
        task_dir=f"{stem}.tasks",
        model_location=params.location if is_folder else None,
        dtype=settings["dtype"],
        offline=not settings["allow_downloads"],
    )
    scores = scores_from_results(results, {task["name"]: task["metric"] for task in params.tasks})
    if settings["log_samples"]:
        write_samples(results, f"{stem}.samples")
    write_json(
        smk.output[0],
        {
            "model": smk.wildcards.model,
            "split": smk.wildcards.split,
            "dataset_splits": task_splits,
            "source": str(params.location),
            "description": params.description or recipe_description(params.location),
            "scores": scores,
            "n_samples": results.get("n-samples"),
            "dtype": str(model.dtype).removeprefix("torch."),
            "lm_eval_runs": results["lm_eval_runs"],
            "lm_eval_results": results["results"],
        },
    )


run_rule(main, snakemake)  # noqa: F821

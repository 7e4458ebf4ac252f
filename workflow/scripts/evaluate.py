"""Rules evaluate and evaluate_<grid>: lm-eval on models (folders, or recipes built in memory) and
one split, each model's scores written as soon as it is evaluated."""

from pathlib import Path

from exme.device import use_threads
from exme.evaluate.settings import RunSettings, task_lm_eval_settings
from exme.offline import set_offline
from exme.pipeline.rule_script import run_rule


def main(smk):
    params, settings, split = smk.params, smk.params.settings, smk.wildcards.split
    set_offline(not settings["allow_downloads"])  # before transformers and lm-eval are imported
    from exme.evaluate.harness import evaluate_model, item_scores, scores_from_results, write_samples
    from exme.evaluate.models import load_model
    from exme.evaluate.se_merging import se_merging_lm
    from exme.files import write_json
    from exme.merge.plan import names_recipe
    from exme.pipeline.catalogue import recipe_description
    from exme.pipeline.scores import ITEM_SPLIT

    use_threads(smk.threads)
    # Per-item values on test feed the paired comparisons; they need lm-eval's per-sample outputs.
    keep_items = split == ITEM_SPLIT
    # The pipeline's dev and test are, per task, the data set splits its `splits` names.
    task_splits = {task["name"]: task["splits"][split] for task in params.tasks}
    metrics = {task["name"]: task["metric"] for task in params.tasks}
    task_settings = {task["name"]: task_lm_eval_settings(task, settings) for task in params.tasks}
    run = RunSettings(
        batch_size=params.batch_size,
        limit=params.limit,
        seeds=settings["seed"],
        bootstrap_iters=settings["bootstrap_iters"],
        log_samples=settings["log_samples"] or keep_items,
        dtype=settings["dtype"],
    )
    for name, location, description, output in zip(
        params.models, params.locations, params.descriptions, smk.output, strict=True
    ):
        description = description or recipe_description(location)
        if description.get("method") == "se_merging":  # a dynamic merge: its own lm-eval model class
            model = se_merging_lm(
                location,
                **{key: description[key] for key in ("layer", "temperature", "similarity")},
                batch_size=params.batch_size,
                dtype=settings["dtype"],
            )
            tokenizer = model.tokenizer
        else:
            model, tokenizer = load_model(location, dtype=settings["dtype"])
        # Beside the evaluation file: the generated task YAMLs that choose the split (the recorded
        # `lm_eval` commands read them) and, with log_samples, lm-eval's per-sample outputs.
        stem = Path(output).with_suffix("")
        results = evaluate_model(
            model,
            tokenizer,
            task_splits=task_splits,
            include_path=params.include_path,
            run=run,
            task_settings=task_settings,
            datasets=settings["datasets"],
            task_dir=f"{stem}.tasks",
            model_location=None if names_recipe(location) else location,
            offline=not settings["allow_downloads"],
        )
        if settings["log_samples"]:
            write_samples(results, f"{stem}.samples")
        write_json(
            output,
            {
                "model": name,
                "scope": smk.wildcards.scope,
                "split": split,
                "dataset_splits": task_splits,
                "source": str(location),
                "description": description,
                "scores": scores_from_results(results, metrics),
                "n_samples": results.get("n-samples"),
                "dtype": str(getattr(model, "dtype", None) or model.model.dtype).removeprefix("torch."),
                "lm_eval_runs": results["lm_eval_runs"],
                "lm_eval_results": results["results"],
                **({"items": item_scores(results, metrics)} if keep_items else {}),
            },
        )
        del model


run_rule(main, snakemake)  # noqa: F821

# lm-evaluation-harness on models and one split; recipe models are built in memory. A model of its
# own is one job; the points of a grid searched on dev are one job per grid (see evaluation_batches).


rule evaluate:
    input:
        unpack(lambda wildcards: model_inputs(wildcards.scope, [wildcards.model])),
        # lm-eval's data sets in the local cache; ancient: fetching again reruns no evaluation.
        prefetched=ancient(f"{OUT}/prefetched.json"),
    output:
        LAYOUT.eval_file("{scope}", "{split}", "{model}"),
    log:
        f"{OUT}/{{scope}}/logs/evaluate/{{split}}/{{model}}.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/evaluate/{{split}}/{{model}}.tsv"
    wildcard_constraints:
        model=single_model_pattern(),
    retries: config["cluster"]["retries"]
    # Under Slurm, `--group-components GROUP=N` (slurm/config.yaml) runs N evaluations per job.
    group:
        lambda wildcards: evaluation_group(wildcards.split, wildcards.model)
    conda:
        "../../envs/eval.yaml"
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    params:
        models=lambda wildcards: [wildcards.model],
        # From the job's inputs: Snakemake's `params` rerun trigger skips what is derived from them.
        locations=lambda wildcards, input: LAYOUT.model_locations([wildcards.model], input),
        descriptions=lambda wildcards: [folder_description(wildcards.model)],
        tasks=TASKS,
        include_path=task_include_path(),
        batch_size=config["evaluation"]["batch_size"],
        limit=config["evaluation"]["limit"],
        settings=evaluation_settings(config),
    script:
        "../scripts/evaluate.py"


for batch, batch_models in EVALUATION_BATCHES.items():

    rule:
        name:
            f"evaluate_{batch}"
        input:
            unpack(lambda wildcards, models=batch_models: model_inputs(wildcards.scope, models)),
            prefetched=ancient(f"{OUT}/prefetched.json"),
        output:
            [LAYOUT.eval_file("{scope}", "{split}", model) for model in batch_models],
        log:
            f"{OUT}/{{scope}}/logs/evaluate/{{split}}/{batch}.log",
        benchmark:
            f"{OUT}/{{scope}}/benchmarks/evaluate/{{split}}/{batch}.tsv"
        retries: config["cluster"]["retries"]
        conda:
            "../../envs/eval.yaml"
        threads: rule_threads("evaluate")
        resources:
            **rule_resources("evaluate"),
        params:
            models=batch_models,
            locations=lambda wildcards, input, models=batch_models: LAYOUT.model_locations(models, input),
            descriptions=[None] * len(batch_models),  # recipes describe themselves
            tasks=TASKS,
            include_path=task_include_path(),
            batch_size=config["evaluation"]["batch_size"],
            limit=config["evaluation"]["limit"],
            settings=evaluation_settings(config),
        script:
            "../scripts/evaluate.py"

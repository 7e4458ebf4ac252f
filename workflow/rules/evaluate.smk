# lm-evaluation-harness on one model and one split; recipe models are built in memory.


rule evaluate:
    input:
        unpack(model_inputs),
        # lm-eval's data sets in the local cache; ancient: fetching again reruns no evaluation.
        prefetched=ancient(f"{OUT}/prefetched.json"),
    output:
        f"{OUT}/eval/{{split}}/{{model}}.json",
    log:
        f"{OUT}/logs/evaluate/{{split}}/{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/evaluate/{{split}}/{{model}}.tsv"
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
        location=model_location,
        description=lambda wildcards: folder_description(wildcards.model),
        tasks=TASKS,
        include_path=task_include_path(),
        batch_size=config["evaluation"]["batch_size"],
        limit=config["evaluation"]["limit"],
        seed=config["seed"],
    script:
        "../scripts/evaluate.py"

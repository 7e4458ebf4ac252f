# Downloads on the submitting machine what the jobs later read offline: the Hugging Face data sets of
# the configured lm-eval tasks. Nothing to do for the demo or for tasks over local files.


rule prefetch:
    output:
        f"{OUT}/prefetched.json",
    log:
        f"{OUT}/logs/prefetch.log",
    benchmark:
        f"{OUT}/benchmarks/prefetch.tsv"
    conda:
        "../../envs/eval.yaml"
    threads: rule_threads("prefetch")
    resources:
        **rule_resources("prefetch"),
    params:
        tasks=[] if DEMO else [task["name"] for task in TASKS],
        include_path=None if DEMO else config["evaluation"]["include_path"],
    script:
        "../scripts/prefetch.py"

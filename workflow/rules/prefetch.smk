# Downloads on the submitting machine what the jobs later read offline: the Hugging Face data sets of
# the configured lm-eval tasks, a base model given as a Hub id and fine-tuning data given as a Hub
# data set. Nothing to do for the demo or for local files.


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


if BASE_HUB_MODEL is not None:

    ruleorder: download_base > pretrain_base  # both give {OUT}/base; the demo's is off here

    rule download_base:
        output:
            directory(f"{OUT}/base"),
        log:
            f"{OUT}/logs/download_base.log",
        benchmark:
            f"{OUT}/benchmarks/download_base.tsv"
        localrule: True
        conda:
            "../../envs/merge.yaml"
        threads: rule_threads("download_base")
        resources:
            **rule_resources("download_base"),
        params:
            model=str(BASE_HUB_MODEL),
        script:
            "../scripts/download_base.py"


if HUB_SFT_DATA is not None:

    rule download_sft_data:
        output:
            sft_train_path(),
        log:
            f"{OUT}/logs/download_sft_data.log",
        benchmark:
            f"{OUT}/benchmarks/download_sft_data.tsv"
        localrule: True
        conda:
            "../../envs/train.yaml"
        threads: rule_threads("download_sft_data")
        resources:
            **rule_resources("download_sft_data"),
        params:
            dataset=HUB_SFT_DATA,
        script:
            "../scripts/download_sft_data.py"

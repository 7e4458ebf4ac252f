# Before any job that needs a GPU: `prefetch` builds every lm-eval task with the Hub reachable, so
# that what the tasks load (data sets, metric modules such as code_eval) lands in the cache that the
# offline jobs read; a base model given as a Hub id and fine-tuning data given as a Hub data set are
# downloaded too. `preflight` then checks offline that the jobs will find all they read, and every
# fine-tuning job waits for it (exme.pipeline.preflight). The demo's data are local: nothing to fetch.


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
        tasks=[] if DEMO else TASKS,
        include_path=task_include_path(),
        settings=evaluation_settings(config),
    script:
        "../scripts/prefetch.py"


rule preflight:
    input:
        unpack(preflight_inputs),
        prefetched=f"{OUT}/prefetched.json",
    output:
        f"{OUT}/preflight.json",
    log:
        f"{OUT}/logs/preflight.log",
    benchmark:
        f"{OUT}/benchmarks/preflight.tsv"
    conda:
        "../../envs/eval.yaml"
    threads: rule_threads("preflight")
    resources:
        **rule_resources("preflight"),
    params:
        tasks=TASKS,
        include_path=task_include_path(),
        settings=evaluation_settings(config),
        training_files=training_files(),
        se_merging_layers=(MERGE_METHODS["se_merging"]["layers"] if "se_merging" in TRACKS["expert"] else []),
    script:
        "../scripts/preflight.py"


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

# Pick the top-k checkpoints by mean dev score; downstream jobs depend on which were picked.


checkpoint select_checkpoints:
    input:
        evaluations=[eval_path("dev", sft_name(step)) for step in STEPS],
    output:
        selection=f"{OUT}/selection.json",
    log:
        f"{OUT}/logs/select_checkpoints.log",
    benchmark:
        f"{OUT}/benchmarks/select_checkpoints.tsv"
    conda:
        "../../envs/report.yaml"
    threads: rule_threads("select_checkpoints")
    resources:
        **rule_resources("select_checkpoints"),
    params:
        top_k=config["selection"]["top_k"],
    script:
        "../scripts/select_checkpoints.py"

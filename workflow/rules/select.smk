# Choices made on the dev split only: the top-k checkpoints, then alpha per selected checkpoint,
# then beta at the chosen alphas. Downstream jobs depend on which checkpoints were picked.


checkpoint select_checkpoints:
    input:
        evaluations=[eval_path("dev", model_name("sft", step=step)) for step in STEPS],
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


rule search_alpha:
    input:
        evaluations=[
            eval_path("dev", model_name("expo_grid", rank=rank, alpha=alpha))
            for rank in RANKS
            for alpha in ALPHAS
        ],
    output:
        f"{OUT}/search/alpha.json",
    log:
        f"{OUT}/logs/search_alpha.log",
    benchmark:
        f"{OUT}/benchmarks/search_alpha.tsv"
    conda:
        "../../envs/report.yaml"
    threads: rule_threads("search_alpha")
    resources:
        **rule_resources("search_alpha"),
    params:
        grid=ALPHAS,
        ranks=RANKS,
        strategy=config["search"]["strategy"],
    script:
        "../scripts/search_alpha.py"


rule search_beta:
    input:
        evaluations=[eval_path("dev", model_name("exme_grid", beta=beta)) for beta in BETAS],
    output:
        f"{OUT}/search/beta.json",
    log:
        f"{OUT}/logs/search_beta.log",
    benchmark:
        f"{OUT}/benchmarks/search_beta.tsv"
    conda:
        "../../envs/report.yaml"
    threads: rule_threads("search_beta")
    resources:
        **rule_resources("search_beta"),
    params:
        grid=BETAS,
        strategy=config["search"]["strategy"],
    script:
        "../scripts/search_beta.py"

# Choices made on the dev split only, per seed: the top-k checkpoints, alpha per selected
# checkpoint, then beta at the chosen alphas; and the grid point of each merge system that has one.


rule select_checkpoints:
    input:
        evaluations=lambda wildcards: [
            LAYOUT.eval_file(wildcards.scope, "dev", model_name("sft", step=step)) for step in STEPS
        ],
    output:
        selection=LAYOUT.selection_file("{scope}"),
    log:
        f"{OUT}/{{scope}}/logs/select_checkpoints.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/select_checkpoints.tsv"
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
        evaluations=lambda wildcards: [
            LAYOUT.eval_file(wildcards.scope, "dev", model_name("expo_grid", rank=rank, alpha=alpha))
            for rank in RANKS
            for alpha in ALPHAS
        ],
    output:
        f"{OUT}/{{scope}}/search/alpha.json",
    log:
        f"{OUT}/{{scope}}/logs/search_alpha.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/search_alpha.tsv"
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
        evaluations=lambda wildcards: [
            LAYOUT.eval_file(wildcards.scope, "dev", model_name("exme_grid", beta=beta)) for beta in BETAS
        ],
    output:
        f"{OUT}/{{scope}}/search/beta.json",
    log:
        f"{OUT}/{{scope}}/logs/search_beta.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/search_beta.tsv"
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


rule search_merge:
    input:
        evaluations=merge_point_evaluations,
    output:
        f"{OUT}/{{scope}}/search/{{track}}-{{method}}.json",
    log:
        f"{OUT}/{{scope}}/logs/search/{{track}}-{{method}}.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/search/{{track}}-{{method}}.tsv"
    conda:
        "../../envs/report.yaml"
    threads: rule_threads("search_merge")
    resources:
        **rule_resources("search_merge"),
    script:
        "../scripts/search_merge.py"

# One tidy score table over every seed, then per seed the ExMe report and the M³ figures, and the
# comparison of every method on both tracks over the seeds.


rule collect_scores:
    input:
        evaluations=lambda wildcards: evaluations_of(wildcards.scope),
        selection=LAYOUT.selection_file("{scope}"),
    output:
        scores=f"{OUT}/{{scope}}/scores.csv",
        # Each test item's metric value, for the paired comparisons.
        per_item=f"{OUT}/{{scope}}/items.csv.gz",
    log:
        f"{OUT}/{{scope}}/logs/collect_scores.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/collect_scores.tsv"
    conda:
        "../../envs/report.yaml"
    threads: rule_threads("collect_scores")
    resources:
        **rule_resources("collect_scores"),
    params:
        seed=lambda wildcards: scope_seed(wildcards.scope),
    script:
        "../scripts/collect_scores.py"


# One table over the seeds: adding a seed adds its table and reruns no other seed's jobs.
rule combine_scores:
    input:
        scores=[f"{OUT}/{scope}/scores.csv" for scope in SCOPES],
        per_item=[f"{OUT}/{scope}/items.csv.gz" for scope in SCOPES],
    output:
        scores=report(
            f"{OUT}/scores.csv",
            caption="../report/scores.rst",
            category="Tables",
        ),
        per_item=f"{OUT}/items.csv.gz",
    log:
        f"{OUT}/logs/combine_scores.log",
    benchmark:
        f"{OUT}/benchmarks/combine_scores.tsv"
    conda:
        "../../envs/report.yaml"
    threads: rule_threads("combine_scores")
    resources:
        **rule_resources("combine_scores"),
    script:
        "../scripts/combine_scores.py"


rule report:
    input:
        scores=f"{OUT}/{{scope}}/scores.csv",
        selection=LAYOUT.selection_file("{scope}"),
        alphas=f"{OUT}/{{scope}}/search/alpha.json",
        betas=f"{OUT}/{{scope}}/search/beta.json",
    output:
        extrapolation=report(
            figure_paths(f"{OUT}/{{scope}}", TASK_NAMES)["extrapolation"],
            caption="../report/extrapolation.rst",
            category="Figures",
            subcategory="Extrapolation",
        ),
        beta=report(
            figure_paths(f"{OUT}/{{scope}}", TASK_NAMES)["beta"],
            caption="../report/beta.rst",
            category="Figures",
        ),
        comparison=report(
            figure_paths(f"{OUT}/{{scope}}", TASK_NAMES)["comparison"],
            caption="../report/exme_comparison.rst",
            category="Figures",
        ),
        summary=f"{OUT}/{{scope}}/summary.md",
    log:
        f"{OUT}/{{scope}}/logs/report.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/report.tsv"
    conda:
        "../../envs/report.yaml"
    threads: rule_threads("report")
    resources:
        **rule_resources("report"),
    params:
        run=RUN,
        seed=lambda wildcards: scope_seed(wildcards.scope),
    script:
        "../scripts/report.py"


rule plot_mixup:
    input:
        scores=f"{OUT}/{{scope}}/scores.csv",
    output:
        report(
            mixup_figure(f"{OUT}/{{scope}}", "{track}"),
            caption="../report/mixup.rst",
            category="Figures",
            subcategory="Mixup",
        ),
    log:
        f"{OUT}/{{scope}}/logs/plot_mixup/{{track}}.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/plot_mixup/{{track}}.tsv"
    conda:
        "../../envs/report.yaml"
    threads: rule_threads("plot_mixup")
    resources:
        **rule_resources("plot_mixup"),
    params:
        seed=lambda wildcards: scope_seed(wildcards.scope),
    script:
        "../scripts/plot_mixup.py"


rule plot_checkpoint_extrapolation:
    input:
        scores=f"{OUT}/{{scope}}/scores.csv",
    output:
        report(
            checkpoint_extrapolation_figure(f"{OUT}/{{scope}}"),
            caption="../report/extrapolation_checkpoints.rst",
            category="Figures",
            subcategory="Extrapolation",
        ),
    log:
        f"{OUT}/{{scope}}/logs/plot_checkpoint_extrapolation.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/plot_checkpoint_extrapolation.tsv"
    conda:
        "../../envs/report.yaml"
    threads: rule_threads("plot_checkpoint_extrapolation")
    resources:
        **rule_resources("plot_checkpoint_extrapolation"),
    params:
        seed=lambda wildcards: scope_seed(wildcards.scope),
    script:
        "../scripts/plot_checkpoint_extrapolation.py"


rule compare:
    input:
        scores=f"{OUT}/scores.csv",
        per_item=f"{OUT}/items.csv.gz",
    output:
        table=report(comparison_paths(OUT)["table"], caption="../report/comparison.rst", category="Tables"),
        figure=report(comparison_paths(OUT)["figure"], caption="../report/comparison.rst", category="Figures"),
    log:
        f"{OUT}/logs/compare.log",
    benchmark:
        f"{OUT}/benchmarks/compare.tsv"
    conda:
        "../../envs/report.yaml"
    threads: rule_threads("compare")
    resources:
        **rule_resources("compare"),
    params:
        run=RUN,
    script:
        "../scripts/compare.py"

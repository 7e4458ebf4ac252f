# One tidy score table, then the figures and the summary drawn from it.


rule collect_scores:
    input:
        evaluations=all_evaluations,
        selection=f"{OUT}/selection.json",
    output:
        report(
            f"{OUT}/scores.csv",
            caption="../report/scores.rst",
            category="Tables",
        ),
    log:
        f"{OUT}/logs/collect_scores.log",
    benchmark:
        f"{OUT}/benchmarks/collect_scores.tsv"
    conda:
        "../../envs/report.yaml"
    threads: rule_threads("collect_scores")
    resources:
        **rule_resources("collect_scores"),
    params:
        seed=config["seed"],
    script:
        "../scripts/collect_scores.py"


rule report:
    input:
        scores=f"{OUT}/scores.csv",
        selection=f"{OUT}/selection.json",
        alphas=f"{OUT}/search/alpha.json",
        betas=f"{OUT}/search/beta.json",
    output:
        extrapolation=report(
            FIGURES["extrapolation"],
            caption="../report/extrapolation.rst",
            category="Figures",
            subcategory="Extrapolation",
        ),
        beta=report(FIGURES["beta"], caption="../report/beta.rst", category="Figures"),
        comparison=report(FIGURES["comparison"], caption="../report/comparison.rst", category="Figures"),
        summary=f"{OUT}/summary.md",
    log:
        f"{OUT}/logs/report.log",
    benchmark:
        f"{OUT}/benchmarks/report.tsv"
    conda:
        "../../envs/report.yaml"
    threads: rule_threads("report")
    resources:
        **rule_resources("report"),
    params:
        run=RUN,
    script:
        "../scripts/report.py"

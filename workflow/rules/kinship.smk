# Model kinship on the expert track (per seed): the kinship matrix of the experts, kinship against
# merge gain over all pairwise merges, and top-k greedy merging with and without kinship-guided
# exploration, one Snakemake checkpoint per generation (the loop is data-dependent).


checkpoint write_greedy_pairs:
    input:
        base=base_model_path(),
        experts=lambda wildcards: [LAYOUT.expert_dir(wildcards.scope, expert) for expert in EXPERTS],
    output:
        directory(f"{OUT}/{{scope}}/greedy/{{track}}-pairs"),
    log:
        f"{OUT}/{{scope}}/logs/greedy/{{track}}-pairs.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/greedy/{{track}}-pairs.tsv"
    wildcard_constraints:
        track="expert",
    conda:
        "../../envs/merge.yaml"
    threads: rule_threads("write_greedy_pairs")
    resources:
        **rule_resources("write_greedy_pairs"),
    params:
        experts=lambda wildcards: LAYOUT.expert_locations(wildcards.scope),
        root=lambda wildcards: LAYOUT.greedy_root(wildcards.scope),
        greedy=as_param(config["greedy"]),
        settings=lambda wildcards: get_system(config["greedy"]["method"]).settings(MERGE_METHODS),
        seed=lambda wildcards: scope_seed(wildcards.scope),
    script:
        "../scripts/write_greedy_pairs.py"


checkpoint greedy_step:
    input:
        unpack(greedy_step_inputs),
    output:
        directory(f"{OUT}/{{scope}}/greedy/{{track}}-{{variant}}/g{{generation}}"),
    log:
        f"{OUT}/{{scope}}/logs/greedy/{{track}}-{{variant}}-g{{generation}}.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/greedy/{{track}}-{{variant}}-g{{generation}}.tsv"
    conda:
        "../../envs/merge.yaml"
    threads: rule_threads("greedy_step")
    resources:
        **rule_resources("greedy_step"),
    params:
        greedy=as_param(config["greedy"]),
        settings=lambda wildcards: get_system(config["greedy"]["method"]).settings(MERGE_METHODS),
        experts=lambda wildcards: LAYOUT.expert_locations(wildcards.scope),
        root=lambda wildcards: LAYOUT.greedy_root(wildcards.scope),
        seed=lambda wildcards: scope_seed(wildcards.scope),
    script:
        "../scripts/greedy_step.py"


rule write_greedy_recipe:
    input:
        unpack(greedy_result_inputs),
    output:
        recipe=recipe_path("greedy"),
        pool=LAYOUT.greedy_pool_file("{scope}", "{track}", "{variant}"),
    log:
        f"{OUT}/{{scope}}/logs/greedy/{{track}}-{{variant}}.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/greedy/{{track}}-{{variant}}.tsv"
    conda:
        "../../envs/merge.yaml"
    threads: rule_threads("write_greedy_recipe")
    resources:
        **rule_resources("write_greedy_recipe"),
    params:
        experts=lambda wildcards: LAYOUT.expert_locations(wildcards.scope),
        root=lambda wildcards: LAYOUT.greedy_root(wildcards.scope),
    script:
        "../scripts/write_greedy_recipe.py"


rule kinship_matrix:
    input:
        base=base_model_path(),
        experts=lambda wildcards: [LAYOUT.expert_dir(wildcards.scope, expert) for expert in EXPERTS],
    output:
        f"{OUT}/{{scope}}/kinship/{{track}}.json",
    log:
        f"{OUT}/{{scope}}/logs/kinship/{{track}}.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/kinship/{{track}}.tsv"
    wildcard_constraints:
        track="expert",
    conda:
        "../../envs/merge.yaml"
    threads: rule_threads("kinship_matrix")
    resources:
        **rule_resources("kinship_matrix"),
    params:
        experts=lambda wildcards: LAYOUT.expert_locations(wildcards.scope),
    script:
        "../scripts/kinship_matrix.py"


rule plot_kinship:
    input:
        scores=f"{OUT}/{{scope}}/scores.csv",
        kinship=f"{OUT}/{{scope}}/kinship/{{track}}.json",
        pairs=f"{OUT}/{{scope}}/greedy/{{track}}-pairs",
        pools=expand(LAYOUT.greedy_pool_file("{{scope}}", "{{track}}", "{variant}"), variant=GREEDY_VARIANTS),
    output:
        table=f"{OUT}/{{scope}}/kinship/{{track}}.md",
        heatmap=report(
            f"{OUT}/{{scope}}/figures/kinship_{{track}}.png",
            caption="../report/kinship.rst",
            category="Figures",
            subcategory="Kinship",
        ),
        gain=report(
            f"{OUT}/{{scope}}/figures/kinship_gain_{{track}}.png",
            caption="../report/kinship_gain.rst",
            category="Figures",
            subcategory="Kinship",
        ),
        greedy=report(
            f"{OUT}/{{scope}}/figures/greedy_{{track}}.png",
            caption="../report/greedy.rst",
            category="Figures",
            subcategory="Kinship",
        ),
    log:
        f"{OUT}/{{scope}}/logs/plot_kinship/{{track}}.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/plot_kinship/{{track}}.tsv"
    conda:
        "../../envs/report.yaml"
    threads: rule_threads("plot_kinship")
    resources:
        **rule_resources("plot_kinship"),
    params:
        seed=lambda wildcards: scope_seed(wildcards.scope),
        metric=config["greedy"]["metric"],
        variants=GREEDY_VARIANTS,
    script:
        "../scripts/plot_kinship.py"

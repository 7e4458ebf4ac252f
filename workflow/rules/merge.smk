# Extrapolation and merging as recipes: small YAML files in mergekit's format that name the source
# checkpoints and coefficients. Evaluation builds their weights in memory, so a grid of any size adds
# no model-sized files; only the final ExMe model is written, by the streaming merge engine.


rule recipe:
    input:
        unpack(recipe_inputs),
    output:
        f"{OUT}/recipes/{{recipe}}.yaml",
    log:
        f"{OUT}/logs/recipe/{{recipe}}.log",
    benchmark:
        f"{OUT}/benchmarks/recipe/{{recipe}}.tsv"
    conda:
        "../../envs/merge.yaml"
    threads: rule_threads("recipe")
    resources:
        **rule_resources("recipe"),
    params:
        dtype=lambda wildcards: config["output"]["dtype"] if wildcards.recipe == "exme" else None,
    script:
        "../scripts/write_recipe.py"


rule search_alpha:
    input:
        evaluations=[eval_path("dev", expo_name(r, float(a))) for r in RANKS for a in ALPHAS],
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
        grid=config["extrapolation"]["alpha_grid"],
        ranks=RANKS,
        strategy=config["search"]["strategy"],
    script:
        "../scripts/search_alpha.py"


rule search_beta:
    input:
        evaluations=[eval_path("dev", exme_name(float(b))) for b in BETAS],
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
        grid=config["merging"]["beta_grid"],
        strategy=config["search"]["strategy"],
    script:
        "../scripts/search_beta.py"


rule export_final:
    input:
        recipe=f"{OUT}/recipes/exme.yaml",
        base=base_model_path(),
        checkpoints=f"{OUT}/sft",
    output:
        directory(f"{OUT}/final"),
    log:
        f"{OUT}/logs/export_final.log",
    benchmark:
        f"{OUT}/benchmarks/export_final.tsv"
    conda:
        "../../envs/merge.yaml"
    threads: rule_threads("export_final")
    resources:
        **rule_resources("export_final"),
    params:
        shard_size=config["output"]["shard_size"],
    script:
        "../scripts/export_final.py"

# Extrapolation and merging as recipes: small YAML files in mergekit's format that name the source
# models and coefficients. Evaluation builds their weights in memory, so a grid of any size adds
# no model-sized files; only the final ExMe model is written, by the streaming merge engine.


rule write_expo_grid_recipe:
    input:
        selection=LAYOUT.selection_file("{scope}"),
        base=base_model_path(),
        checkpoints=LAYOUT.finetune_dir("{scope}", "sft"),
    output:
        recipe_path("expo_grid"),
    log:
        f"{OUT}/{{scope}}/logs/recipes/{NAME_PATTERNS['expo_grid']}.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/recipes/{NAME_PATTERNS['expo_grid']}.tsv"
    conda:
        "../../envs/merge.yaml"
    threads: rule_threads("write_expo_grid_recipe")
    resources:
        **rule_resources("write_expo_grid_recipe"),
    params:
        alpha=lambda wildcards: float(wildcards.alpha),
    script:
        "../scripts/write_expo_recipe.py"


rule write_expo_step_recipe:
    input:
        base=base_model_path(),
        checkpoints=LAYOUT.finetune_dir("{scope}", "sft"),
    output:
        recipe_path("expo_step_grid"),
    log:
        f"{OUT}/{{scope}}/logs/recipes/{NAME_PATTERNS['expo_step_grid']}.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/recipes/{NAME_PATTERNS['expo_step_grid']}.tsv"
    conda:
        "../../envs/merge.yaml"
    threads: rule_threads("write_expo_step_recipe")
    resources:
        **rule_resources("write_expo_step_recipe"),
    params:
        alpha=lambda wildcards: float(wildcards.alpha),
    script:
        "../scripts/write_expo_recipe.py"


rule write_expo_recipe:
    input:
        selection=LAYOUT.selection_file("{scope}"),
        base=base_model_path(),
        checkpoints=LAYOUT.finetune_dir("{scope}", "sft"),
        alphas=f"{OUT}/{{scope}}/search/alpha.json",
    output:
        recipe_path("expo"),
    log:
        f"{OUT}/{{scope}}/logs/recipes/{NAME_PATTERNS['expo']}.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/recipes/{NAME_PATTERNS['expo']}.tsv"
    conda:
        "../../envs/merge.yaml"
    threads: rule_threads("write_expo_recipe")
    resources:
        **rule_resources("write_expo_recipe"),
    params:
        alpha=None,  # the alpha chosen on dev, read from the search
    script:
        "../scripts/write_expo_recipe.py"


rule write_exme_grid_recipe:
    input:
        selection=LAYOUT.selection_file("{scope}"),
        base=base_model_path(),
        checkpoints=LAYOUT.finetune_dir("{scope}", "sft"),
        alphas=f"{OUT}/{{scope}}/search/alpha.json",
    output:
        recipe_path("exme_grid"),
    log:
        f"{OUT}/{{scope}}/logs/recipes/{NAME_PATTERNS['exme_grid']}.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/recipes/{NAME_PATTERNS['exme_grid']}.tsv"
    conda:
        "../../envs/merge.yaml"
    threads: rule_threads("write_exme_grid_recipe")
    resources:
        **rule_resources("write_exme_grid_recipe"),
    params:
        beta=lambda wildcards: float(wildcards.beta),
        dtype=None,  # grid points are evaluated in memory, never written
    script:
        "../scripts/write_exme_recipe.py"


rule write_exme_recipe:
    input:
        selection=LAYOUT.selection_file("{scope}"),
        base=base_model_path(),
        checkpoints=LAYOUT.finetune_dir("{scope}", "sft"),
        alphas=f"{OUT}/{{scope}}/search/alpha.json",
        betas=f"{OUT}/{{scope}}/search/beta.json",
    output:
        recipe_path("exme"),
    log:
        f"{OUT}/{{scope}}/logs/recipes/{NAME_PATTERNS['exme']}.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/recipes/{NAME_PATTERNS['exme']}.tsv"
    conda:
        "../../envs/merge.yaml"
    threads: rule_threads("write_exme_recipe")
    resources:
        **rule_resources("write_exme_recipe"),
    params:
        beta=None,  # the beta chosen on dev, read from the search
        dtype=config["output"]["dtype"],  # the final model's dtype
    script:
        "../scripts/write_exme_recipe.py"


rule export_final:
    input:
        recipe=recipe_path("exme"),
        base=base_model_path(),
        checkpoints=LAYOUT.finetune_dir("{scope}", "sft"),
    output:
        directory(LAYOUT.final_dir("{scope}")),
    log:
        f"{OUT}/{{scope}}/logs/export_final.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/export_final.tsv"
    conda:
        "../../envs/merge.yaml"
    threads: rule_threads("export_final")
    resources:
        **rule_resources("export_final"),
    params:
        shard_size=config["output"]["shard_size"],
    script:
        "../scripts/export_final.py"


rule write_merge_recipe:
    input:
        unpack(merge_recipe_inputs),
    output:
        recipe_path("merge"),
    log:
        f"{OUT}/{{scope}}/logs/recipes/{NAME_PATTERNS['merge']}.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/recipes/{NAME_PATTERNS['merge']}.tsv"
    conda:
        "../../envs/merge.yaml"
    threads: rule_threads("write_merge_recipe")
    resources:
        **rule_resources("write_merge_recipe"),
    params:
        settings=lambda wildcards: get_system(wildcards.method).settings(MERGE_METHODS),
        experts=lambda wildcards: LAYOUT.expert_locations(wildcards.scope),
        seed=lambda wildcards: scope_seed(wildcards.scope),
    script:
        "../scripts/write_merge_recipe.py"


use rule write_merge_recipe as write_merge_point_recipe with:
    output:
        recipe_path("merge_point"),
    log:
        f"{OUT}/{{scope}}/logs/recipes/{NAME_PATTERNS['merge_point']}.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/recipes/{NAME_PATTERNS['merge_point']}.tsv"
    threads: rule_threads("write_merge_point_recipe")
    resources:
        **rule_resources("write_merge_point_recipe"),

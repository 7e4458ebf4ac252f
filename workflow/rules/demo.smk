# The embedded demo: synthetic multi-task data and a tiny base model pretrained on generic text,
# shared by every seed of the run (`demo.seed`).


rule build_demo_data:
    output:
        directory(f"{OUT}/data"),
    log:
        f"{OUT}/logs/build_demo_data.log",
    benchmark:
        f"{OUT}/benchmarks/build_demo_data.tsv"
    conda:
        "../../envs/train.yaml"
    threads: rule_threads("build_demo_data")
    resources:
        **rule_resources("build_demo_data"),
    params:
        tasks=config["demo"].get("tasks"),
        n_train=config["demo"].get("n_train"),
        n_dev=config["demo"].get("n_dev"),
        n_test=config["demo"].get("n_test"),
        n_pretrain_lines=config["demo"].get("n_pretrain_lines"),
        seed=config["demo"]["seed"],
    script:
        "../scripts/build_demo_data.py"


rule pretrain_base:
    input:
        data=f"{OUT}/data",
    output:
        directory(f"{OUT}/base"),
    log:
        f"{OUT}/logs/pretrain_base.log",
    benchmark:
        f"{OUT}/benchmarks/pretrain_base.tsv"
    conda:
        "../../envs/train.yaml"
    threads: rule_threads("pretrain_base")
    resources:
        **rule_resources("pretrain_base"),
    params:
        model=as_param(config["demo"].get("model")),
        pretrain=as_param(config["demo"].get("pretrain")),
        seed=config["demo"]["seed"],
    script:
        "../scripts/pretrain_base.py"

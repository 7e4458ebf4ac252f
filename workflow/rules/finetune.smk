# Supervised fine-tuning with the Hugging Face Trainer: the checkpoint track's SFT run (a checkpoint
# every `save_steps`) and each expert of the expert track (`ft-{expert}`), once per seed.
# The Trainer's own state lives outside the declared output so that a killed job resumes from its
# last checkpoint instead of starting over (Snakemake deletes the outputs of a failed job).
# A job with more than one GPU trains under `accelerate launch`, one process per GPU (see
# exme.train.launch).


rule finetune:
    input:
        unpack(finetune_inputs),
    output:
        directory(LAYOUT.finetune_dir("{scope}", "{trainee}")),
    log:
        f"{OUT}/{{scope}}/logs/finetune/{{trainee}}.log",
    benchmark:
        f"{OUT}/{{scope}}/benchmarks/finetune/{{trainee}}.tsv"
    # A retry resumes from the last checkpoint in state_dir.
    retries: config["cluster"]["retries"]
    conda:
        "../../envs/train.yaml"
    threads: rule_threads("finetune")
    resources:
        **rule_resources("finetune"),
    params:
        train_file=lambda wildcards: trainee_settings(wildcards.trainee)["train"],
        state_dir=finetune_state_dir,
        hyperparameters=lambda wildcards: as_param(trainee_settings(wildcards.trainee)["settings"]),
        seed=lambda wildcards: scope_seed(wildcards.scope),
        fsdp_config=config["cluster"]["fsdp_config"],
    script:
        "../scripts/finetune.py"

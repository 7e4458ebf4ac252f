# Supervised fine-tuning with the Hugging Face Trainer, saving a checkpoint every `save_steps`.
# The Trainer's own state lives outside the declared output so that a killed job resumes from its
# last checkpoint instead of starting over (Snakemake deletes the outputs of a failed job).
# A job with more than one GPU trains under `accelerate launch`, one process per GPU (see
# exme.train.launch).


rule finetune:
    input:
        unpack(data_inputs),
        base=base_model_path(),
    output:
        directory(f"{OUT}/sft"),
    log:
        f"{OUT}/logs/finetune.log",
    benchmark:
        f"{OUT}/benchmarks/finetune.tsv"
    # A retry resumes from the last checkpoint in state_dir.
    retries: config["cluster"]["retries"]
    conda:
        "../../envs/train.yaml"
    threads: rule_threads("finetune")
    resources:
        **rule_resources("finetune"),
    params:
        train_file=sft_train_path(),
        state_dir=finetune_state_dir(),
        hyperparameters=as_param(config["finetune"]),
        seed=config["seed"],
        fsdp_config=config["cluster"]["fsdp_config"],
    script:
        "../scripts/finetune.py"

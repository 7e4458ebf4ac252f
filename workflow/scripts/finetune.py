"""Rule finetune: SFT with the Hugging Face Trainer in a process of its own, or one per GPU under
`accelerate launch`; resumes from its state folder after a kill."""

import subprocess
import sys

from exme.errors import ExmeError
from exme.pipeline.rule_script import run_rule
from exme.train.launch import gpu_processes, launch_command, process_threads, training_arguments


def main(smk):
    hyperparameters = smk.params.hyperparameters
    processes = gpu_processes(smk.resources.gpu)
    arguments = training_arguments(
        smk.input.base,
        smk.params.train_file,
        smk.output[0],
        smk.params.state_dir,
        threads=process_threads(smk.threads, processes),
        settings={**hyperparameters, "seed": smk.params.seed},
    )
    command = launch_command(
        processes,
        arguments,
        fsdp_config=smk.params.fsdp_config,
        bf16=hyperparameters["bf16"],
        activation_checkpointing=hyperparameters["gradient_checkpointing"],
    )
    print(" ".join(command), flush=True)
    # The training processes write into this job's log, where run_rule sends sys.stdout.
    status = subprocess.run(command, stdout=sys.stdout, stderr=subprocess.STDOUT).returncode
    if status:
        raise ExmeError(f"training exited with status {status} (its messages are above in this log)")


run_rule(main, snakemake)  # noqa: F821

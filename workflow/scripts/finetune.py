"""Rule finetune: SFT with the Hugging Face Trainer in a process of its own, or one per GPU under
`accelerate launch`; resumes from its state folder after a kill."""

import subprocess
import sys

from exme.errors import ExmeError
from exme.pipeline.rule_script import run_rule
from exme.train.launch import gpu_processes, launch_command, training_arguments


def main(smk):
    hyperparameters = smk.params.hyperparameters
    arguments = training_arguments(
        smk.input.base,
        smk.params.train_file,
        smk.output[0],
        smk.params.state_dir,
        threads=smk.threads,
        settings={**hyperparameters, "seed": smk.params.seed},
    )
    command = launch_command(
        gpu_processes(smk.resources.gpu),
        arguments,
        fsdp_config=smk.params.fsdp_config,
        bf16=hyperparameters["bf16"],
    )
    print(" ".join(command), flush=True)
    # The training processes write into this job's log, where run_rule sends sys.stdout.
    status = subprocess.run(command, stdout=sys.stdout, stderr=subprocess.STDOUT).returncode
    if status:
        raise ExmeError(f"training exited with status {status} (its messages are above in this log)")


run_rule(main, snakemake)  # noqa: F821

"""How the finetune rule starts training: one process (CPU or one GPU), or `accelerate launch` with
one process per GPU of the job, data-parallel, or sharded with FSDP when an accelerate config says so
(config/accelerate/fsdp.yaml, for models that do not fit one GPU)."""

import json
import os
import sys

import torch

# `python -m exme.train ...` fine-tunes from the arguments that `training_arguments` writes.
TRAINING_MODULE = "exme.train"


def gpu_processes(requested_gpus: int) -> int:
    """One process per GPU that the job was given and CUDA can see: Snakemake's `gpu` resource counts
    what was asked for, while a CPU machine (or a test cluster's fake GPUs) has no CUDA device."""
    return min(requested_gpus, torch.cuda.device_count())


def training_arguments(
    base_dir: str | os.PathLike,
    train_jsonl: str | os.PathLike,
    out_dir: str | os.PathLike,
    state_dir: str | os.PathLike,
    *,
    threads: int,
    settings: dict,
) -> list[str]:
    """The command-line arguments of `python -m exme.train`: the paths of `exme.train.sft.finetune`,
    its keyword arguments as JSON, and the CPU threads of each process."""
    return [
        *map(str, (base_dir, train_jsonl, out_dir, state_dir)),
        "--settings",
        json.dumps(settings, sort_keys=True),
        "--threads",
        str(threads),
    ]


def launch_command(
    n_gpus: int, arguments: list[str], *, fsdp_config: str | os.PathLike | None = None, bf16: bool = False
) -> list[str]:
    """The command that fine-tunes with `arguments` on n_gpus GPUs of this machine.

    Up to one GPU: a single process. More: `accelerate launch`, with the interpreter that runs
    this code (so a conda env's accelerate, not whatever is on PATH), one process per GPU, DDP or
    the given FSDP config. The launcher's mixed precision follows the fine-tuning's bf16 setting,
    which `Trainer` applies in each process."""
    if n_gpus <= 1:
        return [sys.executable, "-m", TRAINING_MODULE, *arguments]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1"]
    launcher += ["--num_processes", str(n_gpus), "--mixed_precision", "bf16" if bf16 else "no"]
    launcher += ["--config_file", str(fsdp_config)] if fsdp_config else ["--multi_gpu"]
    return [*launcher, "--module", TRAINING_MODULE, *arguments]

"""How the finetune rule starts training: one process (CPU or one GPU), or `accelerate launch` with
one process per GPU of the job, data-parallel, or sharded with FSDP when an accelerate config says so
(config/accelerate/fsdp.yaml, for models that do not fit one GPU)."""

import json
import os
import sys
from pathlib import Path

import torch

from exme.errors import ExmeError

# `python -m exme.train ...` fine-tunes from the arguments that `training_arguments` writes.
TRAINING_MODULE = "exme.train"


def gpu_processes(requested_gpus: int) -> int:
    """One process per GPU that the job asked for (Snakemake's `gpu` resource).

    A job that sees fewer GPUs than it asked for stops: training on fewer would shrink the global
    batch (one per-device batch per GPU) without a word. A torch built without CUDA (a CPU machine,
    or a test cluster whose GPUs are fake) trains in one process on the CPU."""
    if not torch.backends.cuda.is_built():
        return 0
    visible = torch.cuda.device_count()
    if visible < requested_gpus:
        raise ExmeError(
            f"the finetune job asked for {requested_gpus} GPUs (resources.finetune.gpu) but CUDA sees "
            f"{visible} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
            "training on fewer would shrink the global batch"
        )
    return requested_gpus


def process_threads(job_threads: int, processes: int) -> int:
    """The CPU threads of each training process: the job's threads shared among its processes."""
    return max(1, job_threads // max(1, processes))


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


def _check_fsdp_config(fsdp_config: str | os.PathLike) -> None:
    """The FSDP config must save full weights: each checkpoint is exported as a model folder, and
    under a sharded state dict the Trainer saves no safetensors, only accelerate's shards."""
    from accelerate.commands.config.config_args import load_config_from_file

    if not Path(fsdp_config).is_file():
        raise ExmeError(f"cluster.fsdp_config: {fsdp_config} does not exist")
    state_dict_type = load_config_from_file(str(fsdp_config)).fsdp_config.get("fsdp_state_dict_type")
    if state_dict_type != "FULL_STATE_DICT":
        raise ExmeError(
            f"cluster.fsdp_config: {fsdp_config} has fsdp_state_dict_type {state_dict_type}; fine-tuning "
            "exports every checkpoint as a model folder, which needs FULL_STATE_DICT"
        )


def launch_command(
    n_gpus: int,
    arguments: list[str],
    *,
    fsdp_config: str | os.PathLike | None = None,
    bf16: bool = False,
    activation_checkpointing: bool = False,
) -> list[str]:
    """The command that fine-tunes with `arguments` on n_gpus GPUs of this machine.

    Up to one GPU: a single process. More: `accelerate launch`, with the interpreter that runs
    this code (so a conda env's accelerate, not whatever is on PATH), one process per GPU, DDP or
    the given FSDP config, its rendezvous on a free port (jobs sharing a node do not collide). The
    launcher's mixed precision follows the fine-tuning's bf16 setting, which `Trainer` applies in
    each process. Under FSDP, activation checkpointing (finetune.gradient_checkpointing) is FSDP's
    own: the Trainer's would all-gather each layer's parameters once more in the backward pass."""
    if n_gpus <= 1:
        return [sys.executable, "-m", TRAINING_MODULE, *arguments]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1"]
    launcher += ["--num_processes", str(n_gpus), "--main_process_port", "0"]
    launcher += ["--mixed_precision", "bf16" if bf16 else "no"]
    if fsdp_config:
        _check_fsdp_config(fsdp_config)
        launcher += ["--config_file", str(fsdp_config)]
        launcher += ["--fsdp_activation_checkpointing", str(activation_checkpointing).lower()]
    else:
        launcher += ["--multi_gpu"]
    return [*launcher, "--module", TRAINING_MODULE, *arguments]

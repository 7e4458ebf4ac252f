"""Where tensors are computed: the device asked for, else CUDA when present, else the CPU."""

import torch

from exme.errors import ExmeError


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """The device asked for (a name such as "cuda:1" or a torch.device), else CUDA when available,
    else the CPU. Asking for CUDA on a machine without it is an error that says so."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ExmeError(f"device {device} was requested but CUDA is not available")
    return device


def use_threads(threads: int) -> None:
    """Keep torch's CPU kernels within the threads Snakemake gave the job: parallel jobs that each
    used every core would oversubscribe the machine."""
    torch.set_num_threads(max(1, threads))

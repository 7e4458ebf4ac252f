"""Where tensors are computed: CUDA when present, else the CPU."""

import torch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def use_threads(threads: int) -> None:
    """Keep torch's CPU kernels within the threads Snakemake gave the job: parallel jobs that each
    used every core would oversubscribe the machine."""
    torch.set_num_threads(max(1, threads))

"""What a job asks of a cluster, and the environment every job runs in: from the config's
`resources` and `cluster` sections. The Snakefile imports this module, so it imports no torch."""

import os

from exme.offline import OFFLINE_ENVIRONMENT
from exme.pipeline.catalogue import BASE, NAME_PATTERNS, match_name

# Per-rule settings that go to Slurm unchanged when given (names the Slurm executor plugin reads).
SLURM_PASSTHROUGH = ("cpus_per_task", "slurm_partition", "slurm_extra")
# Settings that only mean something for a job with GPUs: a CPU job given them would ask for a GPU.
GPU_ONLY = ("gpu_model", "cpus_per_gpu")


def job_resources(settings: dict, cluster: dict) -> dict:
    """A rule's Snakemake `resources` from its merged `resources` entry and the `cluster` section.

    A rule with GPUs runs on `cluster.partition.gpu`, any other on `cluster.partition.cpu`, unless
    its own entry names a `slurm_partition`; `cluster.scratch` becomes `tmpdir` (Snakemake sets
    TMPDIR from it). Unset values are left out, so that a profile's default-resources apply.

    Every job also takes one `group_slot`: where slurm/config.yaml groups evaluations, it gives a
    group job one, so that a group job asks for the resources of one of its jobs and the sum of
    their runtimes (it would otherwise ask for the sum of their GPUs, while each used the first)."""
    gpus = settings["gpu"]
    resources = {
        "mem_mb": settings["mem_mb"],
        "runtime": settings["runtime"],
        "gpu": gpus,
        "group_slot": 1,
        "slurm_partition": cluster["partition"]["gpu" if gpus else "cpu"],
        "tmpdir": os.path.expandvars(cluster["scratch"]) if cluster["scratch"] else None,
    }
    resources.update({key: settings[key] for key in SLURM_PASSTHROUGH if key in settings})
    if gpus:
        resources.update({key: settings[key] for key in GPU_ONLY if key in settings})
    return {key: value for key, value in resources.items() if value is not None}


def job_environment(cluster: dict, source: str) -> dict[str, str]:
    """Environment variables for every job: Hugging Face's offline flags as `cluster.offline` says,
    HF_HOME when `cluster.hf_home` is set (otherwise the caller's own, or ~/.cache/huggingface), and
    EXME_SOURCE, the checkout at `source` that envs/install_package.sh installs into conda envs."""
    environment = {key: "1" if cluster["offline"] else "0" for key in OFFLINE_ENVIRONMENT}
    environment["EXME_SOURCE"] = source
    if cluster["hf_home"]:
        environment["HF_HOME"] = os.path.abspath(os.path.expanduser(cluster["hf_home"]))
    return environment


def evaluation_group(split: str, model: str) -> str:
    """The Snakemake group of an evaluation job: the evaluations of one kind of model on one split
    (and of one track, and of one greedy generation, which become ready at different stages; the
    grids are evaluated in one job each already).
    With `--group-components GROUP=N` (see slurm/config.yaml) N of them run in one Slurm job.

    A group must never wait on itself through another rule, and the dev evaluations do, kind by
    kind (checkpoints -> selection -> alpha grid -> alpha search -> beta grid); and a group job
    starts only once all its evaluations can, so each group holds models that become ready
    together, after the same stage."""
    kind, fields = next(
        ((kind, fields) for kind in NAME_PATTERNS if (fields := match_name(kind, model)) is not None),
        (BASE, {}),
    )
    stage = "-".join(fields[key] for key in ("track", "variant", "generation") if key in fields)
    return "_".join(filter(None, ("evaluate", split, kind, stage)))

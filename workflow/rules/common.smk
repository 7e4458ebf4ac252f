import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The Snakefile and the rule scripts import the project package `exme` (pip install -e .); the
# modules imported here import no torch, so building the DAG stays fast.
from exme.errors import ExmeError
from exme.pipeline.catalogue import (
    BASE,
    FINAL,
    NAME_PATTERNS,
    WILDCARD_PATTERNS,
    folder_description,
    model_name,
    sft_step,
)
from exme.pipeline.cluster import evaluation_group, job_environment, job_resources
from exme.pipeline.config import as_param, check_config, check_rule_resources, fingerprint
from exme.pipeline.targets import figure_paths, final_targets, models_on_dev, models_on_test
from exme.train.checkpoints import checkpoint_folder, checkpoint_steps

validate(config, schema="../schemas/config.schema.yaml")
try:
    check_config(config)
except ExmeError as error:
    raise WorkflowError(f"invalid config: {error}") from None

# Every job inherits these: local jobs from this process, Slurm jobs through sbatch --export=ALL.
os.environ.update(job_environment(config["cluster"], source=workflow.basedir))


RUN = config["run"]
OUT = f"results/{RUN}"
DEMO = config["demo"]["activate"]
STEPS = checkpoint_steps(config["finetune"]["max_steps"], config["finetune"]["save_steps"])
RANKS = list(range(1, config["selection"]["top_k"] + 1))
ALPHAS = config["extrapolation"]["alpha_grid"]
BETAS = config["merging"]["beta_grid"]
TASKS = as_param(config["evaluation"]["tasks"])
FIGURES = figure_paths(OUT, [task["name"] for task in TASKS])


wildcard_constraints:
    **WILDCARD_PATTERNS,


def recipe_path(kind):
    """The output pattern of the recipes of one kind of model (see exme.pipeline.catalogue)."""
    return f"{OUT}/recipes/{NAME_PATTERNS[kind]}.yaml"


def eval_path(split, model):
    return f"{OUT}/eval/{split}/{model}.json"


def _rule_settings(rule_name):
    return {**config["resources"]["default"], **config["resources"].get(rule_name, {})}


def rule_threads(rule_name):
    """Threads of a rule: its entry under `resources`, else `resources.default`."""
    return _rule_settings(rule_name)["threads"]


def rule_resources(rule_name):
    """mem_mb, runtime (minutes), gpu and Slurm settings of a rule, from `resources` like its
    threads, and `cluster` (see exme.pipeline.cluster)."""
    return job_resources(_rule_settings(rule_name), config["cluster"])


def base_model_path():
    return f"{OUT}/base" if DEMO else config["model"]["base"]


def finetune_state_dir():
    """The Trainer's resumable state, one folder per fine-tuning setup: after a changed setting the
    job must start over, not resume a checkpoint trained under the old one."""
    upstream = ["finetune", "seed", "model", "data"] + (["demo"] if DEMO else [])
    return f"{OUT}/finetune_state/{fingerprint({key: config[key] for key in upstream})}"


def data_inputs(wildcards):
    """The demo's generated data folder, or a real run's SFT training file."""
    return {"data": f"{OUT}/data"} if DEMO else {"data": config["data"]["sft_train"]}


def sft_train_path():
    return f"{OUT}/data/sft_train.jsonl" if DEMO else config["data"]["sft_train"]


def task_include_path():
    return f"{OUT}/data/lm_eval_tasks" if DEMO else config["evaluation"]["include_path"]


def model_inputs(wildcards):
    """What evaluating a model reads: a model folder, or a recipe plus the folders it names."""
    sources = {"base": base_model_path()}
    if sft_step(wildcards.model) is not None:
        sources["model"] = f"{OUT}/sft"
    elif wildcards.model == FINAL:
        sources["model"] = f"{OUT}/final"
    elif wildcards.model != BASE:
        sources["model"] = f"{OUT}/recipes/{wildcards.model}.yaml"
        sources["checkpoints"] = f"{OUT}/sft"
    if DEMO:
        sources["tasks"] = f"{OUT}/data"
    elif config["evaluation"]["include_path"]:
        # The task YAMLs themselves, so that editing one reruns the evaluations.
        sources["tasks"] = sorted(map(str, Path(config["evaluation"]["include_path"]).rglob("*.yaml")))
    return sources


def model_location(wildcards, input):
    """The folder or recipe to load: SFT checkpoints live in step folders inside the sft output."""
    step = sft_step(wildcards.model)
    if step is not None:
        return f"{input.model}/{checkpoint_folder(step)}"
    return input.get("model", input.base)


def all_evaluations(wildcards):
    """Every evaluation the score table reads: dev for the choices, test for the comparison."""
    return [eval_path("dev", model) for model in models_on_dev(STEPS, RANKS, ALPHAS, BETAS)] + [
        eval_path("test", model) for model in models_on_test(STEPS, RANKS)
    ]

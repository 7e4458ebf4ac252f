from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The Snakefile and the rule scripts import the project package `exme` (pip install -e .).
from exme.errors import ExmeError
from exme.naming import (
    MODEL_NAME_PATTERN,
    checkpoint_steps,
    exme_name,
    expo_name,
    format_coef,
    parse_model_name,
    sft_name,
)
from exme.pipeline_config import as_param, check_config, fingerprint

validate(config, schema="../schemas/config.schema.yaml")
try:
    check_config(config)
except ExmeError as error:
    raise WorkflowError(f"invalid config: {error}") from None


RUN = config["run"]
OUT = f"results/{RUN}"
DEMO = config["demo"]["activate"]
STEPS = checkpoint_steps(config["finetune"]["max_steps"], config["finetune"]["save_steps"])
RANKS = list(range(1, config["selection"]["top_k"] + 1))
ALPHAS = [format_coef(a) for a in config["extrapolation"]["alpha_grid"]]
BETAS = [format_coef(b) for b in config["merging"]["beta_grid"]]
TASKS = as_param(config["evaluation"]["tasks"])


wildcard_constraints:
    model=MODEL_NAME_PATTERN,
    recipe=r"expo\d+(-a\d+(\.\d+)?)?|exme(-b\d+(\.\d+)?)?",
    split="dev|test",


def _rule_settings(rule_name):
    return {**config["resources"]["default"], **config["resources"].get(rule_name, {})}


def rule_threads(rule_name):
    """Threads of a rule: its entry under `resources`, else `resources.default`."""
    return _rule_settings(rule_name)["threads"]


def rule_resources(rule_name):
    """mem_mb, runtime (minutes) and gpu of a rule, from `resources` like its threads."""
    settings = _rule_settings(rule_name)
    return {key: settings[key] for key in ("mem_mb", "runtime", "gpu")}


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


def eval_path(split, model):
    return f"{OUT}/eval/{split}/{model}.json"


def model_inputs(wildcards):
    """What evaluating a model reads: a model folder, or a recipe plus the folders it names."""
    name = parse_model_name(wildcards.model)
    sources = {"base": base_model_path()}
    if name.method == "sft":
        sources["model"] = f"{OUT}/sft"
    elif name.method == "exme" and not name.is_grid_point:
        sources["model"] = f"{OUT}/final"
    elif name.method != "base":
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
    name = parse_model_name(wildcards.model)
    if name.method == "sft":
        return f"{input.model}/step-{name.step}"
    return input.get("model", input.base)


def recipe_inputs(wildcards):
    """A recipe needs the selection, and the chosen coefficients its name does not fix."""
    name = parse_model_name(wildcards.recipe)
    inputs = {
        "selection": checkpoints.select_checkpoints.get().output.selection,
        "base": base_model_path(),
        "checkpoints": f"{OUT}/sft",
    }
    if name.method == "exme" or name.alpha is None:
        inputs["alphas"] = f"{OUT}/search/alpha.json"
    if name.method == "exme" and name.beta is None:
        inputs["betas"] = f"{OUT}/search/beta.json"
    return inputs


def selected_checkpoints(wildcards):
    """The SFT models that select_checkpoints picked (known once that checkpoint has run)."""
    import json

    with open(checkpoints.select_checkpoints.get().output.selection) as handle:
        return [entry["model"] for entry in json.load(handle)["selected"]]


def all_evaluations(wildcards):
    """Every evaluation the report reads: dev for the grids, test for the compared models."""
    dev = ["base", *(sft_name(s) for s in STEPS)]
    dev += [expo_name(r, float(a)) for r in RANKS for a in ALPHAS]
    dev += [exme_name(float(b)) for b in BETAS]
    test = ["base", *(sft_name(s) for s in STEPS), *selected_checkpoints(wildcards)]
    test += [expo_name(r) for r in RANKS] + [exme_name()]
    return [eval_path("dev", m) for m in dict.fromkeys(dev)] + [
        eval_path("test", m) for m in dict.fromkeys(test)
    ]


FIGURES = {
    "extrapolation": [
        f"{OUT}/figures/extrapolation_{task}.png" for task in [t["name"] for t in TASKS] + ["mean"]
    ],
    "beta": f"{OUT}/figures/beta.png",
    "comparison": f"{OUT}/figures/comparison.png",
}


def final_outputs():
    return [
        f"{OUT}/scores.csv",
        f"{OUT}/summary.md",
        *FIGURES["extrapolation"],
        FIGURES["beta"],
        FIGURES["comparison"],
        f"{OUT}/final",
    ]

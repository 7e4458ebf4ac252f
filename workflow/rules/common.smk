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
    SHARED_SCOPE,
    WILDCARD_PATTERNS,
    folder_description,
    match_name,
    model_name,
    scope_seed,
    seed_scope,
    sft_step,
    single_model_pattern,
)
from exme.pipeline.config import (
    as_param,
    check_config,
    check_rule_resources,
    expert_finetune_settings,
    fingerprint,
)
from exme.pipeline.merging import get_system
from exme.pipeline.targets import (
    comparison_paths,
    expert_models,
    figure_paths,
    final_targets,
    merge_models,
    mixup_figure,
    models_on_dev,
    evaluation_batches,
    models_on_test,
)
from exme.train.checkpoints import checkpoint_folder, checkpoint_steps

validate(config, schema="../schemas/config.schema.yaml")
try:
    check_config(config)
except ExmeError as error:
    raise WorkflowError(f"invalid config: {error}") from None


RUN = config["run"]
OUT = f"results/{RUN}"
DEMO = config["demo"]["activate"]
SCOPES = [seed_scope(seed) for seed in config["seeds"]]
STEPS = checkpoint_steps(config["finetune"]["max_steps"], config["finetune"]["save_steps"])
EXPERT_SETTINGS = expert_finetune_settings(config)
EXPERTS = [expert["name"] for expert in config["experts"]]
RANKS = list(range(1, config["selection"]["top_k"] + 1))
ALPHAS = config["extrapolation"]["alpha_grid"]
BETAS = config["merging"]["beta_grid"]
TASKS = as_param(config["evaluation"]["tasks"])
TASK_NAMES = [task["name"] for task in TASKS]
TRACKS = {
    "checkpoint": config["tracks"]["checkpoint"],
    "expert": config["tracks"]["expert"] if EXPERTS else [],
}
MERGE_METHODS = as_param(config["merge_methods"])
EVALUATION_BATCHES = evaluation_batches(RANKS, ALPHAS, BETAS, TRACKS, MERGE_METHODS)
MIXUP_TRACKS = [track for track, methods in TRACKS.items() if any(m.startswith("m3_") for m in methods)]


wildcard_constraints:
    **WILDCARD_PATTERNS,
    trainee=rf"sft|{NAME_PATTERNS['expert'].format(expert=WILDCARD_PATTERNS['expert'])}",


def recipe_path(kind):
    """The output pattern of the recipes of one kind of model (see exme.pipeline.catalogue)."""
    return f"{OUT}/{{scope}}/recipes/{NAME_PATTERNS[kind]}.yaml"


def eval_path(scope, split, model):
    return f"{OUT}/{SHARED_SCOPE if model == BASE else scope}/eval/{split}/{model}.json"


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


def task_include_path():
    return f"{OUT}/data/lm_eval_tasks" if DEMO else config["evaluation"]["include_path"]


def finetune_dir(scope, trainee):
    return f"{OUT}/{scope}/finetune/{trainee}"


def expert_dir(scope, expert):
    return finetune_dir(scope, model_name("expert", expert=expert))


# An expert's model is the one checkpoint its fine-tuning saves, at max_steps.
EXPERT_FOLDER = checkpoint_folder(EXPERT_SETTINGS["max_steps"])


def trainee_settings(wildcards):
    """Fine-tuning settings and training file of the SFT run or of one expert."""
    if wildcards.trainee == "sft":
        train = f"{OUT}/data/sft_train.jsonl" if DEMO else config["data"]["sft_train"]
        return {"settings": config["finetune"], "train": train}
    expert = match_name("expert", wildcards.trainee)["expert"]
    if DEMO:
        train = f"{OUT}/data/experts/{expert}.jsonl"
    else:
        train = next(e["train"] for e in config["experts"] if e["name"] == expert)
    return {"settings": EXPERT_SETTINGS, "train": train}


def finetune_inputs(wildcards):
    """The base model and the training data: the demo's generated folder, or a real run's file."""
    return {
        "base": base_model_path(),
        "data": f"{OUT}/data" if DEMO else trainee_settings(wildcards)["train"],
    }


def finetune_state_dir(wildcards):
    """The Trainer's resumable state, one folder per fine-tuning setup: after a changed setting the
    job must start over, not resume a checkpoint trained under the old one."""
    upstream = {key: config[key] for key in ["model", "data"] + (["demo"] if DEMO else [])}
    setup = {**upstream, "trainee": trainee_settings(wildcards), "seed": scope_seed(wildcards.scope)}
    return f"{OUT}/{wildcards.scope}/finetune_state/{wildcards.trainee}/{fingerprint(setup)}"


def _track_of(model):
    """The track whose fine-tuned models a recipe model reads."""
    fields = match_name("merge", model) or match_name("merge_point", model)
    return fields["track"] if fields else "checkpoint"


def track_inputs(scope, track):
    """What the recipes of a track read: the selected checkpoints, or the experts."""
    if track == "checkpoint":
        return {"selection": f"{OUT}/{scope}/selection.json", "checkpoints": finetune_dir(scope, "sft")}
    return {f"expert_{expert}": expert_dir(scope, expert) for expert in EXPERTS}


def _model_source(scope, model):
    """The folder or recipe a model is loaded from, with the folders that recipe reads."""
    if sft_step(model) is not None:
        return finetune_dir(scope, "sft"), {}
    if expert := match_name("expert", model):
        return expert_dir(scope, expert["expert"]), {}
    if model == FINAL:
        return f"{OUT}/{scope}/final", {}
    if model == BASE:
        return base_model_path(), {}
    return f"{OUT}/{scope}/recipes/{model}.yaml", track_inputs(scope, _track_of(model))


def model_inputs(scope, models):
    """What evaluating models reads: for each its folder or recipe (`model_<i>`), the folders the
    recipes name, the base model and the task data."""
    inputs = {"base": base_model_path()}
    for index, model in enumerate(models):
        source, reads = _model_source(scope, model)
        inputs |= {f"model_{index}": source, **reads}
    if DEMO:
        inputs["tasks"] = f"{OUT}/data"
    elif config["evaluation"]["include_path"]:
        # The task YAMLs themselves, so that editing one reruns the evaluations.
        inputs["tasks"] = sorted(map(str, Path(config["evaluation"]["include_path"]).rglob("*.yaml")))
    return inputs


def model_locations(models, input):
    """Where each model is loaded from: SFT checkpoints and experts are step folders inside their
    fine-tuning's output."""
    locations = []
    for index, model in enumerate(models):
        source = input[f"model_{index}"]
        step = sft_step(model)
        if step is not None:
            source = f"{source}/{checkpoint_folder(step)}"
        elif match_name("expert", model):
            source = f"{source}/{EXPERT_FOLDER}"
        locations.append(source)
    return locations


def merge_recipe_inputs(wildcards):
    """A merge system's recipe reads its track's models, and at its chosen point the dev search."""
    inputs = {"base": base_model_path(), **track_inputs(wildcards.scope, wildcards.track)}
    system = get_system(wildcards.method)
    if system.grid(system.settings(MERGE_METHODS)) and "point" not in wildcards.keys():
        inputs["search"] = f"{OUT}/{wildcards.scope}/search/{wildcards.track}-{wildcards.method}.json"
    return inputs


def merge_point_evaluations(wildcards):
    system = get_system(wildcards.method)
    points = system.grid(system.settings(MERGE_METHODS))
    return [
        eval_path(
            wildcards.scope,
            "dev",
            model_name("merge_point", track=wildcards.track, method=wildcards.method, point=p),
        )
        for p in points
    ]


def evaluations_of(scope):
    """Every evaluation of one seed: the ExMe chain and each track's input models and merges."""
    dev = models_on_dev(STEPS, RANKS, ALPHAS, BETAS) + expert_models(EXPERTS)
    test = models_on_test(STEPS, RANKS) + expert_models(EXPERTS)
    for track, methods in TRACKS.items():
        merged = merge_models(track, methods, MERGE_METHODS)
        dev, test = dev + merged["dev"], test + merged["test"]
    return [eval_path(scope, "dev", model) for model in dev] + [
        eval_path(scope, "test", model) for model in test
    ]


def all_evaluations(wildcards):
    """Every evaluation the score table reads, over all seeds."""
    return [path for scope in SCOPES for path in evaluations_of(scope)]

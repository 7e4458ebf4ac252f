import json
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The Snakefile and the rule scripts import the project package `exme` (pip install -e .); the
# modules imported here import no torch, so building the DAG stays fast.
from exme.errors import ExmeError
from exme.pipeline.catalogue import (
    NAME_PATTERNS,
    WILDCARD_PATTERNS,
    folder_description,
    match_name,
    model_name,
    scope_seed,
    seed_scope,
    single_model_pattern,
)
from exme.pipeline.config import (
    as_param,
    check_rule_resources,
    evaluation_settings,
    expert_finetune_settings,
    fingerprint,
    local_data_files,
    prepare_config,
)
from exme.pipeline.greedy import Pool
from exme.pipeline.greedy_steps import file_name
from exme.pipeline.locations import RunLayout
from exme.pipeline.merging import get_system
from exme.pipeline.targets import (
    checkpoint_extrapolation_figure,
    comparison_paths,
    expert_models,
    figure_paths,
    final_targets,
    merge_models,
    mixup_figure,
    models_on_dev,
    evaluation_batches,
    split_batches,
    greedy_pair_models,
    models_on_test,
)
from exme.pipeline.cluster import evaluation_group, job_environment, job_resources
from exme.merge.io.model_ids import hub_model
from exme.train.checkpoints import checkpoint_folder, checkpoint_steps

try:
    prepare_config(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
except ExmeError as error:
    raise WorkflowError(f"invalid config: {error}") from None

# Every job inherits these: local jobs from this process, Slurm jobs through sbatch --export=ALL.
os.environ.update(job_environment(config["cluster"], source=workflow.basedir))


RUN = config["run"]
OUT = f"results/{RUN}"
DEMO = config["demo"]["activate"]
BASE_HUB_MODEL = None if DEMO else hub_model(config["model"]["base"])
HUB_SFT_DATA = (
    None if DEMO or not isinstance(config["data"]["sft_train"], dict) else config["data"]["sft_train"]
)
SCOPES = [seed_scope(seed) for seed in config["seeds"]]
STEPS = checkpoint_steps(config["finetune"]["max_steps"], config["finetune"]["save_steps"])
EXPERT_SETTINGS = expert_finetune_settings(config)
EXPERTS = [expert["name"] for expert in config["experts"]]
RANKS = list(range(1, config["selection"]["top_k"] + 1))
ALPHAS = config["extrapolation"]["alpha_grid"]
EXTRAPOLATED_STEPS = STEPS if config["extrapolation"]["every_checkpoint"] else []
BETAS = config["merging"]["beta_grid"]
TASKS = as_param(config["evaluation"]["tasks"])
TASK_NAMES = [task["name"] for task in TASKS]
TRACKS = {
    "checkpoint": config["tracks"]["checkpoint"],
    "expert": config["tracks"]["expert"] if EXPERTS else [],
}
MERGE_METHODS = as_param(config["merge_methods"])
GREEDY_TRACK = "expert"  # greedy merging and kinship run on the experts
GREEDY_VARIANTS = ["greedy", "greedy_explore"] if config["greedy"]["activate"] and EXPERTS else []
GREEDY_PAIRS = greedy_pair_models(GREEDY_TRACK, expert_models(EXPERTS)) if GREEDY_VARIANTS else []
EVALUATION_BATCHES = evaluation_batches(RANKS, ALPHAS, BETAS, TRACKS, MERGE_METHODS, EXTRAPOLATED_STEPS)
if GREEDY_PAIRS:
    EVALUATION_BATCHES[f"{GREEDY_TRACK}-greedy-pairs"] = GREEDY_PAIRS
EVALUATION_BATCHES = split_batches(EVALUATION_BATCHES, config["evaluation"]["models_per_job"])
MIXUP_TRACKS = [track for track, methods in TRACKS.items() if any(m.startswith("m3_") for m in methods)]


wildcard_constraints:
    **WILDCARD_PATTERNS,
    trainee=rf"sft|{NAME_PATTERNS['expert'].format(expert=WILDCARD_PATTERNS['expert'])}",


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
    """The demo's pretrained base, a Hub model's folder of links (download_base), or a local folder."""
    return f"{OUT}/base" if DEMO or BASE_HUB_MODEL is not None else config["model"]["base"]


def sft_train_path():
    """The SFT data: the demo's, a Hub data set's subset (download_sft_data), or a local file."""
    if DEMO or HUB_SFT_DATA is not None:
        return f"{OUT}/data/sft_train.jsonl"
    return config["data"]["sft_train"]


def task_include_path():
    return f"{OUT}/data/lm_eval_tasks" if DEMO else config["evaluation"]["include_path"]


# Where each model lives (exme.pipeline.locations). An expert's model is the one checkpoint its
# fine-tuning saves, at max_steps.
LAYOUT = RunLayout(OUT, base_model_path(), EXPERTS, checkpoint_folder(EXPERT_SETTINGS["max_steps"]))


def recipe_path(kind):
    """The output pattern of the recipes of one kind of model (see exme.pipeline.catalogue)."""
    return LAYOUT.recipe_file("{scope}", NAME_PATTERNS[kind])


def trainee_settings(trainee):
    """Fine-tuning settings and training file of the SFT run or of one expert."""
    if trainee == "sft":
        return {"settings": config["finetune"], "train": sft_train_path()}
    expert = match_name("expert", trainee)["expert"]
    if DEMO:
        train = f"{OUT}/data/experts/{expert}.jsonl"
    else:
        train = next(e["train"] for e in config["experts"] if e["name"] == expert)
    return {"settings": EXPERT_SETTINGS, "train": train}


def finetune_inputs(wildcards):
    """The base model and the training data (the demo's generated folder, or a real run's file),
    after the preflight (ancient: checking again retrains nothing)."""
    return {
        "base": base_model_path(),
        "data": f"{OUT}/data" if DEMO else trainee_settings(wildcards.trainee)["train"],
        "preflight": ancient(f"{OUT}/preflight.json"),
    }


def training_files():
    """{config key: file} of every fine-tuning data file: the SFT run's and each expert's."""
    files = {"data.sft_train": sft_train_path()}
    for index, expert in enumerate(EXPERTS):
        files[f"experts[{index}].train"] = trainee_settings(model_name("expert", expert=expert))["train"]
    return files


def preflight_inputs(wildcards):
    """What the preflight reads: the base model, the fine-tuning data and the task files."""
    return {
        "base": base_model_path(),
        "data": f"{OUT}/data" if DEMO else list(training_files().values()),
        **task_inputs(),
    }


def finetune_state_dir(wildcards):
    """The Trainer's resumable state, one folder per fine-tuning setup: after a changed setting the
    job must start over, not resume a checkpoint trained under the old one."""
    upstream = {key: config[key] for key in ["model", "data"] + (["demo"] if DEMO else [])}
    setup = {**upstream, "trainee": trainee_settings(wildcards.trainee), "seed": scope_seed(wildcards.scope)}
    return f"{OUT}/{wildcards.scope}/finetune_state/{wildcards.trainee}/{fingerprint(setup)}"


def _greedy_pool(scope, track, variant, generation):
    """(pool file, its JSON) after `generation`: the step's output, a checkpoint (the loop is
    data-dependent, so the DAG grows as each generation is made)."""
    if int(generation) == 1:
        folder = checkpoints.write_greedy_pairs.get(scope=scope, track=track).output[0]
    else:
        folder = checkpoints.greedy_step.get(
            scope=scope, track=track, variant=variant, generation=generation
        ).output[0]
    with open(f"{folder}/pool.json") as handle:
        return folder, json.load(handle)


def greedy_step_inputs(wildcards):
    """Step g scores generation g - 1 (its members' dev evaluations) and may grow generation g."""
    scope, track, variant = wildcards.scope, wildcards.track, wildcards.variant
    previous = int(wildcards.generation) - 1
    folder, state = _greedy_pool(scope, track, variant, previous)
    pool = Pool.from_dict(state["next"])
    evaluations = [
        LAYOUT.eval_file(scope, "dev", file_name(track, variant, name)) for name in pool.unscored()
    ]
    return {
        "pool": f"{folder}/pool.json",
        "evaluations": evaluations,
        "base": base_model_path(),
    } | LAYOUT.greedy_reads(scope, track, variant, previous)


def greedy_result_inputs(wildcards):
    """The step at which the loop stopped: walk the generations, each known once its step ran."""
    scope, track, variant = wildcards.scope, wildcards.track, wildcards.variant
    generation = 2
    while True:
        folder, state = _greedy_pool(scope, track, variant, generation)
        if state["next"] is None:
            return {"pool": f"{folder}/pool.json"} | LAYOUT.greedy_reads(
                scope, track, variant, generation - 1
            )
        generation += 1


def model_inputs(scope, models):
    """What evaluating models reads: for each its folder or recipe (`model_<i>`), the folders the
    recipes name, the base model and the task data."""
    return {"base": base_model_path()} | LAYOUT.model_inputs(scope, models) | task_inputs()


def task_inputs():
    """The task files a run's evaluations read, so that editing one reruns them: the demo's data,
    the task YAMLs of include_path and local data files that evaluation.datasets names."""
    if DEMO:
        return {"tasks": f"{OUT}/data"}
    inputs = {}
    if config["evaluation"]["include_path"]:
        inputs["tasks"] = sorted(map(str, Path(config["evaluation"]["include_path"]).rglob("*.yaml")))
    local_files = local_data_files(config["evaluation"]["datasets"])
    if local_files:
        inputs["task_data"] = local_files
    return inputs


def merge_recipe_inputs(wildcards):
    """A merge system's recipe reads its track's models, and at its chosen point the dev search."""
    inputs = {"base": base_model_path(), **LAYOUT.track_inputs(wildcards.scope, wildcards.track)}
    system = get_system(wildcards.method)
    if system.points(system.settings(MERGE_METHODS)) and "point" not in wildcards.keys():
        inputs["search"] = f"{OUT}/{wildcards.scope}/search/{wildcards.track}-{wildcards.method}.json"
    return inputs


def merge_point_evaluations(wildcards):
    system = get_system(wildcards.method)
    points = system.points(system.settings(MERGE_METHODS))
    return [
        LAYOUT.eval_file(
            wildcards.scope,
            "dev",
            model_name("merge_point", track=wildcards.track, method=wildcards.method, point=p),
        )
        for p in points
    ]


def evaluations_of(scope):
    """Every evaluation of one seed: the ExMe chain and each track's input models and merges."""
    dev = models_on_dev(STEPS, RANKS, ALPHAS, BETAS, EXTRAPOLATED_STEPS) + expert_models(EXPERTS)
    test = models_on_test(STEPS, RANKS) + expert_models(EXPERTS)
    for track, methods in TRACKS.items():
        merged = merge_models(track, methods, MERGE_METHODS)
        dev, test = dev + merged["dev"], test + merged["test"]
    dev += GREEDY_PAIRS  # for kinship against merge gain
    test += [model_name("greedy", track=GREEDY_TRACK, variant=variant) for variant in GREEDY_VARIANTS]
    return [LAYOUT.eval_file(scope, "dev", model) for model in dev] + [
        LAYOUT.eval_file(scope, "test", model) for model in test
    ]

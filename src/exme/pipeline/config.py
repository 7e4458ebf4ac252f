"""Checks of the pipeline's config that its JSON Schema cannot express.

The Snakefile calls `check_config` after schema validation and before any job runs, so that a bad
config fails at once with one message that names the config key or file, and nothing is written.
"""

import hashlib
import json
import math
from pathlib import Path

import yaml

from exme.demo.tasks import TASK_GENERATORS, lm_eval_task_name
from exme.errors import ExmeError
from exme.evaluate.settings import LM_EVAL_SETTINGS, task_lm_eval_settings
from exme.evaluate.splits import parse_split
from exme.files import CONFIG_FILE
from exme.merge.io.model_ids import hub_model
from exme.pipeline.merging import check_system, get_system
from exme.sizes import parse_size
from exme.train.checkpoints import checkpoint_steps
from exme.train.settings import check_fp16_weights, check_mixed_precision, check_steps, check_warmup_steps


def as_param(value: object) -> object:
    """A config section as a rule parameter, with keys sorted: Snakemake compares params by their
    text, so reordering keys in a config file must not look like a change."""
    if isinstance(value, dict):
        return {key: as_param(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [as_param(item) for item in value]
    return value


def fingerprint(settings: object) -> str:
    """A short stable digest of JSON-able settings, to name folders that must not mix setups."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


# The evaluate rule's settings (evaluation keys beside tasks, include_path, batch_size and limit).
EVALUATION_SETTINGS = (
    "dtype",
    "seed",
    *LM_EVAL_SETTINGS,
    "bootstrap_iters",
    "log_samples",
    "allow_downloads",
    "datasets",
)
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def merge_config_files(*paths: str | Path) -> dict:
    """Config files merged as `snakemake --configfile A B` merges them (Snakemake's own merge)."""
    from snakemake.utils import update_config

    config: dict = {}
    for path in paths:
        update_config(config, yaml.safe_load(Path(path).read_text()) or {})
    return config


# Keys renamed since an earlier release: {old key: message naming the new one}.
RENAMED_KEYS = {"seed": "renamed to `seeds`, a list of seeds (e.g. `seeds: [0]`)"}


def check_renamed_keys(config: dict) -> None:
    """A key renamed since an earlier release is named with its new name, before the schema's
    less helpful 'additional properties' message."""
    for key, message in RENAMED_KEYS.items():
        if key in config:
            raise ExmeError(f"{key}: {message}")


def resolve_run_defaults(config: dict) -> None:
    """Complete in place the defaults that depend on the kind of run, once every config file is
    merged: the demo's experts (one per demo task) and its greedy merging apply only when the demo
    runs, so that a real run's config merged over the demo's defaults does not inherit them."""
    demo = bool(config.get("demo", {}).get("activate"))
    if config.get("experts") is None:
        config["experts"] = [{"name": task} for task in config["demo"].get("tasks", [])] if demo else []
    greedy = config.setdefault("greedy", {})
    if greedy.get("activate") is None:
        greedy["activate"] = demo


def prepare_config(config: dict, schema: str | Path) -> None:
    """The merged config made ready in place, as the Snakefile does before building the DAG: renamed
    keys named, validated against the JSON schema (which fills in its defaults), the run-dependent
    defaults resolved, then the checks below."""
    from snakemake.utils import validate

    check_renamed_keys(config)
    validate(config, str(schema))
    resolve_run_defaults(config)
    check_config(config)


def evaluation_settings(config: dict) -> dict:
    """The evaluate rule's settings, as one rule parameter."""
    return as_param({key: config["evaluation"][key] for key in EVALUATION_SETTINGS})


def check_config(config: dict) -> None:
    _check_finite(config, "")
    finetune = config["finetune"]
    check_steps(finetune["max_steps"], finetune["save_steps"], "finetune")
    n_checkpoints = len(checkpoint_steps(finetune["max_steps"], finetune["save_steps"]))
    if config["selection"]["top_k"] > n_checkpoints:
        raise ExmeError(
            f"selection.top_k ({config['selection']['top_k']}) exceeds the number of checkpoints "
            f"({n_checkpoints}) that finetune.max_steps / finetune.save_steps give"
        )
    if any(alpha < 0 for alpha in config["extrapolation"]["alpha_grid"]):
        raise ExmeError("extrapolation.alpha_grid: alpha must be >= 0 (extrapolation away from the base)")
    _check_finetune(finetune)
    _check_models_and_tasks(config)
    _check_tracks(config)
    _check_chat_templates(config)
    try:
        parse_size(config["output"]["shard_size"])
    except ExmeError as error:
        raise ExmeError(f"output.shard_size: {error}") from None


def expert_finetune_settings(config: dict) -> dict:
    """The experts' fine-tuning settings: `finetune` with `expert_finetune` over it."""
    return {**config["finetune"], **config["expert_finetune"]}


def _check_tracks(config: dict) -> None:
    top_k, experts = config["selection"]["top_k"], config["experts"]
    names = [expert["name"] for expert in experts]
    if len(set(names)) != len(names):
        raise ExmeError(f"experts: each expert needs its own name, got {names}")
    for method in config["tracks"]["checkpoint"]:
        check_system(method, top_k, "tracks.checkpoint (the top_k selected checkpoints)")
    if not experts:  # the expert track is off
        return
    if config["tracks"]["expert"] and len(experts) < 2:
        raise ExmeError(
            f"tracks.expert: the expert track merges at least two experts, `experts` has {len(experts)}"
        )
    for method in config["tracks"]["expert"]:
        check_system(method, len(experts), "tracks.expert")
    _check_greedy(config["greedy"], len(experts))
    unknown = sorted(
        set(config["expert_finetune"]) - set(config["finetune"]) - {"warmup_steps", "weight_decay"}
    )
    if unknown:
        raise ExmeError(f"expert_finetune.{unknown[0]}: not a setting of `finetune`")
    settings = expert_finetune_settings(config)
    check_steps(settings["max_steps"], settings["save_steps"], "expert_finetune")
    for index, expert in enumerate(experts):
        where = f"experts[{index}] ({expert['name']})"
        if config["demo"]["activate"]:
            if expert["name"] not in config["demo"]["tasks"]:
                raise ExmeError(
                    f"{where}: the demo's experts are named after its tasks ({config['demo']['tasks']})"
                )
            if "train" in expert:
                raise ExmeError(
                    f"{where}: the demo trains each expert on its task's train split; remove `train`"
                )
        elif "train" not in expert:
            raise ExmeError(f"{where}: `train` (a JSONL of prompt/completion records) is required")
        elif not Path(expert["train"]).is_file():
            raise ExmeError(f"{where}.train: {expert['train']} does not exist")


def _check_greedy(greedy: dict, n_experts: int) -> None:
    if not greedy["activate"]:
        return
    pool = n_experts + n_experts * (n_experts - 1) // 2  # the experts and every pair of them
    if greedy["k"] > pool:
        raise ExmeError(
            f"greedy.k ({greedy['k']}) is larger than the pool of {pool} models "
            f"({n_experts} experts and their pairs)"
        )
    check_system(greedy["method"], 2, "greedy.method")
    system = get_system(greedy["method"])
    if system.grid is not None:
        raise ExmeError(
            f"greedy.method: {greedy['method']} chooses a coefficient on dev; "
            "use a merge of fixed coefficients (slerp, linear, ties, ...)"
        )


def check_rule_resources(resources: dict, rule_names: list[str]) -> None:
    """Every `resources.<rule>` entry must name a rule of the workflow (a typo would go unnoticed)."""
    unknown = sorted(set(resources) - {"default", *rule_names})
    if unknown:
        raise ExmeError(
            f"resources.{unknown[0]}: no rule of that name (rules: {', '.join(sorted(rule_names))})"
        )


def _check_models_and_tasks(config: dict) -> None:
    tasks = config["evaluation"]["tasks"]
    task_names = [task["name"] for task in tasks]
    for index, task in enumerate(tasks):
        key = f"evaluation.tasks[{index}].splits ({task['name']})"
        dev, test = (parse_split(task["splits"][role], f"{key}.{role}") for role in ("dev", "test"))
        disjoint = dev.disjoint(test)
        if not disjoint:
            reason = "share items" if disjoint is False else "are slices in different units (% and items)"
            raise ExmeError(
                f"{key}: dev {task['splits']['dev']!r} and test {task['splits']['test']!r} {reason}; "
                "the test split must never choose anything"
            )
    if config["demo"]["activate"]:
        demo = config["demo"]
        for key in ("tasks", "n_train", "n_dev", "n_test", "n_pretrain_lines", "model", "pretrain"):
            if key not in demo:
                raise ExmeError(f"demo.{key} is required when demo.activate is true")
        for generator in demo["tasks"]:
            if generator not in TASK_GENERATORS:
                raise ExmeError(
                    f"demo.tasks: unknown task {generator!r} (known: {', '.join(sorted(TASK_GENERATORS))})"
                )
        built = {lm_eval_task_name(g) for g in demo["tasks"]}
        for name in task_names:
            if name not in built:
                raise ExmeError(
                    f"evaluation.tasks: unknown task {name!r}; the demo builds {', '.join(sorted(built))}"
                )
        return
    base, sft_train = config["model"].get("base"), config["data"].get("sft_train")
    if not base:
        raise ExmeError("model.base is required when demo.activate is false")
    if hub_model(base) is None:  # a Hub id is downloaded by the rule download_base
        if not Path(base).exists():
            raise ExmeError(f"model.base: {base} is neither a local folder nor a Hub id ORG/NAME[@REVISION]")
        if not (Path(base) / CONFIG_FILE).is_file():
            raise ExmeError(f"model.base: {base} is not a Hugging Face model folder (no {CONFIG_FILE})")
    if not sft_train:
        raise ExmeError("data.sft_train is required when demo.activate is false")
    if isinstance(sft_train, str) and not Path(sft_train).exists():
        raise ExmeError(f"data.sft_train: {sft_train} does not exist")
    unknown = sorted(set(config["evaluation"]["datasets"]) - set(task_names))
    if unknown:
        raise ExmeError(f"evaluation.datasets.{unknown[0]}: not a task of evaluation.tasks")
    include_path = config["evaluation"]["include_path"]
    if include_path is not None and not Path(include_path).is_dir():
        raise ExmeError(f"evaluation.include_path: {include_path} is not a folder")


def _check_finite(value: object, key: str) -> None:
    """NaN and infinity (YAML's .nan, .inf) are no setting anywhere in the config."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ExmeError(f"{key}: {value} is not a finite number")
    if isinstance(value, dict):
        for name, item in value.items():
            _check_finite(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(item, f"{key}[{index}]")


def _check_finetune(finetune: dict) -> None:
    check_mixed_precision(finetune["bf16"], finetune["fp16"])
    check_fp16_weights(finetune["fp16"], finetune["dtype"])
    check_warmup_steps(finetune["warmup_steps"])


def _task_settings(config: dict) -> list[tuple[str, dict]]:
    """(config key, lm-eval settings) of every task: its own over `evaluation`'s."""
    evaluation = config["evaluation"]
    return [
        (f"evaluation.tasks[{index}] ({task['name']})", task_lm_eval_settings(task, evaluation))
        for index, task in enumerate(evaluation["tasks"])
    ]


def _has_chat_template(model_dir: Path) -> bool:
    """Whether a Hugging Face folder's tokenizer has a chat template (read without transformers)."""
    if any((model_dir / name).is_file() for name in CHAT_TEMPLATE_FILES):
        return True
    tokenizer_config = model_dir / "tokenizer_config.json"
    return tokenizer_config.is_file() and bool(json.loads(tokenizer_config.read_text()).get("chat_template"))


def _first_record(path: Path) -> dict | None:
    with path.open() as handle:
        for line in handle:
            if line.strip():
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    return None  # fine-tuning names the line
    return None


def _check_chat_templates(config: dict) -> None:
    """The chat template that chat data or apply_chat_template need exists, and few-shot examples as
    a multi-turn chat come with one."""
    wanted = []
    for key, settings in _task_settings(config):
        if settings["fewshot_as_multiturn"] and not settings["apply_chat_template"]:
            raise ExmeError(f"{key}: fewshot_as_multiturn is true but apply_chat_template is not")
        if settings["apply_chat_template"]:
            wanted.append(f"{key}: apply_chat_template")
    if config["demo"]["activate"]:
        if wanted:
            raise ExmeError(f"{wanted[0]} is set, but the demo's tokenizer has no chat template")
        return
    sft_train = config["data"]["sft_train"]
    record = _first_record(Path(sft_train)) if isinstance(sft_train, str) else None
    if isinstance(record, dict) and "messages" in record:
        wanted.append(f"data.sft_train: {sft_train} holds chat 'messages' records, which")
    if hub_model(config["model"]["base"]) is not None:
        return  # its tokenizer is read once downloaded: fine-tuning and evaluation check it then
    base = Path(config["model"]["base"])
    if wanted and not _has_chat_template(base):
        raise ExmeError(f"{wanted[0]} needs a chat template, but the tokenizer of model.base {base} has none")


def local_data_files(datasets: dict[str, dict]) -> list[str]:
    """The local files that evaluation.datasets points tasks at (`dataset_kwargs.data_files`: a
    path, a list of paths or a mapping of split to either), for the rules to take as inputs."""
    files: list[str] = []
    for keys in datasets.values():
        data_files = keys.get("dataset_kwargs", {}).get("data_files")
        if data_files is None:
            continue
        values = data_files.values() if isinstance(data_files, dict) else [data_files]
        for value in values:
            files += [value] if isinstance(value, str) else list(value)
    return sorted({file for file in files if "://" not in file})  # URLs are fetched, not inputs

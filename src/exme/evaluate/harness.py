"""Evaluation with lm-evaluation-harness on a model object, offline, on a chosen split."""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from exme.device import default_device
from exme.errors import ExmeError
from exme.offline import use_offline_environment

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager


def load_model_dir(
    path: str | os.PathLike, device: torch.device | str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load an HF model folder (float32, eval mode) and its tokenizer."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ExmeError(f"model folder {path} has no config.json")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.to(torch.device(device) if device is not None else default_device()).eval()
    return model, AutoTokenizer.from_pretrained(path)


def _registered_task_configs(
    task_names: list[str], include_path: str | os.PathLike | None
) -> tuple["TaskManager", dict[str, dict[str, Any]]]:
    """A TaskManager and each task's full lm-eval config, looked up by name in include_path, then
    among lm-eval's own tasks (indexing those takes seconds, so only when a name is not found)."""
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._index import Kind

    # lm-eval 0.4.13 has no public call for "a registered task's config with one key changed": a
    # dict spec replaces the registered config, so the config is loaded here (with its includes
    # and !function entries resolved, as lm-eval itself does) and passed in full.
    from lm_eval.tasks._yaml_loader import load_yaml

    task_manager = TaskManager(include_path=include_path, include_defaults=False)
    if any(name not in task_manager.task_index for name in task_names):
        task_manager = TaskManager(include_path=include_path, include_defaults=True)
    index = task_manager.task_index
    configs = {}
    for name in task_names:
        entry = index.get(name)
        if entry is None:
            where = f"in {include_path} or " if include_path else ""
            raise ExmeError(
                f"evaluation.tasks: no lm-eval task named {name!r} {where}among lm-eval's own tasks"
            )
        if entry.kind in (Kind.GROUP, Kind.TAG):
            raise ExmeError(
                f"evaluation.tasks: {name!r} is an lm-eval group or tag; list its tasks one by one"
            )
        if entry.kind is not Kind.TASK:
            raise ExmeError(
                f"evaluation.tasks: {name!r} is a Python-class lm-eval task, whose split cannot be set"
            )
        configs[name] = load_yaml(entry.yaml_path, resolve_func=True) if entry.yaml_path else dict(entry.cfg)
    return task_manager, configs


# lm-eval tasks whose dataset_path names one of these `datasets` builders read local files.
LOCAL_DATA_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow", "pandas"})


def hub_datasets(task_names: list[str], include_path: str | os.PathLike | None) -> list[dict[str, Any]]:
    """The Hugging Face data sets that the tasks load, as `datasets.load_dataset` keywords (lm-eval
    calls it with the same ones), each once; tasks over local files need none."""
    _, configs = _registered_task_configs(task_names, include_path)
    wanted: list[dict[str, Any]] = []
    for config in configs.values():
        path = config.get("dataset_path")
        if path is None or path in LOCAL_DATA_BUILDERS or Path(path).exists():
            continue
        keywords = {"path": path, "name": config.get("dataset_name"), **config.get("dataset_kwargs", {})}
        if keywords not in wanted:
            wanted.append(keywords)
    return wanted


def fetch_datasets(keywords: list[dict[str, Any]]) -> None:
    """Download each data set into the Hugging Face cache (HF_HOME) with its `load_dataset` keywords."""
    if not keywords:
        return
    import datasets

    for dataset in keywords:
        datasets.load_dataset(**dataset)


def _with_evaluated_split(config: dict[str, Any], split: str) -> dict[str, Any]:
    """The config with `split` as the split lm-eval evaluates (its `test_split`)."""
    data_files = config.get("dataset_kwargs", {}).get("data_files")
    if isinstance(data_files, dict) and split not in data_files:
        raise ExmeError(
            f"lm-eval task {config['task']!r}: its data_files have no split {split!r} "
            f"(they have {', '.join(data_files)}); see evaluation.tasks[].splits"
        )
    return {**config, "test_split": split}


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    task_splits: dict[str, str],
    include_path: str | os.PathLike | None,
    batch_size: int,
    seed: int,
    limit: int | float | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Run lm_eval.simple_evaluate on an in-memory model. `task_splits` maps each lm-eval task name
    (in include_path or among lm-eval's own tasks) to the dataset split to evaluate, e.g.
    {"arc_easy": "validation"}. Returns lm-eval's results dict without samples."""
    if not task_splits:
        raise ExmeError("evaluation.tasks is empty")
    # No Hub access at run time: lm-eval's own tasks read their data sets from the local cache.
    use_offline_environment()
    import lm_eval  # imported late: it reads the HF_* environment at import time
    from lm_eval.models.huggingface import HFLM

    task_manager, configs = _registered_task_configs(list(task_splits), include_path)
    device = torch.device(device) if device is not None else default_device()
    model.to(device).eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))
    return lm_eval.simple_evaluate(
        model=lm,
        tasks=[_with_evaluated_split(configs[task], split) for task, split in task_splits.items()],
        task_manager=task_manager,
        limit=limit,
        log_samples=False,
        bootstrap_iters=0,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )


def scores_from_results(results: dict[str, Any], metric_keys: dict[str, str] | str) -> list[dict[str, Any]]:
    """One score per task: [{task, metric, value}], with the metric key per task or one for all."""
    task_results = results.get("results", {})
    if isinstance(metric_keys, str):
        metric_keys = dict.fromkeys(task_results, metric_keys)
    scores = []
    for task, metric in metric_keys.items():
        value = task_results.get(task, {}).get(metric)
        if not isinstance(value, int | float):
            raise ExmeError(f"lm-eval results have no numeric {metric!r} for task {task!r}")
        scores.append({"task": task, "metric": metric, "value": float(value)})
    return scores

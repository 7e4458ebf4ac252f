"""Evaluation with lm-evaluation-harness on a model object, offline, on a chosen split."""

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from exme.device import default_device
from exme.errors import ExmeError

EVAL_SPLITS = ("dev", "test")


def _offline_environment() -> None:
    """No Hub access at run time; datasets still needs a writable cache even for local JSONL."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if "HF_HOME" not in os.environ:
        os.environ["HF_HOME"] = str(Path(tempfile.gettempdir()) / "exme-hf-home")
    os.environ.setdefault("HF_DATASETS_CACHE", str(Path(os.environ["HF_HOME"]) / "datasets"))


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


def _task_config(include_path: Path, task: str, split: str) -> dict[str, Any]:
    """The task's YAML, with `split` as the evaluated split (a registered name cannot be overridden
    in lm-eval 0.4.13: a dict spec replaces the config, so the whole config is passed inline)."""
    yaml_path = include_path / f"{task}.yaml"
    if not yaml_path.is_file():
        raise ExmeError(f"task {task!r}: no lm-eval YAML {yaml_path}")
    config = yaml.safe_load(yaml_path.read_text())
    if config.get("task") != task:
        raise ExmeError(f"{yaml_path} defines task {config.get('task')!r}, expected {task!r}")
    data_files = config.get("dataset_kwargs", {}).get("data_files", {})
    if split not in data_files:
        raise ExmeError(f"{yaml_path} has no data_files entry for split {split!r}")
    return {**config, "test_split": split}


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    tasks: list[str],
    split: str,
    include_path: str | os.PathLike,
    batch_size: int,
    seed: int,
    limit: int | float | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Run lm_eval.simple_evaluate on an in-memory model over `tasks` (YAML names in include_path),
    evaluating their `split` ("dev" or "test"). Returns lm-eval's results dict without samples."""
    if split not in EVAL_SPLITS:
        raise ExmeError(f"split must be one of {EVAL_SPLITS}, got {split!r}")
    if not tasks:
        raise ExmeError("tasks is empty")
    _offline_environment()
    import lm_eval  # imported late: it reads the HF_* environment at import time
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    include_path = Path(include_path)
    device = torch.device(device) if device is not None else default_device()
    model.to(device).eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=[_task_config(include_path, task, split) for task in tasks],
        task_manager=TaskManager(include_path=str(include_path), include_defaults=False),
        limit=limit,
        log_samples=False,
        bootstrap_iters=0,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    return results


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

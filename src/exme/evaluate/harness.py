"""Evaluation with lm-evaluation-harness on a model object, on a chosen split of each task.

Only lm-eval's public mechanisms are used, so that every evaluation can be rerun with the `lm_eval`
CLI: a task is evaluated on a split through a generated task YAML that `include:`s the task's own
YAML and sets `test_split`; a slice of a split (`exme.evaluate.splits`) is lm-eval's `samples`
argument; settings (few-shot, chat template, generation arguments, seeds) are simple_evaluate's own
arguments, and the CLI flag of each (`exme.evaluate.settings`) is recorded with the results.
"""

import json
import numbers
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from exme.device import resolve_device
from exme.errors import ExmeError
from exme.evaluate.settings import LmEvalSettings, RunSettings, lm_eval_command
from exme.evaluate.splits import Split, parse_split, sample_indices
from exme.files import staged_file, write_text
from exme.offline import set_offline

if TYPE_CHECKING:
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

SPLIT_SEPARATOR = "@"  # a task evaluated on a split is named <task>@<split>
SAMPLES_FILE = "samples.json"  # beside the generated task YAMLs: the items of sliced splits
# The lm-eval task keys that say where its data come from, which evaluation.datasets may replace
# (e.g. a local copy of a Hub data set on a site without network).
DATASET_KEYS = ("dataset_path", "dataset_name", "dataset_kwargs")


def split_task_name(task: str, split: str) -> str:
    return f"{task}{SPLIT_SEPARATOR}{split}"


def _task_manager(include_path: str | os.PathLike | None, names: list[str]) -> "TaskManager":
    """A TaskManager that knows `names`: include_path alone when it holds them all, else lm-eval's
    own tasks too (indexing those takes seconds)."""
    from lm_eval.tasks import TaskManager

    task_manager = TaskManager(include_path=include_path, include_defaults=False)
    if all(name in task_manager.task_index for name in names):
        return task_manager
    return TaskManager(include_path=include_path, include_defaults=True)


def write_split_tasks(
    task_splits: dict[str, str],
    include_path: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    datasets: dict[str, dict[str, Any]] | None = None,
) -> dict[str, str]:
    """Write one task YAML per (task, split) into out_dir, named <task>@<split>, that includes the
    task's own YAML and evaluates `split` (its test_split), with the data set keys that `datasets`
    gives a task (evaluation.datasets) over its own. Returns {task: generated task name}."""
    task_manager = _task_manager(include_path, list(task_splits))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {}
    for task, split in task_splits.items():
        entry = task_manager.task_index.get(task)
        if entry is None:
            where = f"in {include_path} or " if include_path else ""
            raise ExmeError(
                f"evaluation.tasks: no lm-eval task named {task!r} {where}among lm-eval's own tasks"
            )
        if task in task_manager.all_groups or task in task_manager.all_tags:
            raise ExmeError(
                f"evaluation.tasks: {task!r} is an lm-eval group or tag; list its tasks one by one"
            )
        if entry.yaml_path is None or entry.kind.name != "TASK":
            raise ExmeError(
                f"evaluation.tasks: {task!r} is a Python-class lm-eval task, whose split cannot be set"
            )
        names[task] = split_task_name(task, split)
        spec = {
            "include": str(Path(entry.yaml_path).resolve()),
            "task": names[task],
            "test_split": split,
            **dataset_keys(task, (datasets or {}).get(task)),
        }
        with staged_file(out_dir / f"{names[task]}.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(spec, sort_keys=False))
    return names


def dataset_keys(task: str, keys: dict[str, Any] | None) -> dict[str, Any]:
    """A task's data set keys from evaluation.datasets, checked: lm-eval's own key names."""
    unknown = sorted(set(keys or {}) - set(DATASET_KEYS))
    if unknown:
        raise ExmeError(
            f"evaluation.datasets.{task}.{unknown[0]}: not an lm-eval data set key "
            f"({', '.join(DATASET_KEYS)})"
        )
    return dict(keys or {})


def _groups(tasks: list[str], settings: dict[str, LmEvalSettings]) -> list[tuple[LmEvalSettings, list[str]]]:
    """Tasks that share their settings run in one simple_evaluate call (one `lm_eval` command)."""
    groups: dict[str, tuple[LmEvalSettings, list[str]]] = {}
    for task in tasks:
        key = json.dumps(settings[task].as_dict(), sort_keys=True)
        groups.setdefault(key, (settings[task], []))[1].append(task)
    return list(groups.values())


@contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore what was there."""
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_chat_template(tokenizer: PreTrainedTokenizerBase, template: bool | str) -> None:
    if not template:
        return
    templates = tokenizer.chat_template
    if not templates:
        raise ExmeError(
            "evaluation.apply_chat_template: the model's tokenizer has no chat template "
            f"({type(tokenizer).__name__} of {tokenizer.name_or_path})"
        )
    if isinstance(template, str) and not (isinstance(templates, dict) and template in templates):
        raise ExmeError(
            f"evaluation.apply_chat_template: the tokenizer has no chat template named {template!r}"
        )


def _check_splits(
    task_objects: dict[str, Any], task_splits: dict[str, str], settings: dict[str, LmEvalSettings]
) -> None:
    """The evaluated split exists; a task asked for few-shot examples has a split to draw them from;
    a task that runs generated code is confirmed."""
    for task, task_object in task_objects.items():
        config = task_object.config
        if getattr(task_object, "UNSAFE_CODE", False) and not settings[task].confirm_run_unsafe_code:
            raise ExmeError(
                f"lm-eval task {task!r} runs the code the model generates; set "
                "evaluation.confirm_run_unsafe_code (or the task's own) to run it on this machine"
            )
        available = list(task_object.dataset) if task_object.dataset is not None else []
        if available and task_splits[task] not in available:
            raise ExmeError(
                f"lm-eval task {task!r}: its data have no split {task_splits[task]!r} "
                f"(they have {', '.join(available)}); see evaluation.tasks[].splits"
            )
        shots = settings[task].num_fewshot
        if shots is None:
            shots = config.num_fewshot or 0
        if shots <= 0:
            continue
        fewshot_split = config.fewshot_split or config.training_split or config.validation_split
        fewshot_config = config.fewshot_config
        if isinstance(fewshot_config, dict):
            has_samples = fewshot_config.get("samples") is not None
        else:
            has_samples = getattr(fewshot_config, "samples", None) is not None
        if not has_samples and (fewshot_split is None or (available and fewshot_split not in available)):
            raise ExmeError(
                f"evaluation.num_fewshot ({shots}) for task {task!r}: its data have no few-shot split "
                "(its lm-eval config names no fewshot_split, training_split or validation_split that "
                f"its data have; they have {', '.join(available) or 'none'})"
            )


def _build_task(
    task: str, name: str, task_manager: "TaskManager", split: str, environment: dict[str, str]
) -> Any:
    """One generated task as an lm-eval Task object. Building imports the task's Python utils, which
    for the code tasks load HF evaluate's `code_eval` and run it once: it needs HF_ALLOW_CODE_EVAL
    then already, not only while the task is evaluated."""
    try:
        with _environment(environment):
            return task_manager.load([name])["tasks"][name]
    except KeyError as error:  # lm-eval reads the evaluated split while building the task
        raise ExmeError(
            f"lm-eval task {task!r}: its data have no split {split!r} ({error}); "
            "see evaluation.tasks[].splits"
        ) from None


def build_split_tasks(
    split_names: dict[str, str],
    include_path: str | os.PathLike | None,
    task_dir: str | os.PathLike,
    settings: dict[str, LmEvalSettings],
    datasets: dict[str, dict[str, Any]] | None = None,
    failures: dict[str, BaseException] | None = None,
) -> tuple[dict[str, str], "TaskManager", dict[str, Any]]:
    """Each task on its split, built as lm-eval builds it (its data loaded, its utils imported) and
    checked; `settings` are each task's resolved lm-eval settings. Returns the generated task names,
    their TaskManager and the Task objects, keyed by the original task names.

    With `failures`, a task that cannot be built is recorded there (task: exception) and left out,
    so that every failing task is found in one pass; without, the first failure is raised."""
    from lm_eval.tasks import TaskManager

    names = write_split_tasks(split_names, include_path, task_dir, datasets)
    task_manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    built = {}
    for task, name in names.items():
        try:
            task_object = _build_task(task, name, task_manager, split_names[task], settings[task].environment)
            _check_splits({task: task_object}, split_names, settings)
        except Exception as error:
            if failures is None:
                raise
            failures[task] = error
            continue
        built[task] = task_object
    return names, task_manager, built


def resolved_settings(
    tasks: Sequence[str],
    settings: Mapping[str, Any] | None = None,
    task_settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, LmEvalSettings]:
    """Each task's lm-eval settings: its own (task_settings) over those of all tasks, completed."""
    return {
        task: _resolved({**(settings or {}), **((task_settings or {}).get(task) or {})}) for task in tasks
    }


def _resolved(settings: dict[str, Any]) -> LmEvalSettings:
    """LmEvalSettings.resolve, a gen_kwargs string read first by lm-eval's own parser (as `lm_eval
    --gen_kwargs` reads it)."""
    if isinstance(settings.get("gen_kwargs"), str):
        from lm_eval.utils import simple_parse_args_string

        settings = settings | {"gen_kwargs": simple_parse_args_string(settings["gen_kwargs"])}
    return LmEvalSettings.resolve(settings)


def _renamed(results: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """lm-eval's results with each generated task name replaced by the original task name."""
    original = {generated: task for task, generated in names.items()}
    per_task = ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "samples")
    renamed = dict(results)
    for key in per_task:
        if isinstance(results.get(key), dict):
            renamed[key] = {original.get(name, name): value for name, value in results[key].items()}
    return renamed


@dataclass(frozen=True)
class _SplitTasks:
    """The tasks of one evaluation, each on its split, built: their generated names, TaskManager and
    Task objects (keyed by the original names), and, where a split is sliced, the items lm-eval
    evaluates ({generated name: indices}) and the file that lists them for the `lm_eval` CLI."""

    names: dict[str, str]
    task_manager: "TaskManager"
    objects: dict[str, Any]
    samples: dict[str, list[int]] | None = None
    samples_path: Path | None = None


def _build_tasks(
    splits: dict[str, Split],
    include_path: str | os.PathLike | None,
    task_dir: str | os.PathLike,
    settings: dict[str, LmEvalSettings],
    datasets: dict[str, dict[str, Any]] | None,
    limit: int | float | None,
) -> _SplitTasks:
    """Every task built on its split; a split may be a slice (`test[:50%]`): then every task's items
    go to lm-eval as `samples`, the first `limit` of each slice."""
    split_names = {task: split.name for task, split in splits.items()}
    names, task_manager, objects = build_split_tasks(split_names, include_path, task_dir, settings, datasets)
    if not any(split.sliced for split in splits.values()):
        return _SplitTasks(names, task_manager, objects)
    samples = {
        names[task]: sample_indices(split, len(objects[task].eval_docs), limit)
        for task, split in splits.items()
    }
    samples_path = Path(task_dir) / SAMPLES_FILE
    write_text(samples_path, json.dumps(samples))
    return _SplitTasks(names, task_manager, objects, samples, samples_path)


def _lm_eval_model(
    model: "PreTrainedModel | LM", tokenizer: PreTrainedTokenizerBase, batch_size: int, device: torch.device
) -> "LM":
    """The model as an lm-eval model: lm-eval's HFLM over it, or the model itself where it is an HFLM
    of its own (e.g. SE-Merging's), already placed."""
    from lm_eval.models.huggingface import HFLM

    if isinstance(model, HFLM):
        return model
    model.to(device).eval()
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))


def _simple_evaluate(
    lm: "LM", tasks: _SplitTasks, group: list[str], settings: LmEvalSettings, run: RunSettings
) -> dict[str, Any]:
    """One simple_evaluate call: the tasks of `group`, which share `settings`; lm-eval's results
    keyed by the original task names."""
    import lm_eval

    generated = [tasks.names[task] for task in group]
    with _environment(settings.environment):
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=[tasks.objects[task] for task in group],
            task_manager=tasks.task_manager,
            limit=None if tasks.samples else run.limit,  # lm-eval takes samples or limit, not both
            samples=tasks.samples and {name: tasks.samples[name] for name in generated},
            **run.simple_evaluate_kwargs(),
            **settings.simple_evaluate_kwargs(),
        )
    return _renamed(results, tasks.names)


def _merge_results(merged: dict[str, Any], results: dict[str, Any]) -> None:
    """Add one call's results to those of the calls before: per-task entries joined, the rest (e.g.
    lm-eval's run config) kept from the first call."""
    for key, value in results.items():
        if isinstance(value, dict) and key != "config":
            merged.setdefault(key, {}).update(value)
        else:
            merged.setdefault(key, value)


def evaluate_model(
    model: "PreTrainedModel | LM",
    tokenizer: PreTrainedTokenizerBase,
    *,
    task_splits: dict[str, str],
    include_path: str | os.PathLike | None,
    run: RunSettings,
    settings: Mapping[str, Any] | None = None,
    task_settings: Mapping[str, Mapping[str, Any]] | None = None,
    datasets: dict[str, dict[str, Any]] | None = None,
    task_dir: str | os.PathLike | None = None,
    model_location: str | os.PathLike | None = None,
    offline: bool = True,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Run lm-eval on an in-memory model (or an lm-eval HFLM of its own, such as SE-Merging's, used
    as it is). `task_splits` maps each lm-eval task name (in include_path
    or among lm-eval's own tasks) to the data set split to evaluate, e.g. {"arc_easy": "validation"};
    a split may be a slice (`test[:50%]`, see `exme.evaluate.splits`).

    run: the settings of the whole evaluation (batch size, limit, seeds, ...).
    settings: lm-eval settings for all tasks (LM_EVAL_SETTINGS), task_settings: per task, over them.
    datasets: per task, lm-eval data set keys (DATASET_KEYS) that replace the task's own.
    The generated task YAMLs go to task_dir (a temporary folder if None). Returns lm-eval's results
    dict, its per-task entries keyed by the original task names, plus "lm_eval_runs": each
    simple_evaluate call's tasks, settings and (with model_location, the folder the model came
    from) its `lm_eval` command.
    """
    if not task_splits:
        raise ExmeError("evaluation.tasks is empty")
    set_offline(offline)  # before lm_eval and datasets are imported, which read it then
    resolved = resolved_settings(list(task_splits), settings, task_settings)
    for task_resolved in resolved.values():
        _check_chat_template(tokenizer, task_resolved.apply_chat_template)
    device = resolve_device(device)
    splits = {
        task: parse_split(spec, f"evaluation.tasks ({task}) splits") for task, spec in task_splits.items()
    }
    with ExitStack() as stack:
        if task_dir is None:
            task_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="exme-tasks-"))
        tasks = _build_tasks(splits, include_path, task_dir, resolved, datasets, run.limit)
        lm = _lm_eval_model(model, tokenizer, run.batch_size, device)
        merged: dict[str, Any] = {"lm_eval_runs": []}
        for group_settings, group in _groups(list(task_splits), resolved):
            _merge_results(merged, _simple_evaluate(lm, tasks, group, group_settings, run))
            command = None
            if model_location is not None:
                command = lm_eval_command(
                    model_location,
                    tasks=[tasks.names[task] for task in group],
                    include_path=task_dir,
                    settings=group_settings,
                    run=run,
                    device=device,
                    samples_path=tasks.samples_path,
                )
            merged["lm_eval_runs"].append(
                {"tasks": group, "settings": group_settings.as_dict(), "command": command}
            )
    return merged


def scores_from_results(results: dict[str, Any], metric_keys: dict[str, str] | str) -> list[dict[str, Any]]:
    """One score per task: [{task, metric, value, stderr}], with the metric key per task or one for
    all; stderr is lm-eval's own standard error of the metric (None where lm-eval gives none)."""
    task_results = results.get("results", {})
    if isinstance(metric_keys, str):
        metric_keys = dict.fromkeys(task_results, metric_keys)
    scores = []
    for task, metric in metric_keys.items():
        value = task_results.get(task, {}).get(metric)
        if not isinstance(value, int | float):
            raise ExmeError(f"lm-eval results have no numeric {metric!r} for task {task!r}")
        name, _, filter_name = metric.partition(",")
        stderr = task_results[task].get(f"{name}_stderr,{filter_name}" if filter_name else f"{name}_stderr")
        scores.append(
            {
                "task": task,
                "metric": metric,
                "value": float(value),
                "stderr": float(stderr) if isinstance(stderr, int | float) else None,
            }
        )
    return scores


def item_scores(results: dict[str, Any], metric_keys: dict[str, str]) -> dict[str, dict[str, list]]:
    """Per task, the metric of every item from lm-eval's per-sample outputs (log_samples):
    {task: {"item": [doc_id, ...], "value": [...]}}. Kept only for a metric that is the mean of its
    items' values (accuracy, exact match); a corpus-level metric (BLEU, F1) has no per-item value."""
    samples = results.get("samples")
    if not samples:
        raise ExmeError("the results hold no per-sample outputs (evaluate with log_samples)")
    items = {}
    for task, metric in metric_keys.items():
        name, _, filter_name = metric.partition(",")
        rows = [row for row in samples.get(task, []) if row["filter"] == (filter_name or "none")]
        values = [row.get(name) for row in rows]
        if not rows or not all(isinstance(value, numbers.Real) for value in values):
            continue
        score = results["results"][task][metric]
        if abs(sum(values) / len(values) - score) > 1e-9 * max(1.0, abs(score)):
            continue
        items[task] = {"item": [row["doc_id"] for row in rows], "value": [float(v) for v in values]}
    return items


def write_samples(results: dict[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """lm-eval's per-sample outputs (evaluate_model with log_samples), one JSONL file per task."""
    from lm_eval.utils import handle_non_serializable

    samples = results.get("samples")
    if not samples:
        raise ExmeError("the results hold no per-sample outputs (evaluate with log_samples)")
    out_dir = Path(out_dir)
    paths = []
    for task, task_samples in samples.items():
        lines = (
            json.dumps(sample, default=handle_non_serializable, ensure_ascii=False) for sample in task_samples
        )
        paths.append(out_dir / f"{task}.jsonl")
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text(paths[-1], "".join(line + "\n" for line in lines))
    return paths

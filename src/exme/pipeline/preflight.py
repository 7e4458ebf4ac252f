"""The preflight: everything a run's jobs will read, checked on the submitting machine before any
fine-tuning starts, so that nothing that can be found in seconds fails after hours of training.

It builds every configured lm-eval task on its dev and on its test split exactly as the evaluation
jobs build them (offline when they are offline: the data sets, the tasks' Python utils and the HF
evaluate metric modules those load, such as the code tasks' `code_eval`), reads the base model's
config and tokenizer (and its chat template where the run uses one), checks the settings that
depend on the model, and reads the fine-tuning data. Every problem is reported at once, each with
what fetches or fixes it.

`prefetch` runs the same task builds with the Hub reachable, so that whatever they load lands in
the Hugging Face cache: nothing is kept on a hand-written list of artifacts.
"""

import re
import tempfile
from pathlib import Path
from typing import Any

from exme.errors import ExmeError

FETCH_HINT = (
    "run `snakemake prefetch` with this run's --configfile options on a machine that reaches the "
    "Hugging Face Hub, with the HF_HOME the jobs use (cluster.hf_home), then start the run again"
)
# What HF evaluate and datasets say of an artifact that is neither cached nor downloadable.
_MISSING = (
    (re.compile(r"Module '([^']+)' doesn't exist on the Hugging Face Hub"), "HF evaluate's metric module"),
    (re.compile(r"Couldn't reach '([^']+)' on the Hub"), "data set"),
)


def _task_problem(task: str, splits: list[str], error: BaseException, offline: bool) -> str:
    """One line for a task that cannot be built, naming the missing artifact where it is known."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    where = ("split " if len(splits) == 1 else "splits ") + ", ".join(repr(split) for split in splits)
    if isinstance(error, ExmeError):
        return f"lm-eval task {task!r} ({where}): {message}"
    for pattern, kind in _MISSING:
        if match := pattern.search(str(error)):
            missing = "is not in the local cache" if offline else "could not be downloaded, nor found cached"
            what = f"{kind} {match.group(1)!r} {missing}"
            break
    else:
        if "HF_ALLOW_CODE_EVAL" in str(error):
            what = "its code-execution metric refuses to run (HF_ALLOW_CODE_EVAL)"
        else:
            what = f"{type(error).__name__}: {message}"
    hint = f"; {FETCH_HINT}" if offline else ""
    return f"lm-eval task {task!r} ({where}): {what}{hint}"


def check_tasks(
    tasks: list[dict[str, Any]],
    *,
    include_path: str | None,
    settings: dict[str, Any],
    datasets: dict[str, dict[str, Any]],
    offline: bool,
) -> list[str]:
    """Build each task on its dev and test splits as the evaluate rule does; the problems found."""
    from exme.evaluate.harness import build_split_tasks, resolved_settings
    from exme.evaluate.settings import task_lm_eval_settings
    from exme.evaluate.splits import parse_split
    from exme.offline import set_offline

    set_offline(offline)  # before lm_eval, datasets and evaluate are imported: they read it then
    task_settings = {task["name"]: task_lm_eval_settings(task, settings) for task in tasks}
    resolved = resolved_settings(list(task_settings), task_settings=task_settings)
    failed: dict[str, tuple[list[str], BaseException]] = {}  # task: (splits, first error)
    built: set[tuple[str, str]] = set()
    for role in ("dev", "test"):
        splits = {task["name"]: parse_split(task["splits"][role], role).name for task in tasks}
        splits = {task: split for task, split in splits.items() if (task, split) not in built}
        built |= set(splits.items())
        if not splits:  # every task's test split is its dev split's, sliced otherwise
            continue
        failures: dict[str, BaseException] = {}
        with tempfile.TemporaryDirectory(prefix="exme-preflight-") as task_dir:
            try:
                build_split_tasks(splits, include_path, task_dir, resolved, datasets, failures)
            except ExmeError as error:  # a task that is not there at all: nothing else can be built
                return [str(error)]
        for task, error in failures.items():
            failed.setdefault(task, ([], error))[0].append(splits[task])
    return [_task_problem(task, splits, error, offline) for task, (splits, error) in failed.items()]


def check_base_model(base_dir: str | Path, *, chat_template_for: list[str], layers: list[int]) -> list[str]:
    """The base model's config and tokenizer load from its folder; the chat template that the named
    uses need is there; the SE-Merging layers exist in the model."""
    from transformers import AutoConfig, AutoTokenizer

    base_dir = Path(base_dir)
    try:
        config = AutoConfig.from_pretrained(base_dir)
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
    except (OSError, ValueError) as error:
        return [f"model.base {base_dir}: its config or tokenizer cannot be loaded ({error})"]
    problems = []
    if chat_template_for and not tokenizer.chat_template:
        problems.append(
            f"model.base {base_dir}: its tokenizer has no chat template, which {chat_template_for[0]} needs"
        )
    if tokenizer.eos_token is None:
        problems.append(f"model.base {base_dir}: its tokenizer has no eos token, which fine-tuning needs")
    n_layers = config.get_text_config().num_hidden_layers
    problems += [
        f"merge_methods.se_merging.layers: {layer} is not a hidden state of model.base "
        f"({n_layers} layers: 0 = embeddings, {n_layers} = last, negative from the end)"
        for layer in layers
        if not -(n_layers + 1) <= layer <= n_layers
    ]
    return problems


def report(problems: list[str], what: str) -> None:
    """Raise one error listing every problem (nothing to do when there are none)."""
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise ExmeError(f"{what}: {len(problems)} problem(s), before any fine-tuning:\n{listed}")


def run_preflight(
    *,
    tasks: list[dict[str, Any]],
    include_path: str | None,
    settings: dict[str, Any],
    base_dir: str,
    training_files: dict[str, str],
    se_merging_layers: list[int],
) -> dict[str, Any]:
    """Every check above, offline unless the evaluation may download; raises one error listing
    every problem, else returns what was checked."""
    from exme.evaluate.settings import task_lm_eval_settings
    from exme.train.data import read_sft_records

    problems = check_tasks(
        tasks,
        include_path=include_path,
        settings=settings,
        datasets=settings["datasets"],
        offline=not settings["allow_downloads"],
    )
    chat_template_for = [
        f"evaluation.tasks ({task['name']}): apply_chat_template"
        for task in tasks
        if task_lm_eval_settings(task, settings)["apply_chat_template"]
    ]
    for key, path in training_files.items():
        try:
            if read_sft_records(path)[1] == "chat":
                chat_template_for.append(f"{key} ({path}, chat 'messages' records)")
        except ExmeError as error:
            problems.append(f"{key}: {error}")
    problems += check_base_model(base_dir, chat_template_for=chat_template_for, layers=se_merging_layers)
    report(problems, "preflight")
    return {
        "tasks": [task["name"] for task in tasks],
        "base": str(base_dir),
        "training_files": training_files,
        "offline": not settings["allow_downloads"],
    }

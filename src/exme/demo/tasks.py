"""Synthetic multi-task instruction data for the embedded demo.

Every task maps a short prompt to a ONE-character answer drawn from a small alphabet, so that even
an untrained (but format-aware) model is right by chance now and then and no task sits at 0 or 1.
Each generator is registered by name; `write_demo_data` writes the per-task splits, the mixed SFT
file, a generic pretraining corpus and one lm-eval task YAML per task.
"""

import json
import os
import random
from collections.abc import Callable
from pathlib import Path

import yaml

from exme.errors import ExmeError
from exme.files import staged_dir

Example = tuple[str, str]  # (prompt, answer)
Generator = Callable[[random.Random], Example]

TASK_PREFIX = "demo_"
# The one metric per task: exact match after the "first-token" filter defined in `task_yaml`.
METRIC_KEY = "exact_match,first-token"
MAX_GEN_TOKS = 4

_LETTERS = "abcdefgh"


def _arith(rng: random.Random) -> Example:
    """Last digit of a sum of two two-digit numbers (a 10x10 table over the units digits)."""
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return f"{a}+{b} mod 10=", str((a + b) % 10)


def _count(rng: random.Random) -> Example:
    """String transformation: how often a letter occurs in a random string."""
    text = "".join(rng.choice(_LETTERS[:3]) for _ in range(rng.randint(4, 7)))
    letter = rng.choice(_LETTERS[:3])
    return f"count {letter} in {text}=", str(text.count(letter))


def _lookup(rng: random.Random) -> Example:
    """Key-value lookup: the value stored under one of several keys."""
    keys = rng.sample(_LETTERS, 5)
    pairs = {key: str(rng.randint(0, 9)) for key in keys}
    query = rng.choice(keys)
    listing = " ".join(f"{key}:{value}" for key, value in pairs.items())
    return f"{listing} get {query}=", pairs[query]


def _median(rng: random.Random) -> Example:
    """Sorting: the middle element of seven digits (repeats allowed)."""
    digits = [rng.randint(0, 9) for _ in range(7)]
    return f"median {' '.join(map(str, digits))}=", str(sorted(digits)[3])


TASK_GENERATORS: dict[str, Generator] = {
    "arith": _arith,
    "count": _count,
    "lookup": _lookup,
    "median": _median,
}


def lm_eval_task_name(task: str) -> str:
    return TASK_PREFIX + task


def _check_task_names(task_names: list[str]) -> None:
    if not task_names:
        raise ExmeError("task_names is empty; choose from " + ", ".join(TASK_GENERATORS))
    unknown = [name for name in task_names if name not in TASK_GENERATORS]
    if unknown:
        raise ExmeError(f"unknown demo task(s) {unknown}; choose from {', '.join(TASK_GENERATORS)}")


def generate_splits(
    task: str, n_train: int, n_dev: int, n_test: int, seed: int
) -> dict[str, list[dict[str, str]]]:
    """Draw distinct prompts for one task and cut them into disjoint train/dev/test splits."""
    _check_task_names([task])
    generator = TASK_GENERATORS[task]
    # A per-task stream: adding or removing a task leaves the other tasks' data unchanged.
    rng = random.Random(f"{seed}:{task}")
    wanted = n_train + n_dev + n_test
    seen: dict[str, str] = {}
    attempts = 0
    while len(seen) < wanted:
        attempts += 1
        if attempts > 50 * wanted:
            raise ExmeError(f"task {task!r} cannot produce {wanted} distinct items")
        prompt, answer = generator(rng)
        seen.setdefault(prompt, answer)
    items = [{"prompt": prompt, "answer": answer} for prompt, answer in seen.items()]
    return {
        "train": items[:n_train],
        "dev": items[n_train : n_train + n_dev],
        "test": items[n_train + n_dev :],
    }


def pretraining_lines(n_lines: int, seed: int) -> list[str]:
    """Generic text in the tasks' character distribution, WITHOUT their input-answer relation.

    Half the lines are a task prompt followed by the answer of ANOTHER, independent draw of the
    same task (the format and the answer prior, not the task); the rest are random letter words
    and numbers. The base model thus emits one plausible character after "=" and scores at the
    level of guessing the most frequent answer: above 0, far below a tuned model.
    """
    rng = random.Random(f"{seed}:pretrain")
    generators = list(TASK_GENERATORS.values())
    lines = []
    for _ in range(n_lines):
        if rng.random() < 0.5:
            generator = rng.choice(generators)
            prompt, _answer = generator(rng)
            _prompt, unrelated_answer = generator(rng)
            lines.append(prompt + unrelated_answer)
        else:
            words = [
                "".join(rng.choice(_LETTERS) for _ in range(rng.randint(1, 6)))
                if rng.random() < 0.6
                else str(rng.randint(0, 999))
                for _ in range(rng.randint(3, 8))
            ]
            lines.append(" ".join(words))
    return lines


def task_yaml(task: str, data_files: dict[str, Path]) -> dict:
    """lm-eval 0.4.13 task config: greedy, stop at newline, exact match on the first token. Few-shot
    examples, when asked for, come from the train split."""
    return {
        "task": lm_eval_task_name(task),
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {split: str(path) for split, path in data_files.items()}},
        "training_split": "train",
        "validation_split": "dev",
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["\n"], "do_sample": False, "max_gen_toks": MAX_GEN_TOKS},
        "filter_list": [
            {
                "name": "first-token",
                "filter": [
                    {"function": "regex", "regex_pattern": r"(\S+)"},
                    {"function": "take_first"},
                ],
            }
        ],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def write_demo_data(
    out_dir: str | os.PathLike,
    task_names: list[str],
    n_train: int,
    n_dev: int,
    n_test: int,
    seed: int,
    pretrain_lines: int,
) -> dict[str, str]:
    """Write the demo data set into out_dir (atomically: temp folder, then rename).

    Layout: `<task>/{train,dev,test}.jsonl`, `sft_train.jsonl` (all tasks' train items shuffled,
    fields prompt/completion), `experts/<task>.jsonl` (one task's train items, the same fields: the
    expert track's data), `pretrain.txt`, and `lm_eval_tasks/demo_<task>.yaml`, whose
    data_files are absolute paths to the FINAL location. Returns {task: lm-eval metric key}.
    """
    _check_task_names(task_names)
    for name, value in {"n_train": n_train, "n_dev": n_dev, "n_test": n_test}.items():
        if value < 1:
            raise ExmeError(f"{name} must be at least 1, got {value}")
    out_dir = Path(out_dir).resolve()
    with staged_dir(out_dir) as staging:
        (staging / "lm_eval_tasks").mkdir()
        (staging / "experts").mkdir()
        sft_rows = []
        for task in task_names:
            splits = generate_splits(task, n_train, n_dev, n_test, seed)
            (staging / task).mkdir()
            for split, rows in splits.items():
                _write_jsonl(staging / task / f"{split}.jsonl", rows)
            task_rows = [{"prompt": row["prompt"], "completion": row["answer"]} for row in splits["train"]]
            _write_jsonl(staging / "experts" / f"{task}.jsonl", task_rows)
            sft_rows += task_rows
            config = task_yaml(task, {split: out_dir / task / f"{split}.jsonl" for split in splits})
            yaml_path = staging / "lm_eval_tasks" / f"{lm_eval_task_name(task)}.yaml"
            yaml_path.write_text(yaml.safe_dump(config, sort_keys=False))
        random.Random(f"{seed}:sft").shuffle(sft_rows)
        _write_jsonl(staging / "sft_train.jsonl", sft_rows)
        (staging / "pretrain.txt").write_text("\n".join(pretraining_lines(pretrain_lines, seed)) + "\n")
    return {lm_eval_task_name(task): METRIC_KEY for task in task_names}

import json
import random

import pytest
import yaml

from exme.demo.tasks import (
    METRIC_KEY,
    TASK_GENERATORS,
    generate_splits,
    pretraining_lines,
    write_demo_data,
)
from exme.errors import ExmeError


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("task", list(TASK_GENERATORS))
def test_splits_are_deterministic_disjoint_and_sized(task):
    splits = generate_splits(task, n_train=300, n_dev=200, n_test=200, seed=3)
    assert splits == generate_splits(task, n_train=300, n_dev=200, n_test=200, seed=3)
    assert splits != generate_splits(task, n_train=300, n_dev=200, n_test=200, seed=4)
    prompts = {name: {row["prompt"] for row in rows} for name, rows in splits.items()}
    assert [len(prompts[name]) for name in ("train", "dev", "test")] == [300, 200, 200]
    assert not prompts["train"] & prompts["dev"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["dev"] & prompts["test"]
    assert all(len(row["answer"]) == 1 for rows in splits.values() for row in rows)


def _answer(prompt: str) -> str:
    """Recompute each task's answer independently of the generators."""
    if prompt.endswith(" mod 10="):
        left, right = prompt.removesuffix(" mod 10=").split("+")
        return str((int(left) + int(right)) % 10)
    if prompt.startswith("count "):
        _, letter, _, text = prompt.removesuffix("=").split(" ")
        return str(text.count(letter))
    if prompt.startswith("median "):
        digits = sorted(int(d) for d in prompt.removeprefix("median ").removesuffix("=").split())
        return str(digits[len(digits) // 2])
    listing, query = prompt.removesuffix("=").split(" get ")
    return dict(pair.split(":") for pair in listing.split())[query]


@pytest.mark.parametrize("task", list(TASK_GENERATORS))
def test_answers_are_correct(task):
    rng = random.Random(0)
    for _ in range(200):
        prompt, answer = TASK_GENERATORS[task](rng)
        assert answer == _answer(prompt)


def test_arith_example():
    assert _answer("47+385 mod 10=") == "2"


def test_pretraining_text_does_not_teach_the_tasks():
    lines = pretraining_lines(2000, seed=0)
    assert lines == pretraining_lines(2000, seed=0)
    task_lines = [line for line in lines if "=" in line]
    correct = sum(_answer(line[:-1]) == line[-1] for line in task_lines)
    assert 0.4 * len(lines) < len(task_lines) < 0.6 * len(lines)
    # Answers come from independent draws: right only as often as guessing from the prior.
    assert correct / len(task_lines) < 0.3


def test_write_demo_data_layout(demo_data):
    sft = _read_jsonl(demo_data / "sft_train.jsonl")
    assert len(sft) == 40 * len(TASK_GENERATORS)
    assert set(sft[0]) == {"prompt", "completion"}
    for task in TASK_GENERATORS:
        config = yaml.safe_load((demo_data / "lm_eval_tasks" / f"demo_{task}.yaml").read_text())
        assert config["task"] == f"demo_{task}"
        assert config["training_split"] == "train"  # few-shot examples come from train
        for split, size in (("train", 40), ("dev", 20), ("test", 20)):
            path = config["dataset_kwargs"]["data_files"][split]
            assert path.startswith("/")
            assert len(_read_jsonl(demo_data / task / f"{split}.jsonl")) == size
            assert path == str(demo_data / task / f"{split}.jsonl")
    assert (demo_data / "pretrain.txt").read_text().count("\n") == 300
    assert METRIC_KEY == "exact_match,first-token"


def test_bad_task_name(tmp_path):
    with pytest.raises(ExmeError, match="unknown demo task"):
        write_demo_data(tmp_path / "d", ["nope"], 1, 1, 1, seed=0, pretrain_lines=1)

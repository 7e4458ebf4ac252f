import json

import pytest

from exme.demo.tasks import METRIC_KEY, TASK_GENERATORS, lm_eval_task_name
from exme.errors import ExmeError
from exme.evaluation import evaluate_model, load_model_dir, scores_from_results
from exme.files import write_json

TASKS = [lm_eval_task_name(task) for task in TASK_GENERATORS]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_base):
    return load_model_dir(tiny_base, device="cpu")


@pytest.mark.parametrize("split", ["dev", "test"])
def test_evaluate_model_on_split(model_and_tokenizer, demo_data, split, tmp_path):
    model, tokenizer = model_and_tokenizer
    results = evaluate_model(
        model,
        tokenizer,
        tasks=TASKS,
        split=split,
        include_path=demo_data / "lm_eval_tasks",
        batch_size=8,
        seed=0,
        limit=5,
        device="cpu",
    )
    for task in TASKS:
        assert results["configs"][task]["test_split"] == split
        assert results["n-samples"][task]["effective"] == 5
    scores = scores_from_results(results, METRIC_KEY)
    assert [score["task"] for score in scores] == TASKS
    assert all(0.0 <= score["value"] <= 1.0 for score in scores)
    write_json(tmp_path / "r.json", {"scores": scores})
    assert json.loads((tmp_path / "r.json").read_text())["scores"] == scores


def test_dev_and_test_read_different_files(demo_data):
    # The split override must change the documents, not only the label.
    from exme.evaluation import _task_config

    dev = _task_config(demo_data / "lm_eval_tasks", TASKS[0], "dev")
    assert dev["test_split"] == "dev"
    assert dev["dataset_kwargs"]["data_files"]["dev"].endswith("dev.jsonl")


def test_bad_split_and_missing_metric(model_and_tokenizer, demo_data):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ExmeError, match="split"):
        evaluate_model(
            model,
            tokenizer,
            tasks=TASKS,
            split="train",
            include_path=demo_data / "lm_eval_tasks",
            batch_size=8,
            seed=0,
        )
    with pytest.raises(ExmeError, match="acc,none"):
        scores_from_results({"results": {"demo_arith": {METRIC_KEY: 0.5}}}, "acc,none")

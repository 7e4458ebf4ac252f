import json

import pytest

from exme.demo.tasks import METRIC_KEY, TASK_GENERATORS, lm_eval_task_name
from exme.errors import ExmeError
from exme.evaluate.harness import evaluate_model, load_model_dir, scores_from_results
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
        task_splits=dict.fromkeys(TASKS, split),
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
    from exme.evaluate.harness import _registered_task_configs, _with_evaluated_split

    _, configs = _registered_task_configs([TASKS[0]], demo_data / "lm_eval_tasks")
    dev = _with_evaluated_split(configs[TASKS[0]], "dev")
    assert dev["test_split"] == "dev"
    assert dev["dataset_kwargs"]["data_files"]["dev"].endswith("dev.jsonl")
    with pytest.raises(ExmeError, match=r"demo_arith.*no split 'validation'.*splits"):
        _with_evaluated_split(configs[TASKS[0]], "validation")


def test_lm_evals_own_tasks_are_found_with_their_full_config_and_chosen_split(demo_data):
    """A real config names lm-eval's tasks; only the config is resolved here (no data set download)."""
    from exme.evaluate.harness import _registered_task_configs, _with_evaluated_split

    _, configs = _registered_task_configs(["arc_easy", TASKS[0]], demo_data / "lm_eval_tasks")
    arc = _with_evaluated_split(configs["arc_easy"], "validation")
    assert arc["dataset_path"] == "allenai/ai2_arc" and arc["test_split"] == "validation"
    assert arc["doc_to_choice"] and arc["output_type"] == "multiple_choice"
    assert configs[TASKS[0]]["dataset_kwargs"]["data_files"]  # include_path still searched first


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_such_task", "no lm-eval task named 'no_such_task' in .*lm_eval_tasks or among lm-eval's own"),
        ("ai2_arc", "'ai2_arc' is an lm-eval group or tag"),
    ],
)
def test_a_task_that_cannot_be_evaluated_is_named(demo_data, name, message):
    from exme.evaluate.harness import _registered_task_configs

    with pytest.raises(ExmeError, match=message):
        _registered_task_configs([name], demo_data / "lm_eval_tasks")


def test_missing_metric_is_named():
    with pytest.raises(ExmeError, match="acc,none"):
        scores_from_results({"results": {"demo_arith": {METRIC_KEY: 0.5}}}, "acc,none")


def test_prefetch_lists_the_hub_data_sets_of_lm_evals_own_tasks_and_none_for_local_files(demo_data):
    from exme.evaluate.harness import hub_datasets

    assert hub_datasets(TASKS, demo_data / "lm_eval_tasks") == []
    fetched = hub_datasets(["arc_easy", "arc_challenge", TASKS[0]], demo_data / "lm_eval_tasks")
    assert fetched == [
        {"path": "allenai/ai2_arc", "name": "ARC-Easy"},
        {"path": "allenai/ai2_arc", "name": "ARC-Challenge"},
    ]

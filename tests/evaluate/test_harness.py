import json
import math
import os
import shlex
import subprocess
import sys

import pytest
import torch
import yaml

from exme.demo.tasks import METRIC_KEY, TASK_GENERATORS, lm_eval_task_name
from exme.errors import ExmeError
from exme.evaluate.harness import (
    evaluate_model,
    item_scores,
    scores_from_results,
    write_samples,
    write_split_tasks,
)
from exme.evaluate.models import load_model_dir
from exme.evaluate.settings import RunSettings
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
        run=RunSettings(batch_size=8, limit=5),
        device="cpu",
        task_dir=tmp_path / "tasks",
    )
    for task in TASKS:
        assert results["configs"][task]["test_split"] == split
        assert results["configs"][task]["task"] == f"{task}@{split}"
        assert results["n-samples"][task]["effective"] == 5
    # lm-eval's own default seeds, as the lm_eval CLI uses them.
    assert [results["config"][f"{k}_seed"] for k in ("random", "numpy", "torch", "fewshot")] == [
        0,
        1234,
        1234,
        1234,
    ]
    assert len(results["lm_eval_runs"]) == 1 and results["lm_eval_runs"][0]["tasks"] == TASKS
    scores = scores_from_results(results, METRIC_KEY)
    assert [score["task"] for score in scores] == TASKS
    for score in scores:
        assert 0.0 <= score["value"] <= 1.0
        # lm-eval's closed-form standard error of a mean: sqrt(p(1-p)/(n-1)).
        p = score["value"]
        assert score["stderr"] == pytest.approx(math.sqrt(p * (1 - p) / 4))
    write_json(tmp_path / "r.json", {"scores": scores})
    assert json.loads((tmp_path / "r.json").read_text())["scores"] == scores


def test_a_split_is_chosen_by_a_generated_yaml_that_includes_the_task(demo_data, tmp_path):
    """lm-eval's public `include:`: the generated task is the original with another test_split."""
    names = write_split_tasks({TASKS[0]: "dev"}, demo_data / "lm_eval_tasks", tmp_path)
    assert names == {TASKS[0]: f"{TASKS[0]}@dev"}
    spec = yaml.safe_load((tmp_path / f"{TASKS[0]}@dev.yaml").read_text())
    assert spec == {
        "include": str((demo_data / "lm_eval_tasks" / f"{TASKS[0]}.yaml").resolve()),
        "task": f"{TASKS[0]}@dev",
        "test_split": "dev",
    }
    from lm_eval.tasks import TaskManager

    task = TaskManager(include_path=str(tmp_path), include_defaults=False).load([f"{TASKS[0]}@dev"])
    documents = list(task["tasks"][f"{TASKS[0]}@dev"].test_docs())
    dev = [json.loads(line) for line in (demo_data / "arith" / "dev.jsonl").read_text().splitlines()]
    assert documents == dev  # the documents change, not only the label


def test_lm_evals_own_tasks_are_included_by_their_yaml(demo_data, tmp_path):
    """A real config names lm-eval's tasks; only the YAML is resolved here (no data set download)."""
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml  # the test only inspects what lm-eval resolves

    names = write_split_tasks(
        {"arc_easy": "validation", TASKS[0]: "dev"}, demo_data / "lm_eval_tasks", tmp_path
    )
    assert names["arc_easy"] == "arc_easy@validation"
    spec = yaml.safe_load((tmp_path / "arc_easy@validation.yaml").read_text())
    assert spec["include"].endswith("lm_eval/tasks/arc/arc_easy.yaml")
    index = TaskManager(include_path=str(tmp_path), include_defaults=False).task_index
    assert {"arc_easy@validation", f"{TASKS[0]}@dev"} <= set(index)
    arc = load_yaml(tmp_path / "arc_easy@validation.yaml")
    assert arc["dataset_path"] == "allenai/ai2_arc" and arc["test_split"] == "validation"
    assert arc["output_type"] == "multiple_choice" and arc["task"] == "arc_easy@validation"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_such_task", "no lm-eval task named 'no_such_task' in .*lm_eval_tasks or among lm-eval's own"),
        ("ai2_arc", "'ai2_arc' is an lm-eval group or tag"),
    ],
)
def test_a_task_that_cannot_be_evaluated_is_named(demo_data, tmp_path, name, message):
    with pytest.raises(ExmeError, match=message):
        write_split_tasks({name: "test"}, demo_data / "lm_eval_tasks", tmp_path)


def test_a_split_the_data_lack_is_named(model_and_tokenizer, demo_data):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ExmeError, match=r"demo_arith.*no split 'validation'.*splits"):
        evaluate_model(
            model,
            tokenizer,
            task_splits={TASKS[0]: "validation"},
            include_path=demo_data / "lm_eval_tasks",
            run=RunSettings(batch_size=8, limit=2),
            device="cpu",
        )


def test_settings_reach_lm_eval_and_samples_are_written(model_and_tokenizer, demo_data, tmp_path):
    """num_fewshot per task over settings for all tasks; tasks with other settings run apart; seeds
    and gen_kwargs are lm-eval's; log_samples gives lm-eval's per-sample records."""
    model, tokenizer = model_and_tokenizer
    results = evaluate_model(
        model,
        tokenizer,
        task_splits={TASKS[0]: "dev", TASKS[1]: "dev"},
        include_path=demo_data / "lm_eval_tasks",
        run=RunSettings(batch_size=8, limit=3, seeds=7, log_samples=True),
        settings={"num_fewshot": 0, "gen_kwargs": {"max_gen_toks": 2}},
        task_settings={TASKS[1]: {"num_fewshot": 2}},
        device="cpu",
        task_dir=tmp_path / "tasks",
        model_location="some/folder",
    )
    assert results["n-shot"] == {TASKS[0]: 0, TASKS[1]: 2}
    runs = results["lm_eval_runs"]
    assert [run["tasks"] for run in runs] == [[TASKS[0]], [TASKS[1]]]
    assert "--num_fewshot 2" in runs[1]["command"] and "--seed 7,7,7,7" in runs[1]["command"]
    assert "--gen_kwargs max_gen_toks=2" in runs[0]["command"]
    assert results["configs"][TASKS[0]]["generation_kwargs"]["max_gen_toks"] == 2
    assert results["config"]["random_seed"] == 7
    paths = write_samples(results, tmp_path / "samples")
    assert [path.name for path in paths] == [f"{TASKS[0]}.jsonl", f"{TASKS[1]}.jsonl"]
    records = [json.loads(line) for line in paths[1].read_text().splitlines()]
    assert len(records) == 3 and {"doc", "target", "resps", "filtered_resps"} <= set(records[0])
    two_shot_prompt, generation = records[0]["arguments"][0]
    assert generation["max_gen_toks"] == 2
    assert two_shot_prompt.count("=") == 3  # two examples from train, then the question
    # Each item's metric, whose mean is lm-eval's score.
    items = item_scores(results, dict.fromkeys(TASKS[:2], METRIC_KEY))
    for task in TASKS[:2]:
        assert items[task]["item"] == [0, 1, 2]
        values = items[task]["value"]
        assert sum(values) / 3 == pytest.approx(results["results"][task][METRIC_KEY])


def test_a_slice_of_a_split_evaluates_exactly_its_items(model_and_tokenizer, demo_data, tmp_path):
    """Two disjoint slices of one split (dev and test of a task with a single split) evaluate the
    split's items start to stop, in order, then the first `limit` of them."""
    model, tokenizer = model_and_tokenizer
    config = yaml.safe_load((demo_data / "lm_eval_tasks" / f"{TASKS[0]}.yaml").read_text())
    data_file = demo_data / "lm_eval_tasks" / config["dataset_kwargs"]["data_files"]["test"]
    items = [json.loads(line) for line in data_file.read_text().splitlines()]
    for spec, expected in (("test[:4]", items[:4]), ("test[80%:]", items[16:][:3])):
        results = evaluate_model(
            model,
            tokenizer,
            task_splits={TASKS[0]: spec},
            include_path=demo_data / "lm_eval_tasks",
            run=RunSettings(batch_size=8, limit=3 if "%" in spec else None, log_samples=True),
            device="cpu",
            task_dir=tmp_path / spec,
        )
        assert [record["doc"] for record in results["samples"][TASKS[0]]] == expected
        assert results["configs"][TASKS[0]]["test_split"] == "test"
        assert json.loads((tmp_path / spec / "samples.json").read_text()) == {
            f"{TASKS[0]}@test": list(range(4)) if spec == "test[:4]" else [16, 17, 18]
        }


def test_a_task_that_runs_generated_code_needs_its_confirmation(model_and_tokenizer, demo_data, tmp_path):
    """As lm_eval --confirm_run_unsafe_code, for that task only, with HF_ALLOW_CODE_EVAL=1 while it runs."""
    config = yaml.safe_load((demo_data / "lm_eval_tasks" / f"{TASKS[0]}.yaml").read_text())
    (tmp_path / "unsafe.yaml").write_text(yaml.safe_dump({**config, "task": "unsafe", "unsafe_code": True}))
    (tmp_path / "safe.yaml").write_text(yaml.safe_dump({**config, "task": "safe"}))
    model, tokenizer = model_and_tokenizer
    settings = dict(
        task_splits={"unsafe": "dev", "safe": "dev"},
        include_path=tmp_path,
        run=RunSettings(batch_size=8, limit=2),
    )
    with pytest.raises(
        ExmeError, match="task 'unsafe' runs the code the model generates; set evaluation.conf"
    ):
        evaluate_model(model, tokenizer, **settings, device="cpu")
    results = evaluate_model(
        model,
        tokenizer,
        **settings,
        task_settings={"unsafe": {"confirm_run_unsafe_code": True}},
        device="cpu",
        model_location="m",
    )
    unsafe_run, safe_run = results["lm_eval_runs"]
    assert unsafe_run["tasks"] == ["unsafe"] and safe_run["tasks"] == ["safe"]
    assert unsafe_run["command"].startswith("HF_ALLOW_CODE_EVAL=1 lm_eval ")
    assert unsafe_run["command"].endswith("--confirm_run_unsafe_code")
    assert "unsafe_code" not in safe_run["command"] and safe_run["command"].startswith("lm_eval ")
    assert "HF_ALLOW_CODE_EVAL" not in os.environ


def test_few_shot_without_a_few_shot_split_is_an_error(model_and_tokenizer, demo_data, tmp_path):
    config = yaml.safe_load((demo_data / "lm_eval_tasks" / f"{TASKS[0]}.yaml").read_text())
    for key in ("training_split", "validation_split"):
        config.pop(key)
    config["dataset_kwargs"]["data_files"] = {"test": config["dataset_kwargs"]["data_files"]["test"]}
    config["task"] = "only_test"
    (tmp_path / "only_test.yaml").write_text(yaml.safe_dump(config))
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ExmeError, match=r"num_fewshot \(3\) for task 'only_test'.*no few-shot split"):
        evaluate_model(
            model,
            tokenizer,
            task_splits={"only_test": "test"},
            include_path=tmp_path,
            run=RunSettings(batch_size=8),
            settings={"num_fewshot": 3},
            device="cpu",
        )


def test_a_chat_template_the_tokenizer_lacks_is_an_error(model_and_tokenizer, demo_data):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ExmeError, match="apply_chat_template: the model's tokenizer has no chat template"):
        evaluate_model(
            model,
            tokenizer,
            task_splits={TASKS[0]: "dev"},
            include_path=demo_data / "lm_eval_tasks",
            run=RunSettings(batch_size=8),
            settings={"apply_chat_template": True},
            device="cpu",
        )


def test_the_lm_eval_cli_gives_the_pipelines_score(tiny_base, demo_data, tmp_path):
    """The command recorded with an evaluation reruns it with the `lm_eval` CLI: same score."""
    model, tokenizer = load_model_dir(tiny_base, device="cpu")
    # A slice of the split: the command carries lm-eval's --samples file.
    settings = dict(
        task_splits={TASKS[3]: "dev[2:12]"},
        include_path=demo_data / "lm_eval_tasks",
        run=RunSettings(batch_size=8),
    )
    results = evaluate_model(
        model,
        tokenizer,
        **settings,
        device="cpu",
        task_dir=tmp_path / "t",
        model_location=tiny_base,
    )
    command = shlex.split(results["lm_eval_runs"][0]["command"])
    assert command[0] == "lm_eval" and "--samples" in command and "--limit" not in command
    assert results["n-samples"][TASKS[3]]["effective"] == 10
    out = tmp_path / "cli"
    cli = [sys.executable, "-m", "lm_eval", *command[1:], "--output_path", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    run = subprocess.run(cli, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    (cli_results,) = out.rglob("results_*.json")
    cli_task = json.loads(cli_results.read_text())["results"][f"{TASKS[3]}@dev"]
    pipeline_task = results["results"][TASKS[3]]
    assert cli_task[METRIC_KEY] == pipeline_task[METRIC_KEY]
    assert cli_task["exact_match_stderr,first-token"] == pipeline_task["exact_match_stderr,first-token"]


def test_auto_dtype_is_the_folders_own(tiny_base, tmp_path):
    model, tokenizer = load_model_dir(tiny_base, device="cpu")
    assert model.dtype == torch.float32
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    tokenizer.save_pretrained(tmp_path / "bf16")
    assert load_model_dir(tmp_path / "bf16", device="cpu")[0].dtype == torch.bfloat16
    assert load_model_dir(tmp_path / "bf16", device="cpu", dtype="float32")[0].dtype == torch.float32
    with pytest.raises(ExmeError, match="evaluation.dtype: 'fp8'"):
        load_model_dir(tmp_path / "bf16", device="cpu", dtype="fp8")


def test_missing_metric_is_named():
    with pytest.raises(ExmeError, match="acc,none"):
        scores_from_results({"results": {"demo_arith": {METRIC_KEY: 0.5}}}, "acc,none")


def test_stderr_is_none_where_lm_eval_gives_none():
    results = {"results": {"t": {"acc,none": 0.5, "acc_stderr,none": "N/A"}}}
    assert scores_from_results(results, "acc,none") == [
        {"task": "t", "metric": "acc,none", "value": 0.5, "stderr": None}
    ]


def test_item_scores_keep_the_filtered_metric_of_mean_metrics_only():
    samples = [
        {"doc_id": 0, "filter": "none", "acc": 1.0, "bleu": ("a", "b")},
        {"doc_id": 1, "filter": "none", "acc": 0.0, "bleu": ("c", "d")},
        {"doc_id": 0, "filter": "strict", "acc": 0.0},
        {"doc_id": 1, "filter": "strict", "acc": 0.0},
    ]
    results = {
        "results": {"t": {"acc,none": 0.5, "acc,strict": 0.0, "bleu,none": 12.0}},
        "samples": {"t": samples},
    }
    assert item_scores(results, {"t": "acc,none"}) == {"t": {"item": [0, 1], "value": [1.0, 0.0]}}
    assert item_scores(results, {"t": "acc,strict"}) == {"t": {"item": [0, 1], "value": [0.0, 0.0]}}
    assert item_scores(results, {"t": "bleu,none"}) == {}  # a corpus-level metric has no per-item value
    with pytest.raises(ExmeError, match="log_samples"):
        item_scores({"results": {}}, {"t": "acc,none"})

"""The preflight: each thing a run's jobs read, checked before fine-tuning, each problem named."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exme.demo.tasks import TASK_GENERATORS, lm_eval_task_name
from exme.errors import ExmeError
from exme.evaluate.settings import LM_EVAL_SETTINGS
from exme.pipeline.preflight import FETCH_HINT, check_base_model, check_tasks, report, run_preflight
from tests.code_eval_cache import place_code_eval
from tests.workflow.paper_cpu import humaneval_file

DEMO_TASKS = [lm_eval_task_name(task) for task in TASK_GENERATORS]
SETTINGS = {
    **dict.fromkeys(LM_EVAL_SETTINGS),
    "apply_chat_template": False,
    "confirm_run_unsafe_code": False,
    "datasets": {},
    "allow_downloads": False,
}


def _tasks(names, **splits):
    return [
        {"name": name, "metric": "acc,none", "splits": splits or {"dev": "dev", "test": "test"}}
        for name in names
    ]


def test_the_demo_tasks_pass_and_a_missing_split_is_named(demo_data):
    include = str(demo_data / "lm_eval_tasks")
    assert (
        check_tasks(_tasks(DEMO_TASKS), include_path=include, settings=SETTINGS, datasets={}, offline=True)
        == []
    )
    problems = check_tasks(
        _tasks(DEMO_TASKS[:2], dev="dev", test="nosuch"),
        include_path=include,
        settings=SETTINGS,
        datasets={},
        offline=True,
    )
    assert len(problems) == 2 and all("no split 'nosuch'" in problem for problem in problems)


def test_an_unknown_task_is_named(demo_data):
    problems = check_tasks(
        _tasks(["no_such_task"]),
        include_path=str(demo_data / "lm_eval_tasks"),
        settings=SETTINGS,
        datasets={},
        offline=True,
    )
    assert problems == [
        f"evaluation.tasks: no lm-eval task named 'no_such_task' in {demo_data / 'lm_eval_tasks'} or among "
        "lm-eval's own tasks"
    ]


def test_the_base_model_checks_name_the_chat_template_and_the_se_merging_layers(tiny_base):
    # The demo's tokenizer has no chat template; a model of L layers has hidden states -(L+1) to L.
    n = json.loads((tiny_base / "config.json").read_text())["num_hidden_layers"]
    assert check_base_model(tiny_base, chat_template_for=[], layers=[-(n + 1), 0, n]) == []
    problems = check_base_model(tiny_base, chat_template_for=["data.sft_train (chat)"], layers=[1, n + 1])
    assert problems == [
        f"model.base {tiny_base}: its tokenizer has no chat template, which data.sft_train (chat) needs",
        f"merge_methods.se_merging.layers: {n + 1} is not a hidden state of model.base "
        f"({n} layers: 0 = embeddings, {n} = last, negative from the end)",
    ]
    assert "cannot be loaded" in check_base_model(tiny_base.parent, chat_template_for=[], layers=[])[0]


def test_every_problem_is_reported_at_once(demo_data, tiny_base, tmp_path):
    bad_data = tmp_path / "sft.jsonl"
    bad_data.write_text('{"prompt": "no completion"}\n')
    chat_data = tmp_path / "chat.jsonl"
    chat_data.write_text(
        json.dumps({"messages": [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"}]})
        + "\n"
    )
    with pytest.raises(ExmeError) as error:
        run_preflight(
            tasks=_tasks(DEMO_TASKS[:1], dev="dev", test="nosuch"),
            include_path=str(demo_data / "lm_eval_tasks"),
            settings=SETTINGS,
            base_dir=str(tiny_base),
            training_files={"data.sft_train": str(bad_data), "experts[0].train": str(chat_data)},
            se_merging_layers=[5],
        )
    message = str(error.value)
    assert message.startswith("preflight: 4 problem(s), before any fine-tuning:")
    assert "no split 'nosuch'" in message
    assert f"data.sft_train: {bad_data}:1: needs string fields 'prompt' and 'completion'" in message
    assert f"which experts[0].train ({chat_data}, chat 'messages' records) needs" in message
    assert "se_merging.layers: 5" in message
    report([], "preflight")  # nothing to report: no error


HUMANEVAL = {
    "name": "humaneval",
    "metric": "pass@1,create_test",
    "splits": {"dev": "test[:50%]", "test": "test[50%:]"},
    "confirm_run_unsafe_code": True,
}


def _check_humaneval_offline(hf_home: Path) -> list[str]:
    """check_tasks on lm-eval's own humaneval, its data pointed at the local file, in a process of
    its own (HF evaluate reads HF_HOME when imported; lm-eval imports a task's utils once)."""
    script = (
        "import json, sys\n"
        "from exme.pipeline.preflight import check_tasks\n"
        "args = json.loads(sys.argv[1])\n"
        "print(json.dumps(check_tasks([args['task']], include_path=None, settings=args['settings'],\n"
        "                             datasets=args['datasets'], offline=True)))\n"
    )
    arguments = {
        "task": HUMANEVAL,
        "settings": SETTINGS,
        "datasets": {
            "humaneval": {
                "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"test": humaneval_file()}},
            }
        },
    }
    environment = {key: value for key, value in os.environ.items() if key != "HF_ALLOW_CODE_EVAL"}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(arguments)],
        capture_output=True,
        text=True,
        env={**environment, "HF_HOME": str(hf_home)},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_humaneval_without_its_metric_module_in_the_cache_is_refused_naming_code_eval(tmp_path):
    problems = _check_humaneval_offline(tmp_path / "hf_home")
    assert problems == [
        "lm-eval task 'humaneval' (split 'test'): HF evaluate's metric module 'code_eval' is not in the "
        f"local cache; {FETCH_HINT}"
    ]


def test_humaneval_builds_offline_from_what_an_online_prefetch_leaves(tmp_path):
    # The module where evaluate.load("code_eval") leaves the Hub's; lm-eval's humaneval utils run it
    # once on import, which needs HF_ALLOW_CODE_EVAL while the task is built (not set by the caller).
    place_code_eval(tmp_path / "hf_home")
    assert _check_humaneval_offline(tmp_path / "hf_home") == []

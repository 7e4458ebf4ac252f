"""lm-eval's settings: completed as the `lm_eval` CLI completes them, each with its CLI flag."""

import shlex

import pytest

from exme.errors import ExmeError
from exme.evaluate.settings import LmEvalSettings, RunSettings, lm_eval_command, task_lm_eval_settings


def test_a_tasks_own_settings_are_taken_over_the_evaluations():
    evaluation = {"num_fewshot": 5, "apply_chat_template": False, "fewshot_as_multiturn": None}
    evaluation |= {"system_instruction": None, "gen_kwargs": None, "confirm_run_unsafe_code": False}
    task = {"name": "t", "metric": "acc,none", "num_fewshot": 0, "system_instruction": None}
    assert task_lm_eval_settings(task, evaluation) == {**evaluation, "num_fewshot": 0}


def test_settings_are_completed_as_the_cli_completes_them():
    assert LmEvalSettings.resolve({}) == LmEvalSettings()
    chat = LmEvalSettings.resolve({"apply_chat_template": True, "gen_kwargs": {}})
    assert chat.fewshot_as_multiturn is True and chat.gen_kwargs is None
    with pytest.raises(ExmeError, match="fewshot_as_multiturn: true needs evaluation.apply_chat_template"):
        LmEvalSettings.resolve({"fewshot_as_multiturn": True})
    with pytest.raises(ExmeError, match=r"unknown lm-eval setting\(s\) \['shots'\]"):
        LmEvalSettings.resolve({"shots": 1})
    with pytest.raises(ExmeError, match="evaluation.seed: one integer or four"):
        RunSettings(batch_size=1, seeds=[1, 2])


def test_the_command_has_the_flag_of_each_setting_that_is_not_lm_evals_default():
    settings = LmEvalSettings.resolve(
        {"num_fewshot": 2, "apply_chat_template": "tool_use", "fewshot_as_multiturn": False}
        | {"gen_kwargs": {"max_gen_toks": 8}, "confirm_run_unsafe_code": True}
    )
    run = RunSettings(batch_size=4, limit=10, seeds=3, dtype="bfloat16")
    command = lm_eval_command(
        "/m", tasks=["a@dev"], include_path="/t", settings=settings, run=run, device="cpu"
    )
    assert shlex.split(command) == [
        "HF_ALLOW_CODE_EVAL=1",
        *("lm_eval", "--model", "hf", "--model_args", "pretrained=/m,dtype=bfloat16"),
        *(
            "--tasks",
            "a@dev",
            "--include_path",
            "/t",
            "--batch_size",
            "4",
            "--device",
            "cpu",
            "--limit",
            "10",
        ),
        *("--num_fewshot", "2", "--apply_chat_template", "tool_use", "--fewshot_as_multiturn", "false"),
        *("--gen_kwargs", "max_gen_toks=8", "--confirm_run_unsafe_code", "--seed", "3,3,3,3"),
    ]
    default = lm_eval_command(
        "/m", tasks=["a@dev"], include_path="/t", settings=LmEvalSettings(), run=RunSettings(1), device="cpu"
    )
    assert (
        default == "lm_eval --model hf --model_args pretrained=/m,dtype=auto --tasks a@dev --include_path /t "
        "--batch_size 1 --device cpu"
    )


def test_the_config_schema_offers_exactly_the_settings_the_type_holds():
    """The schema declares each setting's config key (type, default, description); the settings
    type is what runs. Both list the same settings, in `evaluation` and in each task."""
    from pathlib import Path

    import yaml

    from exme.evaluate.settings import LM_EVAL_SETTINGS

    schema = yaml.safe_load((Path(__file__).parents[2] / "workflow/schemas/config.schema.yaml").read_text())
    evaluation = schema["properties"]["evaluation"]["properties"]
    task = evaluation["tasks"]["items"]["properties"]
    referenced = {key for key, value in evaluation.items() if value.get("$ref") == f"#/$defs/{key}"}
    assert referenced == set(LM_EVAL_SETTINGS) == set(schema["$defs"]) & set(task)

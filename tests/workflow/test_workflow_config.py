"""The config: every shipped file validates, and each bad value fails with a message naming its key."""

import copy
import json
import re
import shutil

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from exme.errors import ExmeError
from exme.pipeline.config import as_param, check_config, prepare_config, resolve_run_defaults
from tests.workflow.snakemake_runner import CI_CONFIG, CONFIGS, REPO, run_snakemake

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"


def load(path):
    return yaml.safe_load(path.read_text())


def validated(config):
    """The config validated and its run-dependent defaults resolved, as the Snakefile does before
    check_config."""
    config = copy.deepcopy(config)
    validate(config, str(SCHEMA))
    resolve_run_defaults(config)
    return config


def required_keys(schema, config, prefix=()):
    """Dotted paths of every key the schema requires, reached through the given config."""
    schema = _resolve(schema)
    for key in schema.get("required", []):
        yield (*prefix, key)
    for key, sub_schema in schema.get("properties", {}).items():
        value = config.get(key) if isinstance(config, dict) else None
        sub_schema = _resolve(sub_schema)
        if isinstance(value, dict):
            yield from required_keys(sub_schema, value, (*prefix, key))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            yield from required_keys(sub_schema["items"], value[0], (*prefix, key, 0))


def _resolve(schema):
    root = load(SCHEMA)
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


DEFAULT = load(REPO / "config/config.yaml")
REQUIRED = list(required_keys(load(SCHEMA), DEFAULT))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_validates_and_passes_the_semantic_checks(path):
    # `--configfile` is merged over config/config.yaml, as Snakemake does.
    check_config(validated(_merged(DEFAULT, load(path))))


def test_the_required_keys_cover_every_stage():
    dotted = {".".join(map(str, key)) for key in REQUIRED}
    assert {"run", "seeds", "finetune.learning_rate", "evaluation.tasks.0.metric"} <= dotted
    assert {"extrapolation.alpha_grid", "merging.beta_grid", "resources.default"} <= dotted


@pytest.mark.parametrize("key", REQUIRED, ids=lambda k: ".".join(map(str, k)))
def test_a_missing_required_key_is_named(key):
    config = copy.deepcopy(DEFAULT)
    parent = config
    for part in key[:-1]:
        parent = parent[part]
    del parent[key[-1]]
    with pytest.raises(WorkflowError, match=f"'{key[-1]}' is a required property"):
        validate(config, str(SCHEMA))


BAD_VALUES = [
    ("extrapolation", "alpha_grid", [], "alpha_grid"),
    ("merging", "beta_grid", [], "beta_grid"),
    ("merging", "beta_grid", [0.5, 1.5], "1.5"),
    ("finetune", "learning_rate", "fast", "learning_rate"),
    ("selection", "top_k", 1, "top_k"),
    ("evaluation", "batch_size", 0, "batch_size"),
    ("resources", "default", {"threads": 1, "memory": 10}, "memory"),
    ("merge_methods", "mixup", {"concentration": 0}, "concentration"),  # Beta(a, a) needs a > 0
    ("merge_methods", "mixup", {"draws": 0}, "draws"),
    ("greedy", "max_generations", 0, "max_generations"),
    ("greedy", "exploration", "random", "exploration"),
]


@pytest.mark.parametrize(("section", "key", "value", "named"), BAD_VALUES)
def test_a_bad_value_fails_schema_validation_naming_it(section, key, value, named):
    config = copy.deepcopy(DEFAULT)
    config[section][key] = value
    with pytest.raises(WorkflowError) as error:
        validate(config, str(SCHEMA))
    assert named in str(error.value)


SEMANTIC_ERRORS = [
    ({"selection": {"top_k": 99}}, "selection.top_k"),
    ({"finetune": {"max_steps": 150}}, "finetune.max_steps"),
    ({"demo": {"tasks": ["arith", "nonsense"]}}, "demo.tasks: unknown task 'nonsense'"),
    ({"evaluation": {"tasks": [{"name": "hellaswag", "metric": "acc,none"}]}}, "evaluation.tasks"),
    ({"extrapolation": {"alpha_grid": [-0.5, 0.5]}}, "extrapolation.alpha_grid"),
    ({"demo": {"activate": False}}, "model.base is required"),
    ({"demo": {"activate": False}, "model": {"base": "/nonexistent"}}, "model.base: /nonexistent is neither"),
    (
        {"demo": {"activate": False}, "model": {"base": "org/name"}},
        "data.sft_train is required when demo.activate is false",  # a Hub id passes: download_base gets it
    ),
    ({"output": {"shard_size": "lots"}}, "shard_size"),
    ({"experts": [{"name": "arith"}]}, "tracks.expert: the expert track merges at least two experts"),
    ({"tracks": {"expert": ["slerp"]}}, "tracks.expert: slerp merges exactly 2 models, the track has 4"),
    ({"tracks": {"checkpoint": ["fancy"]}}, "unknown merge method 'fancy'"),
    ({"experts": [{"name": "arith"}, {"name": "arith"}]}, "experts: each expert needs its own name"),
    (
        {"experts": [{"name": "arith"}, {"name": "geometry"}]},
        "experts[1] (geometry): the demo's experts are named",
    ),
    ({"greedy": {"k": 11}}, "greedy.k (11) is larger than the pool of 10 models"),
    ({"greedy": {"method": "m3_ties"}}, "greedy.method: m3_ties chooses a coefficient on dev"),
    (
        {"evaluation": {"tasks": [{"name": "demo_arith", "metric": "m", "splits": {"dev": "test"}}]}},
        "evaluation.tasks[0].splits (demo_arith): dev 'test' and test 'test' share items",
    ),
    (
        {"evaluation": {"tasks": [{"name": "demo_arith", "metric": "m", "splits": {"dev": "test[:60%]"}}]}},
        "dev 'test[:60%]' and test 'test' share items",
    ),
    (
        {
            "evaluation": {
                "tasks": [
                    {
                        "name": "demo_arith",
                        "metric": "m",
                        "splits": {"dev": "test[:50]", "test": "test[50%:]"},
                    }
                ]
            }
        },
        "are slices in different units",
    ),
    (
        {"evaluation": {"tasks": [{"name": "demo_arith", "metric": "m", "splits": {"dev": "test[:50"}}]}},
        "evaluation.tasks[0].splits (demo_arith).dev: 'test[:50' is not a split name or a slice",
    ),
    (
        {"extrapolation": {"alpha_grid": [0.0, float("nan")]}},
        "extrapolation.alpha_grid[1]: nan is not a finite",
    ),
    ({"merging": {"beta_grid": [0.5, float("nan")]}}, "merging.beta_grid[1]: nan is not a finite number"),
    ({"finetune": {"learning_rate": float("inf")}}, "finetune.learning_rate: inf is not a finite number"),
    ({"finetune": {"bf16": True, "fp16": True}}, "finetune.bf16 and finetune.fp16 are both true"),
    ({"finetune": {"fp16": True, "dtype": "bfloat16"}}, "finetune.fp16 mixed precision needs finetune.dtype"),
    ({"finetune": {"warmup_steps": 2.5}}, "finetune.warmup_steps (2.5)"),
    ({"evaluation": {"apply_chat_template": True}}, "apply_chat_template is set, but the demo's tokenizer"),
    (
        {"evaluation": {"fewshot_as_multiturn": True}},
        "evaluation.tasks[0] (demo_arith): fewshot_as_multiturn is true but apply_chat_template is not",
    ),
]


def _merged(base, override):
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.mark.parametrize(("override", "named"), SEMANTIC_ERRORS, ids=lambda v: str(v)[:40])
def test_a_semantically_bad_config_is_refused_naming_the_key(override, named):
    with pytest.raises((ExmeError, WorkflowError), match=re.escape(named)):
        check_config(validated(_merged(DEFAULT, override)))


def test_a_real_run_names_a_missing_task_folder(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base/config.json").write_text("{}")
    (tmp_path / "sft.jsonl").write_text("")
    override = {
        "demo": {"activate": False},
        "model": {"base": str(tmp_path / "base")},
        "data": {"sft_train": str(tmp_path / "sft.jsonl")},
        "evaluation": {"include_path": str(tmp_path / "my_tasks")},
        "experts": [],
        "tracks": {"expert": []},
    }
    config = validated(_merged(DEFAULT, override))
    message = f"evaluation.include_path: {tmp_path}/my_tasks is not a folder"
    with pytest.raises(ExmeError, match=re.escape(message)):
        check_config(config)
    (tmp_path / "my_tasks").mkdir()
    check_config(config)


def _real_run(tmp_path, records, tokenizer_config):
    (tmp_path / "base").mkdir()
    (tmp_path / "base/config.json").write_text("{}")
    (tmp_path / "base/tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (tmp_path / "sft.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    override = {
        "demo": {"activate": False},
        "model": {"base": str(tmp_path / "base")},
        "data": {"sft_train": str(tmp_path / "sft.jsonl")},
        "experts": [],
        "tracks": {"expert": []},
    }
    return validated(_merged(DEFAULT, override))


def test_chat_data_or_a_chat_template_need_one_in_the_base_model(tmp_path):
    chat = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    config = _real_run(tmp_path, chat, {"eos_token": "</s>"})
    with pytest.raises(
        ExmeError, match=r"data.sft_train: .*sft.jsonl holds chat 'messages' records, which needs"
    ):
        check_config(config)
    config["data"]["sft_train"] = str(tmp_path / "text.jsonl")
    (tmp_path / "text.jsonl").write_text(json.dumps({"prompt": "q", "completion": "a"}) + "\n")
    check_config(config)
    config["evaluation"]["tasks"][2]["apply_chat_template"] = True
    with pytest.raises(ExmeError, match=r"evaluation.tasks\[2\] \(demo_lookup\): apply_chat_template needs"):
        check_config(config)
    (tmp_path / "base/chat_template.jinja").write_text("{{ messages }}")
    config["data"]["sft_train"] = str(tmp_path / "sft.jsonl")
    check_config(config)


def test_lm_eval_settings_validate_for_all_tasks_and_per_task():
    config = copy.deepcopy(DEFAULT)
    config["evaluation"].update(num_fewshot=2, seed=[0, None, 3, 4], gen_kwargs={"max_gen_toks": 8})
    config["evaluation"]["tasks"][0].update(num_fewshot=0, gen_kwargs="temperature=0")
    check_config(validated(config))
    defaults = validated(DEFAULT)["evaluation"]
    assert {key: defaults[key] for key in ("dtype", "seed", "bootstrap_iters", "log_samples")} == {
        "dtype": "auto",
        "seed": None,
        "bootstrap_iters": 1000,
        "log_samples": False,
    }
    assert "num_fewshot" not in defaults["tasks"][0]  # a task's own settings have no defaults
    config["evaluation"]["seed"] = [1, 2]
    with pytest.raises(WorkflowError, match="seed"):
        validated(config)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"selection": {"top_k": 99}}, "selection.top_k"),
        ({"run": None}, "None is not of type 'string'"),
        ({"resources": {"fine_tune": {"threads": 2}}}, "resources.fine_tune: no rule of that name"),
        ({"extrapolation": {"alpha_grid": [0.0, float("inf")]}}, "alpha_grid[1]: inf is not a finite number"),
    ],
)
def test_the_workflow_refuses_a_bad_config_before_writing_anything(tmp_path, override, named):
    configfile = tmp_path / "bad.yaml"
    configfile.write_text(yaml.safe_dump(_merged(load(CI_CONFIG), override)))
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = run_snakemake(workdir, configfile, "--dry-run")
    assert result.returncode != 0
    assert named in result.stdout + result.stderr
    leftovers = [p for p in workdir.iterdir() if p.name != ".snakemake"]
    assert leftovers == []
    shutil.rmtree(workdir)


def test_rule_parameters_do_not_depend_on_the_key_order_of_the_config():
    first = {"b": 1, "a": {"y": [{"q": 1, "p": 2}], "x": 0}}
    second = {"a": {"x": 0, "y": [{"p": 2, "q": 1}]}, "b": 1}
    assert repr(as_param(first)) == repr(as_param(second))
    assert as_param([3, 1, 2]) == [3, 1, 2]  # lists keep their order: it can mean something


def _docs_yaml_block(page, heading):
    """The first YAML block under a heading of a documentation page."""
    text = (REPO / page).read_text()
    section = text[text.index(heading) :]
    return yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])


def test_the_docs_own_model_example_passes_the_config_check(tmp_path, monkeypatch):
    own = _docs_yaml_block("docs/own-model.md", "## The config")
    monkeypatch.chdir(tmp_path)  # its relative paths: the data file and the task folder
    (tmp_path / own["data"]["sft_train"]).parent.mkdir(parents=True)
    (tmp_path / own["data"]["sft_train"]).write_text('{"prompt": "1+1=", "completion": "2"}\n')
    (tmp_path / own["evaluation"]["include_path"]).mkdir()
    config = _merged(DEFAULT, own)
    prepare_config(config, SCHEMA)
    # A real run does not inherit the demo's experts, expert track or greedy merging.
    assert config["experts"] == [] and config["greedy"]["activate"] is False


def test_the_demo_keeps_its_experts_and_greedy_merging_from_the_defaults():
    config = _merged(DEFAULT, {})
    prepare_config(config, SCHEMA)
    assert [expert["name"] for expert in config["experts"]] == DEFAULT["demo"]["tasks"]
    assert config["greedy"]["activate"] is True


def test_a_renamed_key_is_named_with_its_new_name():
    config = _merged(DEFAULT, {"seed": 0})
    del config["seeds"]
    with pytest.raises(ExmeError, match=r"seed: renamed to `seeds`"):
        prepare_config(config, SCHEMA)

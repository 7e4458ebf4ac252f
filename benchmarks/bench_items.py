"""The paired comparisons' added cost to a finished run (the demo by default).

- Time: lm-eval's per-sample outputs, which the per-item values come from, on one test evaluation of
  the run's base model, timed side by side with and without them (alternating, medians of --runs),
  the per-item values taken from them; and the compare rule's paired statistics on the run's
  tables. The estimate for the run: the added seconds per test evaluation times the run's test
  evaluations, plus the paired statistics.
- Disk: the run's items.csv.gz files and the per-item values inside its test evaluation files,
  against the whole run folder.

    python benchmarks/bench_items.py [--run results/demo] [--config config/config.yaml] [--runs 3]
"""

import argparse
import json
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _seconds(call) -> tuple[float, object]:
    start = time.perf_counter()
    value = call()
    return time.perf_counter() - start, value


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, default=REPO / "results/demo", help="a finished run's folder")
    parser.add_argument("--config", nargs="+", default=[str(REPO / "config/config.yaml")])
    parser.add_argument("--runs", type=int, default=3, help="evaluations with and without, each")
    args = parser.parse_args()

    from exme.offline import set_offline

    set_offline(True)
    import pandas as pd

    from exme.device import use_threads
    from exme.evaluate.harness import evaluate_model, item_scores
    from exme.evaluate.models import load_model
    from exme.evaluate.settings import RunSettings
    from exme.pipeline.comparison import paired_differences
    from exme.pipeline.config import merge_config_files, prepare_config
    from exme.pipeline.scores import ITEM_SPLIT, read_items

    use_threads(2)
    config = merge_config_files(*args.config)
    prepare_config(config, REPO / "workflow/schemas/config.schema.yaml")
    evaluation = config["evaluation"]
    tasks = evaluation["tasks"]
    metrics = {task["name"]: task["metric"] for task in tasks}
    model, tokenizer = load_model(args.run / "base", dtype=evaluation["dtype"])
    timings: dict[bool, list[float]] = {False: [], True: []}
    extraction = []
    for _ in range(args.runs):
        for log_samples in (False, True):
            run = RunSettings(
                batch_size=evaluation["batch_size"],
                seeds=evaluation["seed"],
                bootstrap_iters=evaluation["bootstrap_iters"],
                log_samples=log_samples,
                dtype=evaluation["dtype"],
            )
            seconds, results = _seconds(
                lambda run=run: evaluate_model(
                    model,
                    tokenizer,
                    task_splits={task["name"]: task["splits"][ITEM_SPLIT] for task in tasks},
                    include_path=args.run / "data/lm_eval_tasks",
                    run=run,
                )
            )
            if log_samples:
                extracted, _ = _seconds(lambda results=results: item_scores(results, metrics))
                extraction.append(extracted)
                seconds += extracted
            timings[log_samples].append(seconds)

    without, with_items = (statistics.median(timings[flag]) for flag in (False, True))
    test_files = sorted(args.run.glob(f"*/eval/{ITEM_SPLIT}/*.json"))
    scores, items = pd.read_csv(args.run / "scores.csv"), read_items(args.run / "items.csv.gz")
    paired = [_seconds(lambda: paired_differences(scores, items))[0] for _ in range(args.runs)]
    paired_seconds = statistics.median(paired)
    added_time = (with_items - without) * len(test_files) + paired_seconds
    item_bytes = sum(len(json.dumps(json.loads(path.read_text()).get("items", {}))) for path in test_files)
    table_bytes = sum(path.stat().st_size for path in args.run.rglob("items.csv.gz"))
    run_bytes = _folder_bytes(args.run)

    print(
        f"run {args.run}: {len(test_files)} test evaluations, {len(items)} item rows, {args.runs} runs each"
    )
    print("| what | without | with | added |")
    print("|---|---|---|---|")
    print(
        f"| one test evaluation (s, median; item extraction {statistics.median(extraction):.2f} s) | "
        f"{without:.2f} | {with_items:.2f} | {with_items - without:+.2f} ({with_items / without - 1:+.1%}) |"
    )
    print(
        f"| paired statistics, compare rule (s, median) | – | {paired_seconds:.2f} | {paired_seconds:+.2f} |"
    )
    print(f"| estimated added time for the run (s) | | | {added_time:+.0f} |")
    added_bytes = table_bytes + item_bytes
    print(
        "| disk: the run folder; added: items.csv.gz files + per-item values in test evaluations (MB) | "
        f"{(run_bytes - added_bytes) / 1e6:.1f} | {run_bytes / 1e6:.1f} | {added_bytes / 1e6:+.2f} "
        f"({added_bytes / (run_bytes - added_bytes):+.1%}) |"
    )


if __name__ == "__main__":
    main()

"""Run the demo chain outside Snakemake to calibrate its defaults.

    python -m exme.demo.calibrate WORK_DIR [--size default|ci] [--alphas 0 0.1 0.25 0.5 1 2]

data -> pretrain base -> SFT checkpoints -> dev/test scores of every model -> for the top two
checkpoints by mean DEV score, DEV scores of theta + alpha (theta - theta_base) per alpha.
Writes WORK_DIR/calibration.json and prints timings and tables.
"""

import argparse
import copy
import resource
import time
from pathlib import Path
from typing import Any

import torch

from exme.demo.base_model import pretrain_base
from exme.demo.tasks import write_demo_data
from exme.evaluation import (
    EVAL_SPLITS,
    evaluate_model,
    load_model_dir,
    scores_from_results,
    write_results,
)
from exme.training import finetune

# The values the pipeline config should carry; "ci" is the quick variant for tests.
SETTINGS: dict[str, dict[str, Any]] = {
    "default": {
        "seed": 0,
        "data": {
            "tasks": ["arith", "count", "lookup", "median"],
            "n_train": 3000,
            "n_dev": 250,
            "n_test": 250,
            "pretrain_lines": 40000,
        },
        "model": {
            "hidden_size": 128,
            "num_layers": 3,
            "num_heads": 4,
            "intermediate_size": 256,
            "max_position_embeddings": 64,
        },
        "pretrain": {"steps": 600, "learning_rate": 3e-3, "batch_size": 32, "seq_len": 64},
        "sft": {
            "learning_rate": 5e-4,
            "max_steps": 1200,
            "save_steps": 150,
            "batch_size": 32,
            "warmup_steps": 20,
            "weight_decay": 0.0,
            "lr_scheduler_type": "constant_with_warmup",
        },
        "eval": {"batch_size": 64, "limit": None},
    },
}
SETTINGS["ci"] = copy.deepcopy(SETTINGS["default"])
SETTINGS["ci"]["data"].update(n_train=500, n_dev=40, n_test=40, pretrain_lines=4000)
SETTINGS["ci"]["pretrain"].update(steps=100)
SETTINGS["ci"]["sft"].update(max_steps=60, save_steps=20, warmup_steps=5)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _task_scores(model, tokenizer, split: str, settings: dict, paths: dict) -> dict[str, float]:
    results = evaluate_model(
        model,
        tokenizer,
        tasks=list(paths["metric_keys"]),
        split=split,
        include_path=paths["tasks"],
        batch_size=settings["eval"]["batch_size"],
        seed=settings["seed"],
        limit=settings["eval"]["limit"],
    )
    scores = scores_from_results(results, paths["metric_keys"])
    by_task = {score["task"]: score["value"] for score in scores}
    by_task["mean"] = sum(by_task.values()) / len(scores)
    return by_task


def extrapolated_state(
    tuned: dict[str, torch.Tensor], base: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """theta + alpha (theta - theta_base) per tensor (calibration only; the engine is elsewhere)."""
    return {name: value + alpha * (value - base[name]) for name, value in tuned.items()}


def calibrate(work_dir: Path, settings: dict, alphas: list[float]) -> dict[str, Any]:
    timings: dict[str, float] = {}
    data = settings["data"]
    start = time.perf_counter()
    metric_keys = write_demo_data(
        work_dir / "data",
        data["tasks"],
        data["n_train"],
        data["n_dev"],
        data["n_test"],
        settings["seed"],
        data["pretrain_lines"],
    )
    paths = {"tasks": work_dir / "data" / "lm_eval_tasks", "metric_keys": metric_keys}
    timings["data_s"] = time.perf_counter() - start

    start = time.perf_counter()
    n_parameters = pretrain_base(
        work_dir / "base",
        work_dir / "data" / "pretrain.txt",
        **settings["model"],
        **settings["pretrain"],
        seed=settings["seed"],
    )
    timings["pretrain_s"] = time.perf_counter() - start

    start = time.perf_counter()
    steps = finetune(
        work_dir / "base",
        work_dir / "data" / "sft_train.jsonl",
        work_dir / "sft",
        work_dir / "sft_state",
        **settings["sft"],
        seed=settings["seed"],
    )
    timings["sft_s"] = time.perf_counter() - start

    model_dirs = {"base": work_dir / "base"} | {
        f"step-{step}": work_dir / "sft" / f"step-{step}" for step in steps
    }
    scores: dict[str, dict[str, dict[str, float]]] = {}
    eval_seconds = []
    for name, model_dir in model_dirs.items():
        model, tokenizer = load_model_dir(model_dir)
        scores[name] = {}
        for split in EVAL_SPLITS:
            start = time.perf_counter()
            scores[name][split] = _task_scores(model, tokenizer, split, settings, paths)
            eval_seconds.append(time.perf_counter() - start)
    timings["one_eval_s"] = max(eval_seconds)

    checkpoints = [f"step-{step}" for step in steps]
    top_two = sorted(checkpoints, key=lambda name: scores[name]["dev"]["mean"], reverse=True)[:2]
    base_state = load_model_dir(model_dirs["base"])[0].state_dict()
    extrapolation: dict[str, dict[str, dict[str, float]]] = {}
    for name in top_two:
        model, tokenizer = load_model_dir(model_dirs[name])
        tuned_state = {key: value.clone() for key, value in model.state_dict().items()}
        extrapolation[name] = {}
        for alpha in alphas:
            model.load_state_dict(extrapolated_state(tuned_state, base_state, alpha))
            extrapolation[name][str(alpha)] = _task_scores(model, tokenizer, "dev", settings, paths)

    timings["peak_rss_mb"] = _peak_rss_mb()
    report = {
        "settings": settings,
        "n_parameters": n_parameters,
        "timings": timings,
        "scores": scores,
        "top_two_by_dev": top_two,
        "extrapolation_dev": extrapolation,
    }
    write_results(work_dir / "calibration.json", report)
    return report


def _print_report(report: dict[str, Any]) -> None:
    print(f"parameters: {report['n_parameters']}")
    print("timings: " + ", ".join(f"{k}={v:.1f}" for k, v in report["timings"].items()))
    for split in EVAL_SPLITS:
        print(f"\n{split}:")
        for name, by_split in report["scores"].items():
            print(f"  {name:>10}  " + "  ".join(f"{k}={v:.3f}" for k, v in by_split[split].items()))
    print("\nextrapolation (dev):")
    for name, curve in report["extrapolation_dev"].items():
        for alpha, by_task in curve.items():
            row = "  ".join(f"{k}={v:.3f}" for k, v in by_task.items())
            print(f"  {name:>10} alpha={alpha:<5} {row}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--size", choices=sorted(SETTINGS), default="default")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.1, 0.25, 0.5, 1.0, 2.0])
    args = parser.parse_args()
    _print_report(calibrate(args.work_dir.resolve(), SETTINGS[args.size], args.alphas))


if __name__ == "__main__":
    main()

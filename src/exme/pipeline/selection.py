"""Choosing on the dev split: the top-k checkpoints, and the best point of a coefficient grid.

Only dev-split evaluations reach these functions; the test split never chooses anything.
"""

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from exme.errors import ExmeError
from exme.pipeline.catalogue import model_name
from exme.pipeline.recipes import Checkpoint
from exme.train.checkpoints import checkpoint_folder


def read_evaluation(path: str | os.PathLike) -> dict:
    """An evaluation file written by the `evaluate` rule: model, split and per-task scores."""
    evaluation = json.loads(Path(path).read_text())
    if not evaluation.get("scores"):
        raise ExmeError(f"{path}: evaluation holds no scores")
    return evaluation


def mean_score(evaluation: dict) -> float:
    """The overall score of a model: the unweighted mean over tasks (the paper's 'overall')."""
    values = [score["value"] for score in evaluation["scores"]]
    return sum(values) / len(values)


def dev_means(paths: Sequence[str | os.PathLike]) -> dict[str, float]:
    """{model name: mean dev score}, in the order of `paths`."""
    means = {}
    for path in paths:
        evaluation = read_evaluation(path)
        if evaluation["split"] != "dev":
            raise ExmeError(f"{path}: selection reads dev evaluations only, got {evaluation['split']!r}")
        means[evaluation["model"]] = mean_score(evaluation)
    return means


def top_k(means: Mapping[str, float], k: int) -> list[str]:
    """The k best models; ties go to the one listed first (the earlier checkpoint)."""
    if k > len(means):
        raise ExmeError(f"cannot select {k} models out of {len(means)}")
    order = {name: index for index, name in enumerate(means)}
    return sorted(means, key=lambda name: (-means[name], order[name]))[:k]


def best_on_grid(curve: Mapping[float, float]) -> float:
    """The grid value with the best dev score; ties go to the first in grid order."""
    if not curve:
        raise ExmeError("empty grid")
    return max(curve, key=lambda value: (curve[value], -list(curve).index(value)))


def checkpoint_at(sft_dir: str, step: int, rank: int | None = None) -> Checkpoint:
    """The checkpoint of `step`, its folder inside fine-tuning's output `sft_dir`."""
    return Checkpoint(model_name("sft", step=step), rank, f"{sft_dir}/{checkpoint_folder(step)}")


def selected_checkpoints(selection: dict, sft_dir: str) -> list[Checkpoint]:
    """The selected checkpoints by rank."""
    return [checkpoint_at(sft_dir, entry["step"], entry["rank"]) for entry in selection["selected"]]


def chosen_alpha(alpha_search: dict, rank: int) -> float:
    """The alpha the dev search chose for the rank-`rank` checkpoint."""
    return alpha_search["chosen"][str(rank)]["alpha"]

"""The run's one tidy score table: a row per (model, task, split, metric)."""

import os
from collections.abc import Sequence

import pandas as pd

from exme.naming import parse_model_name
from exme.selection import read_evaluation

COLUMNS = [
    "model",
    "method",
    "source",
    "rank",
    "alpha",
    "beta",
    "task",
    "split",
    "metric",
    "value",
    "seed",
]


def tidy_scores(
    evaluation_paths: Sequence[str | os.PathLike],
    *,
    selection: dict,
    alphas: dict,
    betas: dict,
    seed: int,
) -> pd.DataFrame:
    """Rows for every evaluation file, with each model's method, source checkpoint(s) and coefficients.

    Models named without a coefficient (`expo1`, `exme`) are at the coefficients the dev search chose.
    """
    selected = {entry["rank"]: entry["model"] for entry in selection["selected"]}
    rows = []
    for path in evaluation_paths:
        evaluation = read_evaluation(path)
        name = parse_model_name(evaluation["model"])
        describe = {
            "method": name.method,
            "source": None,
            "rank": None,
            "alpha": None,
            "beta": None,
        }
        if name.method == "sft":
            describe["source"] = evaluation["model"]
            describe["rank"] = next((r for r, m in selected.items() if m == evaluation["model"]), None)
        elif name.method == "expo":
            describe["source"] = selected[name.rank]
            describe["rank"] = name.rank
            describe["alpha"] = (
                name.alpha if name.alpha is not None else alphas["chosen"][str(name.rank)]["alpha"]
            )
        elif name.method == "exme":
            describe["source"] = "+".join(selected[rank] for rank in sorted(selected))
            describe["beta"] = name.beta if name.beta is not None else betas["beta"]
        for score in evaluation["scores"]:
            rows.append(
                {
                    "model": evaluation["model"],
                    **describe,
                    "split": evaluation["split"],
                    **score,
                    "seed": seed,
                }
            )
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["rank"] = table["rank"].astype("Int64")
    return table.sort_values(["split", "method", "model", "task"], kind="stable", ignore_index=True)

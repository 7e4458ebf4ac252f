"""The run's one tidy score table: a row per (model, task, split, metric), described by the model's
own description (see catalogue), which each evaluation file carries."""

import os
from collections.abc import Sequence

import pandas as pd

from exme.pipeline.selection import read_evaluation

DESCRIPTION_COLUMNS = ["method", "source", "rank", "alpha", "beta"]
# stderr: lm-eval's standard error of the value (empty where lm-eval gives none).
COLUMNS = ["model", *DESCRIPTION_COLUMNS, "task", "split", "metric", "value", "stderr", "seed"]


def tidy_scores(evaluation_paths: Sequence[str | os.PathLike], *, selection: dict, seed: int) -> pd.DataFrame:
    """Rows for every evaluation file. A selected checkpoint's rank comes from the selection, which
    is made after that checkpoint was evaluated."""
    selected_ranks = {entry["model"]: entry["rank"] for entry in selection["selected"]}
    rows = []
    for path in evaluation_paths:
        evaluation = read_evaluation(path)
        description = {"rank": selected_ranks.get(evaluation["model"]), **evaluation["description"]}
        describe = {column: description.get(column) for column in DESCRIPTION_COLUMNS}
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

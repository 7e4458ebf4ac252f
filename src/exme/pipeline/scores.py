"""The run's one tidy score table: a row per (seed, model, task, split, metric), described by the
model's own description (see catalogue), which each evaluation file carries."""

import os
from collections.abc import Mapping, Sequence

import pandas as pd

from exme.pipeline.catalogue import SHARED_SCOPE, scope_seed
from exme.pipeline.selection import read_evaluation

DESCRIPTION_COLUMNS = ["method", "track", "source", "rank", "alpha", "beta"]
# stderr: lm-eval's standard error of the value (empty where lm-eval gives none).
COLUMNS = ["model", *DESCRIPTION_COLUMNS, "task", "split", "metric", "value", "stderr", "seed"]
ORDER = ["seed", "split", "track", "method", "model", "task"]


def tidy_scores(
    evaluation_paths: Sequence[str | os.PathLike], *, selections: Mapping[int, dict], seeds: Sequence[int]
) -> pd.DataFrame:
    """Rows for every evaluation file. A model evaluated once for all seeds (the base) gets a row
    per seed, so that every seed's comparison holds it. A selected checkpoint's rank comes from its
    seed's selection, which is made after that checkpoint was evaluated. Description keys beyond
    the standard columns (a method's own coefficients) become columns of their own."""
    rows = []
    for path in evaluation_paths:
        evaluation = read_evaluation(path)
        scope = evaluation["scope"]
        for seed in seeds if scope == SHARED_SCOPE else [scope_seed(scope)]:
            selected = {entry["model"]: entry["rank"] for entry in selections[seed]["selected"]}
            description = {"rank": selected.get(evaluation["model"]), **evaluation["description"]}
            for score in evaluation["scores"]:
                row = {"model": evaluation["model"], **description, "split": evaluation["split"]}
                rows.append({**row, **score, "seed": seed})
    table = pd.DataFrame(rows)
    extra = sorted(set(table.columns) - set(COLUMNS))
    table = table.reindex(columns=[*COLUMNS, *extra])
    table["rank"] = table["rank"].astype("Int64")
    return table.sort_values(ORDER, kind="stable", ignore_index=True)


def combined(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """The seeds' tables as one, in the same column and row order as each."""
    tables = [pd.read_csv(path) for path in paths]
    columns = list(dict.fromkeys(column for table in tables for column in table.columns))
    columns = [*COLUMNS, *sorted(set(columns) - set(COLUMNS))]
    table = pd.concat(tables, ignore_index=True).reindex(columns=columns)
    table["rank"] = table["rank"].astype("Int64")
    return table.sort_values(ORDER, kind="stable", ignore_index=True)

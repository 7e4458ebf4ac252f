"""The run's one tidy score table: a row per (seed, model, task, split, metric), described by the
model's own description (see catalogue), which each evaluation file carries."""

import os
from collections.abc import Mapping, Sequence

import pandas as pd

from exme.files import staged_file
from exme.pipeline.catalogue import SHARED_SCOPE, scope_seed
from exme.pipeline.selection import read_evaluation

DESCRIPTION_COLUMNS = ["method", "track", "source", "rank", "alpha", "beta"]
# stderr: lm-eval's standard error of the value (empty where lm-eval gives none).
COLUMNS = ["model", *DESCRIPTION_COLUMNS, "task", "split", "metric", "value", "stderr", "seed"]
ORDER = ["seed", "split", "track", "method", "model", "task"]
# The split whose evaluations keep each item's metric value, for the paired comparisons.
ITEM_SPLIT = "test"
ITEM_COLUMNS = ["seed", "model", "task", "item", "value"]


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


def tidy_items(evaluation_paths: Sequence[str | os.PathLike], *, seeds: Sequence[int]) -> pd.DataFrame:
    """One row per (seed, model, task, item) of the ITEM_SPLIT evaluations: the item's metric value
    (lm-eval's doc_id names the item). The base, evaluated once, gets its rows in every seed."""
    frames = []
    for path in evaluation_paths:
        evaluation = read_evaluation(path)
        if evaluation["split"] != ITEM_SPLIT:
            continue
        scope = evaluation["scope"]
        for seed in seeds if scope == SHARED_SCOPE else [scope_seed(scope)]:
            for task, items in evaluation.get("items", {}).items():
                frame = pd.DataFrame({"item": items["item"], "value": items["value"]})
                frames.append(frame.assign(seed=seed, model=evaluation["model"], task=task))
    if not frames:
        return pd.DataFrame(columns=ITEM_COLUMNS)
    table = pd.concat(frames, ignore_index=True)[ITEM_COLUMNS]
    return table.sort_values(ITEM_COLUMNS[:4], kind="stable", ignore_index=True)


def write_items(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """The item table as gzip-compressed CSV (values of 0/1 metrics written as 0 and 1)."""
    with staged_file(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g", compression="gzip")


def read_items(path: str | os.PathLike) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"value": float})


def combined_items(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """The seeds' item tables as one."""
    table = pd.concat([read_items(path) for path in paths], ignore_index=True)
    return table.sort_values(ITEM_COLUMNS[:4], kind="stable", ignore_index=True)

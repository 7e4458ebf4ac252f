"""The comparison: means by role (± sd over seeds, or lm-eval's standard error on one seed), win
counts, and paired differences against each method's reference models on the same items."""

import numpy as np
import pandas as pd
import pytest

from exme.errors import ExmeError
from exme.pipeline.comparison import (
    comparison_markdown,
    comparison_table,
    paired_differences,
    plot_comparison,
)
from exme.pipeline.targets import MEAN_TASK


def _rows(seed, track, method, model, split, values, **description):
    return [
        {"seed": seed, "track": track, "method": method, "model": model, "split": split, "task": task,
         "value": value, **description}
        for task, value in zip(("t1", "t2"), values, strict=True)
    ]  # fmt: skip


def synthetic_table():
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.1)):
        rows += _rows(seed, "shared", "base", "base", "test", [0.1, 0.1])
        # The selected checkpoints differ between seeds but line up by rank.
        best, second = ("sft-20", "sft-10") if seed == 0 else ("sft-10", "sft-20")
        for split in ("dev", "test"):
            rows += _rows(seed, "checkpoint", "sft", best, split, [0.5 + shift, 0.5], rank=1)
            rows += _rows(seed, "checkpoint", "sft", second, split, [0.4, 0.4], rank=2)
            rows += _rows(seed, "expert", "expert", "ft-a", split, [0.7, 0.2], source="a")
            rows += _rows(seed, "expert", "expert", "ft-b", split, [0.2, 0.6], source="b")
            rows += _rows(seed, "checkpoint", "expo", f"expo{1}", split, [0.5 + shift, 0.5], rank=1)
        rows += _rows(seed, "checkpoint", "exme", "exme", "test", [0.6, 0.5])
        rows += _rows(seed, "checkpoint", "linear", "checkpoint-linear", "test", [0.45, 0.45])
        rows += _rows(seed, "checkpoint", "m3_linear", "checkpoint-m3_linear", "test", [0.5, 0.5])
        rows += _rows(seed, "expert", "ties", "expert-ties", "test", [0.65, 0.65])
        rows += _rows(seed, "expert", "m3_ties", "expert-m3_ties-d0", "test", [0.9, 0.9])  # a draw: left out
    return pd.DataFrame(rows)


def synthetic_items(table, n_items=20):
    """Per test score, n_items 0/1 item values whose mean is the score (the first round(score·n))."""
    rows = []
    for row in table[table["split"] == "test"].itertuples():
        right = round(row.value * n_items)
        rows += [
            {
                "seed": row.seed,
                "model": row.model,
                "task": row.task,
                "item": item,
                "value": float(item < right),
            }
            for item in range(n_items)
        ]
    return pd.DataFrame(rows)


def test_rows_are_roles_with_mean_and_sd_over_seeds_and_win_counts():
    wide = comparison_table(synthetic_table())
    checkpoint, expert = wide.loc["checkpoint"], wide.loc["expert"]
    assert set(checkpoint.index) == {"base", "SFT-1", "SFT-2", "EXPO-1", "ExMe", "linear", "m3_linear"}
    assert set(expert.index) == {"base", "expert a", "expert b", "ties"}  # no M3 draw, no grid point
    assert checkpoint.loc["SFT-1", "t1"] == "0.550 ± 0.071"  # 0.5 and 0.6 over the two seeds
    # Best input on the checkpoint track is SFT-1 (best dev mean); ExMe beats it on t1 in seed 0 only.
    assert checkpoint.loc["ExMe", "wins vs best input model"] == "1/4"
    # The expert with the best dev mean is expert a (0.45 vs 0.4); ties beats it on t2 in both seeds.
    assert expert.loc["ties", "wins vs best input model"] == "2/4"
    assert expert.loc["ties", "wins vs ExMe"] == "–"  # ExMe is on the checkpoint track only


def test_each_method_is_paired_with_its_references():
    table = synthetic_table()
    paired = (
        paired_differences(table, synthetic_items(table))
        .set_index(["track", "label", "reference", "task"])
        .sort_index()
    )
    references = {key[:3] for key in paired.index}
    # The best input (SFT-1, the same model: not compared with itself), ExMe, the static merge refined.
    assert ("checkpoint", "ExMe", "best input model") in references
    assert ("checkpoint", "SFT-1", "best input model") not in references
    assert ("checkpoint", "m3_linear", "linear") in references
    assert paired.loc[("checkpoint", "EXPO-1", "SFT-1", MEAN_TASK), "difference"] == 0  # α = 0 in effect
    assert ("expert", "ties", "best input model") in references and (
        "expert",
        "ties",
        "ExMe",
    ) not in references
    # ExMe vs SFT-1 on t1: 0.6 vs 0.5 and 0.6 vs 0.6 over the two seeds: +0.05; on t2 0.
    exme = paired.loc[("checkpoint", "ExMe", "best input model")]
    assert exme.loc["t1", "difference"] == pytest.approx(0.05) and exme.loc["t2", "difference"] == 0
    assert exme.loc[MEAN_TASK, "difference"] == pytest.approx(0.025)
    assert exme.loc["t1", "low"] <= 0.05 <= exme.loc["t1", "high"] and exme.loc["t1", "test"] == "sign flip"
    # m3_linear (0.5) over linear (0.45) on every item of both seeds' tasks: 1 of 20 items each.
    m3 = paired.loc[("checkpoint", "m3_linear", "linear")]
    assert m3.loc[MEAN_TASK, "difference"] == pytest.approx(0.05)
    assert (paired["p_holm"] >= paired["p"]).all() and paired["p_holm"].le(1).all()


def test_one_seed_shows_lm_evals_standard_error_and_a_track_of_only_the_base_is_left_out():
    table = synthetic_table()
    table = table[(table["seed"] == 0) & (table["track"] != "expert")].assign(stderr=0.03)
    wide = comparison_table(table)
    assert wide.loc[("checkpoint", "SFT-1"), "t1"] == "0.500 ± 0.030"
    assert wide.loc[("checkpoint", "SFT-1"), MEAN_TASK] == f"0.500 ± {np.sqrt(2 * 0.03**2) / 2:.3f}"
    paired = paired_differences(table, synthetic_items(table))
    text = comparison_markdown("r", table, paired)
    assert "## Checkpoint track" in text and "## Expert track" not in text
    assert "Best input model (best mean dev score): seed 0: SFT-1 (`sft-20`)" in text
    tests = paired.groupby(paired["task"] == MEAN_TASK)["test"].unique()
    assert list(tests[False]) == ["McNemar exact"] and list(tests[True]) == [
        "sign flip"
    ]  # 0/1 items, one seed


def test_the_markdown_and_figure_are_written(tmp_path):
    table = synthetic_table()
    paired = paired_differences(table, synthetic_items(table))
    text = comparison_markdown("r", table, paired)
    assert "## Checkpoint track" in text and "## Expert track" in text and "seed(s) 0, 1" in text
    assert "10,000 resamples" in text and "wins vs ExMe" not in text.split("## Expert track")[1]
    plot_comparison(paired, str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_a_model_without_items_is_named():
    table = synthetic_table()
    items = synthetic_items(table)
    with pytest.raises(ExmeError, match="no 't1' items of exme: rerun its test evaluation"):
        paired_differences(table, items[~((items["model"] == "exme") & (items["task"] == "t1"))])

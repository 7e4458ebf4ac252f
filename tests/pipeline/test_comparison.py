"""The multi-seed comparison: mean ± sd over seeds by role, and win counts against references."""

import pandas as pd

from exme.pipeline.comparison import comparison_markdown, comparison_table, plot_comparison


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
        rows += _rows(seed, "checkpoint", "exme", "exme", "test", [0.6, 0.5])
        rows += _rows(seed, "checkpoint", "linear", "checkpoint-linear", "test", [0.45, 0.45])
        rows += _rows(seed, "expert", "ties", "expert-ties", "test", [0.65, 0.65])
        rows += _rows(seed, "expert", "m3_ties", "expert-m3_ties-d0", "test", [0.9, 0.9])  # a draw: left out
    return pd.DataFrame(rows)


def test_rows_are_roles_with_mean_and_sd_over_seeds_and_win_counts():
    wide = comparison_table(synthetic_table())
    checkpoint, expert = wide.loc["checkpoint"], wide.loc["expert"]
    assert set(checkpoint.index) == {"base", "SFT-1", "SFT-2", "ExMe", "linear"}
    assert set(expert.index) == {"base", "expert a", "expert b", "ties"}  # no M3 draw, no grid point
    assert checkpoint.loc["SFT-1", "t1"] == "0.550 ± 0.071"  # 0.5 and 0.6 over the two seeds
    # Best input on the checkpoint track is SFT-1 (best dev mean); ExMe beats it on t1 in seed 0 only.
    assert checkpoint.loc["ExMe", "wins vs best input model"] == "1/4"
    # The expert with the best dev mean is expert a (0.45 vs 0.4); ties beats it on t2 in both seeds.
    assert expert.loc["ties", "wins vs best input model"] == "2/4"
    assert expert.loc["ties", "wins vs ExMe"] == "4/4"


def test_the_markdown_and_figure_are_written(tmp_path):
    text = comparison_markdown("r", synthetic_table())
    assert "## Checkpoint track" in text and "## Expert track" in text and "2 seed(s) (0, 1)" in text
    plot_comparison(synthetic_table(), str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").stat().st_size > 10_000

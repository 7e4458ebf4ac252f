"""Recipes carry their own description, and the score table is built from those descriptions alone."""

import pandas as pd
import pytest

from exme.errors import ExmeError
from exme.files import write_json
from exme.pipeline.config import check_rule_resources
from exme.pipeline.recipes import Checkpoint, exme_recipe, expo_recipe
from exme.pipeline.scores import COLUMNS, tidy_scores
from exme.pipeline.selection import best_on_grid, checkpoint_at, chosen_alpha, selected_checkpoints, top_k

SELECTION = {
    "selected": [{"rank": 1, "model": "sft-20", "step": 20}, {"rank": 2, "model": "sft-10", "step": 10}]
}


def test_selected_checkpoints_live_in_step_folders():
    checkpoints = selected_checkpoints(SELECTION, "out/sft")
    assert checkpoints == [
        Checkpoint("sft-20", 1, "out/sft/step-20"),
        Checkpoint("sft-10", 2, "out/sft/step-10"),
    ]
    assert chosen_alpha({"chosen": {"2": {"alpha": 0.1}}}, 2) == 0.1


def test_the_recipes_hold_the_formula_and_describe_the_model():
    first, second = selected_checkpoints(SELECTION, "sft")
    expo = expo_recipe("base", first, 0.25)
    assert expo.merge_method == "extrapolate" and expo.models[0].parameters == {"alpha": 0.25}
    assert expo.metadata == {
        "method": "expo",
        "track": "checkpoint",
        "source": "sft-20",
        "rank": 1,
        "alpha": 0.25,
    }
    exme = exme_recipe("base", [first, second], [0.1, 0.0], 0.75, "bfloat16")
    assert [m.parameters for m in exme.models] == [
        {"alpha": 0.1, "weight": 0.75},
        {"alpha": 0.0, "weight": 0.25},
    ]
    assert exme.dtype == "bfloat16" and exme.tokenizer_source == "sft/step-20"
    assert exme.metadata == {"method": "exme", "track": "checkpoint", "source": "sft-20+sft-10", "beta": 0.75}


def test_any_checkpoint_extrapolated_is_described_without_a_rank_and_plotted(tmp_path):
    from exme.pipeline.report import plot_checkpoint_extrapolation

    checkpoint = checkpoint_at("out/sft", 30)
    assert checkpoint == Checkpoint("sft-30", None, "out/sft/step-30")
    expo = expo_recipe("base", checkpoint, 0.5)
    assert expo.metadata == {"method": "expo", "track": "checkpoint", "source": "sft-30", "alpha": 0.5}
    rows = (
        [
            {"model": f"sft-{step}", "method": "sft", "source": f"sft-{step}", "rank": None, "alpha": None}
            for step in (10, 20)
        ]
        + [
            {
                "model": f"expo-step{step}-a{alpha:g}",
                "method": "expo",
                "source": f"sft-{step}",
                "rank": None,
                "alpha": alpha,
            }
            for step in (10, 20)
            for alpha in (0.1, 0.5)
        ]
        + [{"model": "expo1-a0.1", "method": "expo", "source": "sft-20", "rank": 1, "alpha": 0.1}]
    )
    table = pd.DataFrame(
        [{**row, "split": "dev", "task": task, "value": 0.5} for row in rows for task in ("t1", "t2")]
    )
    plot_checkpoint_extrapolation(table, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").stat().st_size > 0
    with pytest.raises(ExmeError, match="no extrapolated checkpoints"):
        plot_checkpoint_extrapolation(table[table["method"] == "sft"], tmp_path / "none.png")


def test_the_score_table_reads_each_models_description(tmp_path):
    evaluations = {
        ("shared", "base"): {"method": "base", "track": "shared"},
        ("seed3", "sft-20"): {"method": "sft", "track": "checkpoint", "source": "sft-20"},
        ("seed3", "expo1-a0.5"): {
            "method": "expo",
            "track": "checkpoint",
            "source": "sft-20",
            "rank": 1,
            "alpha": 0.5,
        },
        ("seed3", "new-method"): {"method": "linear", "track": "expert", "source": "a+b", "weight": 0.3},
        ("seed4", "sft-20"): {"method": "sft", "track": "checkpoint", "source": "sft-20"},
    }
    paths = []
    for (scope, model), description in evaluations.items():
        paths.append(tmp_path / f"{scope}-{model}.json")
        scores = [{"task": t, "metric": "acc", "value": v} for t, v in (("t1", 0.5), ("t2", 0.25))]
        evaluation = {
            "model": model,
            "scope": scope,
            "split": "dev",
            "description": description,
            "scores": scores,
        }
        write_json(paths[-1], evaluation)
    selections = {3: SELECTION, 4: {"selected": []}}
    table = tidy_scores(paths, selections=selections, seeds=[3, 4])
    assert list(table.columns) == [*COLUMNS, "weight"]  # a method's own coefficient becomes a column
    assert len(table) == 2 * 6 and set(table["seed"]) == {3, 4}
    assert len(table[table["model"] == "base"]) == 4  # the shared base model, once per seed
    rows = table.drop_duplicates(["model", "seed"]).set_index(["seed", "model"])
    assert rows.loc[(3, "sft-20"), "rank"] == 1 and pd.isna(rows.loc[(4, "sft-20"), "rank"])  # per seed
    assert pd.isna(rows.loc[(3, "base"), "rank"]) and rows.loc[(3, "expo1-a0.5"), "alpha"] == 0.5
    assert rows.loc[(3, "new-method"), "weight"] == 0.3


def test_selection_prefers_the_earlier_model_and_the_first_grid_point_on_ties():
    assert top_k({"sft-10": 0.5, "sft-20": 0.7, "sft-30": 0.5}, 2) == ["sft-20", "sft-10"]
    assert best_on_grid({0.0: 0.4, 0.1: 0.6, 0.2: 0.6}) == 0.1
    with pytest.raises(ExmeError, match="cannot select 3 models out of 2"):
        top_k({"a": 1.0, "b": 0.0}, 3)


def test_a_resources_entry_must_name_a_rule():
    check_rule_resources({"default": {}, "finetune": {}}, ["finetune", "evaluate"])
    with pytest.raises(ExmeError, match="resources.fine_tune: no rule of that name"):
        check_rule_resources({"fine_tune": {}}, ["finetune", "evaluate"])


def test_standard_errors_reach_the_table_and_the_comparison_figure(tmp_path):
    from exme.pipeline.report import plot_comparison, task_stderrs

    paths = []
    for model, shift in (
        ("base", 0.0),
        ("sft-20", 0.2),
        ("sft-10", 0.1),
        ("expo1", 0.3),
        ("expo2", 0.25),
        ("exme", 0.4),
    ):
        scores = [
            {"task": "t1", "metric": "acc", "value": 0.3 + shift, "stderr": 0.03},
            {"task": "t2", "metric": "acc", "value": 0.2 + shift, "stderr": 0.04},
        ]
        paths.append(tmp_path / f"{model}.json")
        evaluation = {"model": model, "scope": "seed0", "split": "test", "description": {"method": "x"}}
        write_json(paths[-1], {**evaluation, "scores": scores})
    table = tidy_scores(paths, selections={0: SELECTION}, seeds=[0])
    assert list(table["stderr"].unique()) == [0.03, 0.04]
    errors = task_stderrs(table).loc[("test", "exme")]
    assert errors["t1"] == 0.03 and errors["mean"] == pytest.approx((0.03**2 + 0.04**2) ** 0.5 / 2)
    plot_comparison(table, SELECTION, tmp_path / "comparison.png")
    assert (tmp_path / "comparison.png").stat().st_size > 10_000


def test_the_seeds_tables_combine_into_one(tmp_path):
    from exme.pipeline.scores import combined

    rows = {
        "model": "base",
        "method": "base",
        "track": "shared",
        "task": "t",
        "split": "dev",
        "metric": "acc",
    }
    for seed in (1, 0):
        extra = {"draw": 2} if seed else {}
        pd.DataFrame([{**rows, "value": 0.5, "seed": seed, **extra}]).to_csv(
            tmp_path / f"{seed}.csv", index=False
        )
    table = combined([tmp_path / "1.csv", tmp_path / "0.csv"])
    assert list(table["seed"]) == [0, 1] and list(table.columns) == [*COLUMNS, "draw"]


def test_test_items_make_a_compact_table_per_seed(tmp_path):
    from exme.pipeline.scores import ITEM_COLUMNS, combined_items, tidy_items, write_items

    scores = [{"task": "t", "metric": "acc", "value": 0.5}]
    paths = []
    for scope, model, split in (
        ("shared", "base", "test"),
        ("seed3", "exme", "test"),
        ("seed3", "exme", "dev"),
    ):
        paths.append(tmp_path / f"{scope}-{model}-{split}.json")
        items = {"t": {"item": [7, 2], "value": [1.0, 0.0]}}
        evaluation = {"model": model, "scope": scope, "split": split, "description": {}, "scores": scores}
        write_json(paths[-1], {**evaluation, "items": items})
    table = tidy_items(paths, seeds=[3, 4])
    assert list(table.columns) == ITEM_COLUMNS
    # The base in both seeds, ExMe in its own; the dev evaluation keeps no items.
    assert table.groupby(["seed", "model"]).size().to_dict() == {
        (3, "base"): 2,
        (3, "exme"): 2,
        (4, "base"): 2,
    }
    assert list(table[table["model"] == "exme"]["item"]) == [2, 7]  # sorted by item
    write_items(table[table["seed"] == 4], tmp_path / "4.csv.gz")
    write_items(table[table["seed"] == 3], tmp_path / "3.csv.gz")
    both = combined_items([tmp_path / "4.csv.gz", tmp_path / "3.csv.gz"])
    pd.testing.assert_frame_equal(both, table)

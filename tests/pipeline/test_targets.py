"""Which models each split evaluates, and what `rule all` asks for."""

from exme.pipeline.targets import expert_models, final_targets, merge_models, models_on_dev, models_on_test


def test_dev_evaluates_what_the_choices_read_and_test_what_the_comparison_reports():
    dev = models_on_dev([10, 20], [1, 2], [0.0, 0.5], [0.0, 1.0])
    assert dev == [
        "base", "sft-10", "sft-20",
        "expo1-a0", "expo1-a0.5", "expo2-a0", "expo2-a0.5",
        "exme-b0", "exme-b1",
    ]  # fmt: skip
    test = models_on_test([10, 20], [1, 2])
    assert test == ["base", "sft-10", "sft-20", "expo1", "expo2", "exme"]
    assert not set(test) & {name for name in dev if "-a" in name or "-b" in name}  # no grid point on test


def test_merge_systems_evaluate_grid_points_on_dev_and_m3_draws_on_test_too():
    settings = {"task_arithmetic": {"scaling_grid": [0.5, 1.0]}, "mixup": {"draws": 2}}
    models = merge_models("expert", ["linear", "task_arithmetic", "m3_ties"], settings)
    assert models["dev"] == [
        "expert-task_arithmetic-s0.5", "expert-task_arithmetic-s1", "expert-m3_ties-d0", "expert-m3_ties-d1",
    ]  # fmt: skip
    assert models["test"] == [
        "expert-linear", "expert-task_arithmetic", "expert-m3_ties", "expert-m3_ties-d0", "expert-m3_ties-d1",
    ]  # fmt: skip
    assert expert_models(["arith", "count"]) == ["ft-arith", "ft-count"]


def test_the_final_targets_hold_every_figure_and_the_final_model_of_every_seed():
    targets = final_targets("results/r", ["seed0", "seed1"], ["t1", "t2"], ["expert"])
    assert {"results/r/scores.csv", "results/r/comparison.md", "results/r/figures/comparison.png"} <= set(
        targets
    )
    for scope in ("seed0", "seed1"):
        assert (
            f"results/r/{scope}/final" in targets and f"results/r/{scope}/figures/mixup_expert.png" in targets
        )
        assert [t for t in targets if "extrapolation" in t and scope in t] == [
            f"results/r/{scope}/figures/extrapolation_{task}.png" for task in ("t1", "t2", "mean")
        ]


def test_every_checkpoint_is_extrapolated_over_the_grid_but_alpha_0_in_one_batch():
    from exme.pipeline.catalogue import match_name, single_model_pattern
    from exme.pipeline.targets import checkpoint_extrapolation_models, evaluation_batches

    models = checkpoint_extrapolation_models([10, 20], [0.0, 0.1, 0.5])
    assert models == ["expo-step10-a0.1", "expo-step10-a0.5", "expo-step20-a0.1", "expo-step20-a0.5"]
    assert models_on_dev([10, 20], [1], [0.0, 0.1, 0.5], [0.5], [10, 20])[-4:] == models
    assert evaluation_batches([1], [0.0, 0.1, 0.5], [0.5], {}, {}, [10, 20])["expo_step_grid"] == models
    assert "expo_step_grid" not in evaluation_batches([1], [0.1], [0.5], {}, {})
    assert match_name("expo_step_grid", "expo-step20-a0.5") == {"step": "20", "alpha": "0.5"}
    import re

    assert not re.fullmatch(single_model_pattern(), "expo-step20-a0.5")  # a grid: evaluated in its batch
    targets = final_targets("results/r", ["seed0"], ["t"], [], every_checkpoint=True)
    assert "results/r/seed0/figures/extrapolation_checkpoints.png" in targets
    assert "results/r/seed0/figures/extrapolation_checkpoints.png" not in final_targets(
        "results/r", ["seed0"], ["t"], []
    )


def test_grids_split_into_jobs_of_at_most_n_models():
    from exme.pipeline.targets import split_batches

    batches = {"a": ["m1", "m2", "m3", "m4", "m5"], "b": ["n1", "n2"]}
    assert split_batches(batches, None) == batches
    assert split_batches(batches, 2) == {
        "a-part1": ["m1", "m2"], "a-part2": ["m3", "m4"], "a-part3": ["m5"], "b": ["n1", "n2"],
    }  # fmt: skip

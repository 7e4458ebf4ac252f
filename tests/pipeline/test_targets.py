"""Which models each split evaluates, and what `rule all` asks for."""

from exme.pipeline.targets import final_targets, models_on_dev, models_on_test


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


def test_the_final_targets_hold_every_figure_and_the_final_model():
    targets = final_targets("results/r", ["t1", "t2"])
    assert "results/r/final" in targets and "results/r/scores.csv" in targets
    assert [t for t in targets if "extrapolation" in t] == [
        f"results/r/figures/extrapolation_{task}.png" for task in ("t1", "t2", "mean")
    ]

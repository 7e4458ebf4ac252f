"""The run's comparison: every method on both tracks on the test split, its mean score per task and
on the mean over tasks, and its paired difference against its reference models on the same test
items, with a bootstrap interval and a p-value (exme.pipeline.paired).

Rows are labelled by role, not by file name, so that seeds line up: the rank-r selected checkpoint
is `SFT-r` whichever step it was in a seed. The best input model of a track and seed is the input
model with the best mean dev score (the test split never chooses anything). A method's references:
the best input model; ExMe (on the checkpoint track, where ExMe is); and the static merge it refines
(SE-Merging: the track's task-arithmetic merge; an M³ variant: the same method at a fixed ratio;
EXPO-r: SFT-r).
"""

import numpy as np
import pandas as pd

from exme.errors import ExmeError
from exme.pipeline.catalogue import FINAL, match_name
from exme.pipeline.figures import plt, save_figure
from exme.pipeline.paired import LEVEL, RESAMPLES, SEED, compare, holm
from exme.pipeline.report import mean_stderr
from exme.pipeline.targets import MEAN_TASK

BEST_INPUT = "best input model"
EXME = "ExMe"
TRACKS = ("checkpoint", "expert")
INPUT_METHODS = {"checkpoint": "sft", "expert": "expert"}
STATIC_OF = {"se_merging": "task_arithmetic"}  # besides M³ (the same method at a fixed ratio) and EXPO
PAIRED_COLUMNS = ["track", "label", "reference", "task", "difference", "low", "high", "p", "test"]


def _label(row: pd.Series) -> str | None:
    """A row's label in the comparison; None for models it leaves out (grid points, unselected
    checkpoints)."""
    method, model = row["method"], row["model"]
    if method == "base":
        return "base"
    if method == "sft":
        return None if pd.isna(row["rank"]) else f"SFT-{int(row['rank'])}"
    if method == "expert":
        return f"expert {row['source']}"
    if method == "expo":
        return f"EXPO-{int(row['rank'])}"
    if method == "exme":
        return EXME if model == FINAL else None
    return None if match_name("merge_point", model) else method


def static_reference(label: str) -> str | None:
    """The label of the static merge a method refines, if it refines one."""
    if label.startswith("EXPO-"):
        return label.replace("EXPO-", "SFT-")
    if label.startswith("m3_"):
        return label.removeprefix("m3_")
    return STATIC_OF.get(label)


def labelled(table: pd.DataFrame) -> pd.DataFrame:
    """Test rows with their label, the mean over tasks added as task `mean`, per track; the base
    (shared by both tracks) appears in each. Keeps each row's model and lm-eval standard error."""
    test = table[table["split"] == "test"].copy()
    test["label"] = test.apply(_label, axis=1)
    test = test.dropna(subset=["label"])
    shared = test[test["track"] == "shared"]
    test = pd.concat([test[test["track"] != "shared"], *(shared.assign(track=t) for t in TRACKS)])
    if "stderr" not in test:
        test["stderr"] = np.nan
    means = (
        test.groupby(["track", "label", "model", "seed"], as_index=False)
        .agg(value=("value", "mean"), stderr=("stderr", mean_stderr))
        .assign(task=MEAN_TASK)
    )
    columns = ["track", "label", "model", "seed", "task", "value", "stderr"]
    return pd.concat([test[columns], means[columns]], ignore_index=True)


def best_input_models(table: pd.DataFrame) -> pd.DataFrame:
    """Per track and seed, the input model with the best mean dev score: [track, seed, model]."""
    rows = []
    for track, method in INPUT_METHODS.items():
        inputs = table[(table["method"] == method) & (table["track"] == track) & (table["split"] == "dev")]
        if method == "sft":
            inputs = inputs[inputs["rank"].notna()]
        for seed, of_seed in inputs.groupby("seed"):
            rows.append(
                {"track": track, "seed": seed, "model": of_seed.groupby("model")["value"].mean().idxmax()}
            )
    return pd.DataFrame(rows, columns=["track", "seed", "model"])


def _wins(scores: pd.DataFrame, reference: pd.DataFrame) -> pd.Series:
    """Per (track, label): in how many (seed, task) pairs, tasks only, the label beats the reference."""
    tasks = scores[scores["task"] != MEAN_TASK]
    joined = tasks.merge(reference, on=["track", "seed", "task"], suffixes=("", "_reference"))
    won = (joined["value"] > joined["value_reference"]).groupby([joined["track"], joined["label"]])
    return won.sum().astype(int).astype(str) + "/" + won.size().astype(str)


def _cell(values: pd.Series, stderrs: pd.Series) -> str:
    """Over several seeds: mean ± sd over seeds; over one: the value ± lm-eval's standard error."""
    if len(values) > 1:
        return f"{values.mean():.3f} ± {values.std():.3f}"
    stderr = stderrs.iloc[0]
    return f"{values.iloc[0]:.3f}" + ("" if pd.isna(stderr) else f" ± {stderr:.3f}")


def comparison_table(table: pd.DataFrame) -> pd.DataFrame:
    """Rows (track, label); columns each task and the mean, and the win counts against the best
    input model and (on the checkpoint track) against ExMe."""
    scores = labelled(table)
    cells = scores.groupby(["track", "label", "task"]).apply(
        lambda group: _cell(group["value"], group["stderr"]), include_groups=False
    )
    wide = cells.unstack("task")
    wide = wide[[c for c in wide.columns if c != MEAN_TASK] + [MEAN_TASK]]
    best = best_input_models(table).merge(scores, on=["track", "seed", "model"])
    wide["wins vs " + BEST_INPUT] = _wins(scores, best[["track", "seed", "task", "value"]])
    exme = scores[(scores["label"] == EXME) & (scores["track"] == "checkpoint")]
    if not exme.empty:
        wins = _wins(scores[scores["track"] == "checkpoint"], exme[["track", "seed", "task", "value"]])
        wide["wins vs ExMe"] = wins.reindex(wide.index)
        wide.loc[(slice(None), EXME), "wins vs ExMe"] = "–"
    return wide.loc[sorted(wide.index, key=_row_order)].fillna("–")


def _row_order(row: tuple[str, str]) -> tuple:
    """The base, the input models, ExMe's chain, then the other methods by name."""
    track, label = row
    roles = ("base", "SFT-", "expert ", "EXPO-", EXME)
    rank = next((index for index, prefix in enumerate(roles) if label.startswith(prefix)), len(roles))
    return TRACKS.index(track), rank, label


def _item_arrays(
    items: dict[tuple, pd.Series], models: dict[int, str], tasks: list[str]
) -> dict[str, np.ndarray]:
    """Per task, the (seeds × items) values of the model each seed names, items in a fixed order."""
    arrays = {}
    for task in tasks:
        missing = [model for seed, model in models.items() if (seed, model, task) not in items]
        if missing:
            raise ExmeError(
                f"items.csv.gz holds no {task!r} items of {', '.join(sorted(set(missing)))}: "
                "rerun its test evaluation (evaluation files written before items were kept have none)"
            )
        rows = [items[(seed, model, task)] for seed, model in sorted(models.items())]
        if any(not row.index.equals(rows[0].index) for row in rows):
            raise ExmeError(f"items.csv.gz: the seeds' evaluations of {task!r} hold different items")
        arrays[task] = np.vstack([row.to_numpy() for row in rows])
    return arrays


def paired_differences(table: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Every method against each of its references, per task and on the mean over tasks: the
    difference, its interval, the p-value and its test, and the Holm-adjusted p-value over every
    test in the table. A reference that is the same model in every seed is not compared."""
    scores = labelled(table)
    models = scores[scores["task"] == MEAN_TASK].set_index(["track", "label", "seed"])["model"]
    best = best_input_models(table).set_index(["track", "seed"])["model"]
    tasks = sorted(set(items["task"]))
    by_model = {
        key: of["value"].set_axis(of["item"]).sort_index()
        for key, of in items.groupby(["seed", "model", "task"])
    }
    rows = []
    for track, label in sorted({key[:2] for key in models.index}, key=_row_order):
        own = models.loc[(track, label)].to_dict()
        references = {BEST_INPUT: {seed: best.get((track, seed)) for seed in own}}
        for name in ([EXME] if track == "checkpoint" else []) + [static_reference(label)]:
            if name is not None and name != label and (track, name) in models.index.droplevel("seed"):
                references[name] = {seed: models.get((track, name, seed)) for seed in own}
        for reference, reference_models in references.items():
            if not tasks or None in reference_models.values() or reference_models == own:
                continue
            compared = compare(
                _item_arrays(by_model, own, tasks), _item_arrays(by_model, reference_models, tasks)
            )
            for task, result in compared.items():
                values = (result["difference"], *result["interval"], result["p"], result["test"])
                rows.append([track, label, reference, task, *values])
    paired = pd.DataFrame(rows, columns=PAIRED_COLUMNS)
    paired["p_holm"] = holm(paired["p"]) if len(paired) else []
    return paired


def _difference_cell(row: pd.Series) -> str:
    return f"{row['difference']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]"


def _paired_sections(paired: pd.DataFrame) -> list[str]:
    mean = paired[paired["task"] == MEAN_TASK].copy()
    mean["Δ [95% CI]"] = mean.apply(_difference_cell, axis=1)
    mean["p"] = mean["p"].map("{:.3g}".format)
    mean["p (Holm)"] = mean["p_holm"].map("{:.3g}".format)
    headline = mean.rename(columns={"label": "method", "reference": "vs"})
    per_task = paired[paired["task"] != MEAN_TASK].copy()
    per_task["cell"] = per_task.apply(lambda r: f"{_difference_cell(r)} (p {r['p_holm']:.2g})", axis=1)
    wide = per_task.pivot(index=["label", "reference"], columns="task", values="cell")
    wide = wide.loc[[(r["label"], r["reference"]) for _, r in mean.iterrows()]]
    wide.index.names = ["method", "vs"]
    return [
        "### Paired differences on test, mean over tasks",
        headline[["method", "vs", "Δ [95% CI]", "p", "p (Holm)", "test"]].to_markdown(index=False),
        "### Paired differences per task (Δ [95% CI], Holm-adjusted p)",
        wide.reset_index().to_markdown(index=False),
    ]


def _methods_text(n_seeds: int, n_tests: int) -> str:
    over = "the items within each task" + (
        " and, independently, the seeds (every seed scores the same items)" if n_seeds > 1 else ""
    )
    return (
        "Paired differences: Δ = method − reference on the same test items, per task and on the "
        f"mean over tasks. {LEVEL:.0%} interval: percentile bootstrap over {over}, {RESAMPLES:,} "
        f"resamples from a generator seeded with {SEED}. p: McNemar's exact test for a 0/1 metric "
        "on one seed, otherwise a two-sided sign-flip permutation test on the per-item differences"
        + (" averaged over seeds" if n_seeds > 1 else "")
        + f" (stratified by task for the mean; exact, or {RESAMPLES:,} random flips); 'p (Holm)' "
        f"is Holm's correction over all {n_tests} tests in this file. References: the best input "
        "model (best mean dev score, per seed), ExMe, and the static merge a method refines "
        "(SE-Merging: the track's task arithmetic; M³: the same method at a fixed ratio; EXPO-r: SFT-r)."
    )


def comparison_markdown(run: str, table: pd.DataFrame, paired: pd.DataFrame) -> str:
    """The per-method table of means and, per track, the paired differences (paired_differences)."""
    seeds = sorted(table["seed"].unique())
    wide = comparison_table(table)
    spread = (
        f"mean ± standard deviation over {len(seeds)} seeds"
        if len(seeds) > 1
        else "one seed: each score ± lm-eval's standard error (of the mean over tasks: √(Σ se²) / tasks)"
    )
    sections = [
        f"# Comparison, run `{run}`",
        f"Test split, {spread}; seed(s) {', '.join(map(str, seeds))}. Wins count the (seed, task) "
        "pairs in which a method's test score is higher than the reference's.",
        _methods_text(len(seeds), len(paired)),
    ]
    best = best_input_models(table).merge(
        labelled(table)[["track", "seed", "model", "label"]].drop_duplicates()
    )
    for track in TRACKS:
        if track not in wide.index.get_level_values("track") or set(wide.loc[track].index) == {"base"}:
            continue
        sections.append(f"## {track.capitalize()} track")
        chosen = best[best["track"] == track]
        if not chosen.empty:
            named = "; ".join(
                f"seed {r['seed']}: {r['label']} (`{r['model']}`)" for _, r in chosen.iterrows()
            )
            sections.append(f"Best input model (best mean dev score): {named}.")
        columns = [c for c in wide.columns if track == "checkpoint" or c != "wins vs ExMe"]
        sections.append(wide.loc[track, columns].to_markdown())
        of_track = paired[paired["track"] == track]
        if not of_track.empty:
            sections += _paired_sections(of_track)
    return "\n\n".join(sections) + "\n"


def plot_comparison(paired: pd.DataFrame, path: str) -> None:
    """A forest plot per track: each method's paired difference against each reference on the mean
    over tasks (paired_differences), with its interval, and the reference's line at 0."""
    mean = paired[paired["task"] == MEAN_TASK]
    tracks = [track for track in TRACKS if track in set(mean["track"])]
    if not tracks:
        raise ExmeError("no paired comparison to plot: the run has no method with a reference model")
    heights = [len(mean[mean["track"] == track]) for track in tracks]
    fig, axes = plt.subplots(
        len(tracks), 1, figsize=(7, 1.5 + 0.22 * sum(heights)), squeeze=False, height_ratios=heights
    )
    # One colour per kind of reference: the best input model, ExMe, the static merge refined.
    kinds = mean["reference"].where(mean["reference"].isin([BEST_INPUT, EXME]), "the static merge it refines")
    colors = {kind: f"C{index}" for index, kind in enumerate(dict.fromkeys(kinds))}
    for ax, track in zip(axes[:, 0], tracks, strict=True):
        rows = mean[mean["track"] == track].reset_index(drop=True)
        y = np.arange(len(rows))[::-1]
        for kind, of_kind in rows.groupby(kinds[mean["track"] == track].to_numpy(), sort=False):
            errors = [of_kind["difference"] - of_kind["low"], of_kind["high"] - of_kind["difference"]]
            ax.errorbar(
                of_kind["difference"], y[of_kind.index], xerr=errors, fmt="o", capsize=2, color=colors[kind],
                label=f"vs {kind}",
            )  # fmt: skip
        ax.axvline(0, color="gray", linewidth=1)
        ax.set_yticks(y)
        ax.set_yticklabels([f"{r['label']} − {r['reference']}" for _, r in rows.iterrows()], fontsize=7)
        ax.set_title(
            f"{track} track: test difference, mean over tasks, {LEVEL:.0%} bootstrap interval",
            fontsize=9,
        )
        ax.legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("difference in test score (method − reference)")
    save_figure(fig, path)

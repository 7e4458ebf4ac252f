"""Figures and the Markdown summary of a run, drawn from its tidy score table."""

import os
from collections.abc import Sequence

import pandas as pd

from exme.errors import ExmeError
from exme.pipeline.catalogue import BASE, FINAL, model_name, sft_step
from exme.pipeline.figures import plt, save_figure
from exme.pipeline.targets import MEAN_TASK as MEAN


def task_means(table: pd.DataFrame) -> pd.DataFrame:
    """Scores per model and split with one column per task and the task mean (the paper's 'overall')."""
    wide = table.pivot_table(index=["split", "model"], columns="task", values="value", aggfunc="first")
    wide[MEAN] = wide.mean(axis=1)
    return wide


def _task_values(table: pd.DataFrame, task: str) -> pd.Series:
    """Score per model of one task, or of the task mean."""
    if task == MEAN:
        return table.groupby("model")["value"].mean()
    return table[table["task"] == task].set_index("model")["value"]


def plot_extrapolation(
    table: pd.DataFrame, selection: dict, alphas: dict, task: str, path: str | os.PathLike
) -> None:
    """Dev score against alpha for each selected checkpoint, its SFT score dashed (paper Figs. 3-5)."""
    dev = table[table["split"] == "dev"]
    values = _task_values(dev, task)
    fig, ax = plt.subplots(figsize=(6, 4))
    for entry in selection["selected"]:
        rank, sft_model = entry["rank"], entry["model"]
        grid = dev[(dev["method"] == "expo") & (dev["rank"] == rank) & dev["alpha"].notna()]
        curve = values[grid["model"].unique()].rename(grid.groupby("model")["alpha"].first()).sort_index()
        line = ax.plot(curve.index, curve.values, marker="o", label=f"EXPO-{rank} (from {sft_model})")[0]
        ax.axhline(values[sft_model], linestyle="--", color=line.get_color(), label=f"{sft_model} (SFT)")
        chosen = alphas["chosen"][str(rank)]["alpha"]
        ax.plot([chosen], [curve[chosen]], marker="*", markersize=14, color=line.get_color())
    ax.set_xlabel("extrapolation coefficient α")
    ax.set_ylabel(f"dev score ({'mean over tasks' if task == MEAN else task})")
    ax.set_title(f"Extrapolation: {task} (★ = chosen α)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_checkpoint_extrapolation(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Dev score (mean over tasks) against alpha for every checkpoint extrapolated from the base,
    one panel per checkpoint, its SFT score dashed (the paper's Fig. 5; α = 0 is the checkpoint)."""
    dev = table[table["split"] == "dev"]
    means = dev.groupby("model")["value"].mean()
    grid = dev[(dev["method"] == "expo") & dev["rank"].isna() & dev["alpha"].notna()]
    checkpoints = sorted(grid["source"].unique(), key=sft_step)
    if not checkpoints:
        raise ExmeError("the score table has no extrapolated checkpoints (extrapolation.every_checkpoint)")
    columns = min(4, len(checkpoints))
    rows = -(-len(checkpoints) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False, sharey=True)
    for ax, checkpoint in zip(axes.flat, checkpoints, strict=False):
        points = grid[grid["source"] == checkpoint].groupby("model")["alpha"].first()
        curve = pd.concat(
            [pd.Series({0.0: means[checkpoint]}), means[points.index].rename(points)]
        ).sort_index()
        ax.plot(curve.index, curve.values, marker="o", color="tab:blue", label="extrapolated")
        ax.axhline(means[checkpoint], linestyle="--", color="tab:red", label="SFT")
        ax.set_title(checkpoint, fontsize=9)
        ax.set_xlabel("α")
    for ax in axes.flat[len(checkpoints) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("dev score (mean over tasks)")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Every checkpoint extrapolated from the base")
    save_figure(fig, path)


def plot_beta(table: pd.DataFrame, betas: dict, path: str | os.PathLike) -> None:
    """Dev score of ExMe against the merging weight beta, per task and on average."""
    dev = table[(table["split"] == "dev") & (table["method"] == "exme") & table["beta"].notna()]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for task in [*sorted(dev["task"].unique()), MEAN]:
        values = _task_values(dev, task)
        curve = values.rename(dev.groupby("model")["beta"].first()).sort_index()
        style = {"linewidth": 3, "color": "black"} if task == MEAN else {"alpha": 0.6}
        ax.plot(curve.index, curve.values, marker="o", label=task, **style)
    ax.axvline(betas["beta"], linestyle=":", color="gray", label=f"chosen β = {betas['beta']:g}")
    ax.set_xlabel("merging weight β (on EXPO-1)")
    ax.set_ylabel("dev score")
    ax.set_title("ExMe: merging the extrapolated checkpoints")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    save_figure(fig, path)


def comparison_models(selection: dict, ranks: Sequence[int]) -> dict[str, str]:
    """{model name: label} of the final comparison, in the paper's order."""
    models = {BASE: "base"}
    models |= {entry["model"]: f"SFT-{entry['rank']} ({entry['model']})" for entry in selection["selected"]}
    models |= {model_name("expo", rank=rank): f"EXPO-{rank}" for rank in ranks}
    models[FINAL] = "ExMe"
    return models


def mean_stderr(stderrs: pd.Series) -> float:
    """The standard error of a mean of independent scores, sqrt(sum of squares) / number of scores;
    NaN where any score has none."""
    return (stderrs**2).sum(min_count=len(stderrs)) ** 0.5 / len(stderrs)


def task_stderrs(table: pd.DataFrame) -> pd.DataFrame:
    """Standard errors in the layout of `task_means`: lm-eval's per task; for the task mean, that of
    a mean of independent scores, sqrt(sum of squares) / number of tasks."""
    if "stderr" not in table:
        table = table.assign(stderr=float("nan"))
    wide = table.pivot_table(
        index=["split", "model"], columns="task", values="stderr", aggfunc="first", dropna=False
    )
    wide = wide.reindex(task_means(table).index)
    wide[MEAN] = wide.apply(mean_stderr, axis=1)
    return wide


def plot_comparison(table: pd.DataFrame, selection: dict, path: str | os.PathLike) -> None:
    """Test scores of base, the selected SFT checkpoints, EXPO-k and ExMe, per task and on average,
    with lm-eval's standard errors as error bars."""
    ranks = [entry["rank"] for entry in selection["selected"]]
    models = comparison_models(selection, ranks)
    wide = task_means(table).loc["test"].loc[list(models)]
    errors = task_stderrs(table).loc["test"].loc[list(models)].reindex(columns=wide.columns)
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(wide.columns)), 4.5))
    width = 0.8 / len(models)
    for index, (model, label) in enumerate(models.items()):
        positions = [column + index * width for column in range(len(wide.columns))]
        ax.bar(
            positions,
            wide.loc[model].values,
            width=width,
            label=label,
            yerr=errors.loc[model].values,
            capsize=2,
        )
    ax.set_xticks([column + 0.4 - width / 2 for column in range(len(wide.columns))])
    ax.set_xticklabels(wide.columns)
    ax.set_ylabel("test score (error bars: ± 1 standard error)")
    ax.set_title("Test split: base, SFT, EXPO and ExMe")
    ax.legend(fontsize=8, ncols=2)
    save_figure(fig, path)


def summary_markdown(run: str, table: pd.DataFrame, selection: dict, alphas: dict, betas: dict) -> str:
    wide = task_means(table)
    ranks = [entry["rank"] for entry in selection["selected"]]
    models = comparison_models(selection, ranks)
    test = wide.loc["test"]
    best_sft = selection["selected"][0]["model"]
    gain = test.loc[FINAL, MEAN] - test.loc[best_sft, MEAN]
    ranking = pd.DataFrame(selection["ranking"]).set_index("model")[["dev_mean"]]
    alpha_curves = pd.DataFrame({f"EXPO-{rank}": curve for rank, curve in alphas["curves"].items()})
    alpha_curves.index.name = "alpha"
    beta_curve = pd.Series(betas["curve"], name="dev mean").rename_axis("beta").to_frame()
    chosen = ", ".join(f"EXPO-{rank}: α = {alphas['chosen'][str(rank)]['alpha']:g}" for rank in ranks)
    sections = [
        f"# ExMe run `{run}`",
        f"Selected checkpoints (top {len(ranks)} by mean dev score): "
        + ", ".join(f"{e['model']} ({e['dev_mean']:.3f})" for e in selection["selected"]),
        f"Chosen on dev: {chosen}; ExMe β = {betas['beta']:g} (weight on EXPO-1).",
        f"**ExMe vs the best SFT checkpoint ({best_sft}) on test, mean over tasks: "
        f"{test.loc[FINAL, MEAN]:.3f} vs {test.loc[best_sft, MEAN]:.3f} ({gain:+.3f}).**",
        "## Test split",
        test.loc[list(models)].rename(index=models).to_markdown(floatfmt=".3f"),
        "## All checkpoints, test split",
        test.loc[[entry["model"] for entry in selection["ranking"]]].to_markdown(floatfmt=".3f"),
        "## Checkpoint ranking (dev mean)",
        ranking.to_markdown(floatfmt=".3f"),
        "## Extrapolation search (dev mean over tasks)",
        alpha_curves.to_markdown(floatfmt=".3f"),
        "## Merging search (dev mean over tasks)",
        beta_curve.to_markdown(floatfmt=".3f"),
    ]
    return "\n\n".join(sections) + "\n"


def plot_mixup(table: pd.DataFrame, track: str, path: str | os.PathLike) -> None:
    """Dev and test score (mean over tasks) of every M³ draw against λ, per variant, with the
    variant's fixed-ratio baseline (the same method with uniform weights) as a line and the draw
    chosen on dev starred."""
    of_track = table[(table["track"] == track) & table["method"].str.startswith("m3_")]
    variants = sorted(of_track["method"].unique())
    fig, axes = plt.subplots(1, len(variants), figsize=(4.5 * len(variants), 3.8), squeeze=False)
    for ax, method in zip(axes[0], variants, strict=True):
        rows = of_track[of_track["method"] == method]
        chosen = model_name("merge", track=track, method=method)
        draws = rows[rows["model"] != chosen]
        for split, marker in (("dev", "o"), ("test", "s")):
            of_split = draws[draws["split"] == split]
            curve = of_split.groupby("lambda")["value"].mean().sort_index()
            line = ax.plot(curve.index, curve.values, marker=marker, linestyle="", label=f"draws ({split})")[
                0
            ]
            picked = rows[(rows["model"] == chosen) & (rows["split"] == split)]
            if not picked.empty:
                ax.plot([picked["lambda"].iloc[0]], [picked["value"].mean()], marker="*", markersize=14,
                        color=line.get_color())  # fmt: skip
        baseline = table[(table["track"] == track) & (table["model"] == model_name(
            "merge", track=track, method=method.removeprefix("m3_")))]  # fmt: skip
        for split, style in (("test", ":"),):
            values = baseline[baseline["split"] == split]["value"]
            if not values.empty:
                ax.axhline(values.mean(), linestyle=style, color="gray", label=f"fixed ratio ({split})")
        ax.set_xlabel("λ (weight of the first input model)")
        ax.set_ylabel("score (mean over tasks)")
        ax.set_title(f"{method} on the {track} track", fontsize=9)
        ax.legend(fontsize=7)
    save_figure(fig, path)

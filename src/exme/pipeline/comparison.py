"""The run's comparison: every method on both tracks on the test split, as the mean ± standard
deviation over seeds, with win counts against the best single input model and against ExMe.

Rows are labelled by role, not by file name, so that seeds line up: the rank-r selected checkpoint
is `SFT-r` whichever step it was in a seed. The best single input model of a track and seed is the
input model with the best mean dev score (the test split never chooses anything).
"""

import pandas as pd

from exme.pipeline.catalogue import FINAL, match_name
from exme.pipeline.figures import plt, save_figure
from exme.pipeline.targets import MEAN_TASK

BEST_INPUT = "best input model"
EXME = "ExMe"
TRACKS = ("checkpoint", "expert")
INPUT_METHODS = {"checkpoint": "sft", "expert": "expert"}


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


def labelled(table: pd.DataFrame) -> pd.DataFrame:
    """Test rows with their label, the mean over tasks added as task `mean`, per track; the base
    (shared by both tracks) appears in each."""
    test = table[table["split"] == "test"].copy()
    test["label"] = test.apply(_label, axis=1)
    test = test.dropna(subset=["label"])
    shared = test[test["track"] == "shared"]
    test = pd.concat([test[test["track"] != "shared"], *(shared.assign(track=t) for t in TRACKS)])
    means = test.groupby(["track", "label", "seed"], as_index=False)["value"].mean().assign(task=MEAN_TASK)
    return pd.concat([test[["track", "label", "seed", "task", "value"]], means], ignore_index=True)


def _best_inputs(table: pd.DataFrame) -> pd.DataFrame:
    """Per track and seed, the test scores of the input model with the best mean dev score."""
    rows = []
    for track, method in INPUT_METHODS.items():
        inputs = table[(table["method"] == method) & (table["track"] == track)]
        if method == "sft":
            inputs = inputs[inputs["rank"].notna()]
        for _seed, of_seed in inputs.groupby("seed"):
            dev = of_seed[of_seed["split"] == "dev"].groupby("model")["value"].mean()
            best = dev.idxmax()
            test = of_seed[(of_seed["split"] == "test") & (of_seed["model"] == best)]
            rows.append(test.assign(track=track))
    if not rows:
        return pd.DataFrame(columns=["track", "seed", "task", "value"])
    best = pd.concat(rows)
    means = best.groupby(["track", "seed"], as_index=False)["value"].mean().assign(task=MEAN_TASK)
    return pd.concat([best[["track", "seed", "task", "value"]], means], ignore_index=True)


def _wins(scores: pd.DataFrame, reference: pd.DataFrame) -> pd.Series:
    """Per (track, label): in how many (seed, task) pairs, tasks only, the label beats the reference."""
    tasks = scores[scores["task"] != MEAN_TASK]
    keys = ["seed", "task", *(["track"] if "track" in reference else [])]
    joined = tasks.merge(reference, on=keys, suffixes=("", "_reference"))
    won = (joined["value"] > joined["value_reference"]).groupby([joined["track"], joined["label"]])
    return won.sum().astype(int).astype(str) + "/" + won.size().astype(str)


def comparison_table(table: pd.DataFrame) -> pd.DataFrame:
    """Rows (track, label); columns each task and the mean as 'mean ± sd', and the win counts."""
    scores = labelled(table)
    stats = scores.groupby(["track", "label", "task"])["value"].agg(["mean", "std", "count"]).reset_index()
    stats["cell"] = stats.apply(
        lambda r: f"{r['mean']:.3f} ± {0 if pd.isna(r['std']) else r['std']:.3f}", axis=1
    )
    wide = stats.pivot(index=["track", "label"], columns="task", values="cell")
    wide = wide[[c for c in wide.columns if c != MEAN_TASK] + [MEAN_TASK]]
    wide["wins vs " + BEST_INPUT] = _wins(scores, _best_inputs(table))
    exme = scores[(scores["label"] == EXME) & (scores["track"] == "checkpoint")].drop(columns="track")
    wide["wins vs ExMe"] = _wins(scores, exme[["seed", "task", "value"]])
    return wide.loc[sorted(wide.index, key=_row_order)].fillna("–")


def _row_order(row: tuple[str, str]) -> tuple:
    """The base, the input models, ExMe's chain, then the other methods by name."""
    track, label = row
    roles = ("base", "SFT-", "expert ", "EXPO-", EXME)
    rank = next((index for index, prefix in enumerate(roles) if label.startswith(prefix)), len(roles))
    return TRACKS.index(track), rank, label


def comparison_markdown(run: str, table: pd.DataFrame) -> str:
    seeds = sorted(table["seed"].unique())
    wide = comparison_table(table)
    sections = [
        f"# Comparison, run `{run}`",
        f"Test split, mean ± standard deviation over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}). "
        "Wins count the (seed, task) pairs in which a method's test score is higher than the reference's.",
    ]
    for track in TRACKS:
        if track in wide.index.get_level_values("track"):
            sections += [f"## {track.capitalize()} track", wide.loc[track].to_markdown()]
    return "\n\n".join(sections) + "\n"


def plot_comparison(table: pd.DataFrame, path: str) -> None:
    """Mean test score over tasks per method, one panel per track, error bars over seeds."""
    scores = labelled(table)
    means = scores[scores["task"] == MEAN_TASK]
    tracks = [track for track in TRACKS if track in set(means["track"])]
    fig, axes = plt.subplots(1, len(tracks), figsize=(6 * len(tracks), 4.5), squeeze=False)
    for ax, track in zip(axes[0], tracks, strict=True):
        stats = means[means["track"] == track].groupby("label")["value"].agg(["mean", "std"]).fillna(0)
        stats = stats.loc[sorted(stats.index, key=lambda label, t=track: _row_order((t, label)))]
        ax.bar(range(len(stats)), stats["mean"], yerr=stats["std"], capsize=3, color="tab:blue")
        ax.set_xticks(range(len(stats)))
        ax.set_xticklabels(stats.index, rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{track} track (test, mean over tasks)")
        ax.set_ylabel("test score")
    save_figure(fig, path)

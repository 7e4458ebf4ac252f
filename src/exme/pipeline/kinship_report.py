"""Model kinship in the pipeline: the pairwise kinship table and heatmap of a track's input models,
and kinship against merge gain over all pairwise merges (Hu et al., arXiv 2410.12613, report a
Pearson correlation of -0.50 between kinship and gain; this shows what the run gives).

Merge gain = the merged model's mean dev score minus the mean of its parents' mean dev scores.
"""

import math
import os
from collections.abc import Mapping, Sequence
from statistics import NormalDist

import numpy as np
import pandas as pd

from exme.pipeline.figures import plt, save_figure
from exme.pipeline.greedy import Pool

METRIC_LABELS = {"pcc": "Pearson correlation", "cos": "cosine similarity", "ed": "Euclidean distance"}


def pearson_with_interval(
    x: Sequence[float], y: Sequence[float], level: float = 0.95
) -> tuple[float, float, float]:
    """Pearson r and its confidence interval (Fisher's z transform); NaN bounds below 4 points."""
    r = float(np.corrcoef(x, y)[0, 1])
    n = len(x)
    if n < 4 or not math.isfinite(r) or abs(r) >= 1:
        return r, math.nan, math.nan
    z, spread = math.atanh(r), NormalDist().inv_cdf((1 + level) / 2) / math.sqrt(n - 3)
    return r, math.tanh(z - spread), math.tanh(z + spread)


def kinship_table(matrix: Mapping, metric: str) -> pd.DataFrame:
    """The kinship matrix of one metric as a square table indexed by model."""
    return pd.DataFrame(matrix["values"][metric], index=matrix["models"], columns=matrix["models"])


def merge_gains(dev_means: Mapping[str, float], merges: Mapping[str, Sequence[str]]) -> pd.Series:
    """{merge: its mean dev score minus the mean of its parents'}."""
    return pd.Series(
        {
            merge: dev_means[merge] - float(np.mean([dev_means[p] for p in parents]))
            for merge, parents in merges.items()
        }
    )


def plot_heatmap(table: pd.DataFrame, metric: str, path: str | os.PathLike) -> None:
    fig, ax = plt.subplots(figsize=(1.2 * len(table) + 2, 1.1 * len(table) + 1.5))
    image = ax.imshow(table.values, cmap="viridis")
    ax.set_xticks(range(len(table)), table.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(table)), table.index)
    for (row, column), value in np.ndenumerate(table.values):
        ax.text(column, row, f"{value:.3g}", ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(image, ax=ax, label=METRIC_LABELS.get(metric, metric))
    ax.set_title(f"Kinship of the input models ({metric})")
    save_figure(fig, path)


def _gain_correlation(kinships: pd.Series, gains: pd.Series) -> str:
    x, y = kinships[gains.index].to_numpy(float), gains.to_numpy(float)
    r, low, high = pearson_with_interval(x, y) if len(x) > 1 else (math.nan, math.nan, math.nan)
    return f"Pearson r = {r:.2f} (95% CI {low:.2f} to {high:.2f}, n = {len(x)}); paper: −0.50"


def gain_markdown(
    kinships: pd.Series, gains: pd.Series, merges: Mapping[str, Sequence[str]], metric: str
) -> str:
    """The kinship and merge gain of every pairwise merge, and their correlation, as Markdown."""
    table = pd.DataFrame(
        {
            "parents": [" + ".join(merges[merge]) for merge in gains.index],
            f"kinship ({metric})": kinships[gains.index].to_numpy(float),
            "merge gain (dev)": gains.to_numpy(float),
        },
        index=gains.index,
    )
    correlation = _gain_correlation(kinships, gains)
    return f"## Kinship and merge gain\n\n{correlation}\n\n{table.to_markdown(floatfmt='.4f')}"


def plot_gain(kinships: pd.Series, gains: pd.Series, metric: str, path: str | os.PathLike) -> None:
    """Kinship of each merge's parents against its merge gain, with Pearson r and its 95% interval."""
    x, y = kinships[gains.index].to_numpy(float), gains.to_numpy(float)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(x, y)
    for name, xi, yi in zip(gains.index, x, y, strict=True):
        ax.annotate(name, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_title(_gain_correlation(kinships, gains), fontsize=9)
    ax.axhline(0, color="gray", linestyle=":")
    ax.set_xlabel(f"kinship of the parents ({METRIC_LABELS.get(metric, metric)})")
    ax.set_ylabel("merge gain (dev, mean over tasks)")
    save_figure(fig, path)


def best_per_generation(pool: Pool) -> list[float]:
    """The best dev score of the pool after each generation (0: the input models)."""
    return [
        max(m.score for m in pool.models if m.generation <= generation and m.score is not None)
        for generation in range(pool.generation + 1)
    ]


def greedy_markdown(pools: Mapping[str, Pool]) -> str:
    """The best dev score after each generation, per greedy variant, as Markdown."""
    table = pd.DataFrame({variant: pd.Series(best_per_generation(pool)) for variant, pool in pools.items()})
    table.index.name = "generation"
    return f"## Top-k greedy merging: best dev score so far\n\n{table.to_markdown(floatfmt='.4f')}"


def plot_greedy(pools: Mapping[str, Pool], path: str | os.PathLike) -> None:
    """The best dev score of the pool after each generation, per greedy variant."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, pool in pools.items():
        best = best_per_generation(pool)
        ax.plot(list(range(len(best))), best, marker="o", label=variant.replace("_", " with "))
    ax.set_xlabel("generation (0: the input models)")
    ax.set_ylabel("best dev score so far (mean over tasks)")
    ax.set_title("Top-k greedy merging")
    ax.legend(fontsize=8)
    save_figure(fig, path)

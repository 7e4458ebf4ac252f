"""Paired comparisons of two models scored on the same test items: the difference of their mean
scores with a bootstrap interval, a p-value, and Holm's correction over a family of tests.

A comparison holds, per task, a (seeds × items) array of per-item differences (model − reference),
the same items in every seed. The difference on a task is the mean of its array; on the task mean,
the mean of the tasks' differences (tasks weigh equally, as in the score table's `mean`).

Interval: percentile bootstrap. Items are resampled with replacement within each task (stratified
by task); with several seeds, the seeds are resampled too, independently of the items (items and
seeds are crossed: every seed scores every item). The generator is seeded, so reruns give the same
interval. p-value: McNemar's exact test for a 0/1 metric on one seed; otherwise a sign-flip
permutation test on the per-item differences averaged over seeds (exact enumeration when the
nonzero differences are few enough, else random sign flips from the seeded generator).
"""

import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from exme.errors import ExmeError
from exme.pipeline.targets import MEAN_TASK

RESAMPLES = 10_000  # bootstrap resamples, and sign flips of a permutation test
SEED = 0
LEVEL = 0.95


def _shapes(differences: Mapping[str, np.ndarray]) -> int:
    """The number of seeds, the same for every task; each task's array must be (seeds, items)."""
    if not differences:
        raise ExmeError("a paired comparison needs at least one task")
    seeds = {np.shape(d)[0] for d in differences.values() if np.ndim(d) == 2 and np.shape(d)[1] > 0}
    if len(seeds) != 1 or any(np.ndim(d) != 2 for d in differences.values()):
        raise ExmeError(
            "per-item differences must be (seeds × items) arrays with the same seeds for every task"
        )
    return seeds.pop()


def _counts(draws: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, size): how often each of `size` units is drawn in each of `draws` resamples of
    `size` draws with replacement."""
    picks = rng.integers(0, size, size=(draws, size)) + size * np.arange(draws)[:, None]
    # As floats: products with them then run in BLAS.
    return np.bincount(picks.ravel(), minlength=draws * size).reshape(draws, size).astype(float)


@functools.lru_cache(maxsize=4)
def _resampling(n_seeds: int, n_items: tuple[int, ...], resamples: int, seed: int) -> tuple[np.ndarray, ...]:
    """The seed counts, then each task's item counts, of every resample: the same for every
    comparison of the same shape (drawn once, from the seeded generator)."""
    rng = np.random.default_rng(seed)
    seed_counts = _counts(resamples, n_seeds, rng) if n_seeds > 1 else np.ones((resamples, 1))
    return seed_counts, *(_counts(resamples, n, rng) for n in n_items)


def bootstrap(
    differences: Mapping[str, np.ndarray], resamples: int = RESAMPLES, seed: int = SEED
) -> dict[str, np.ndarray]:
    """The resampled mean difference, per task and on the mean over tasks (key MEAN_TASK)."""
    n_seeds = _shapes(differences)
    arrays = [np.asarray(d, dtype=float) for d in differences.values()]
    seed_counts, *item_counts = _resampling(n_seeds, tuple(d.shape[1] for d in arrays), resamples, seed)
    resampled = {
        task: ((counts @ d.T) * seed_counts).sum(axis=1) / (n_seeds * d.shape[1])
        for task, d, counts in zip(differences, arrays, item_counts, strict=True)
    }
    resampled[MEAN_TASK] = np.mean(list(resampled.values()), axis=0)
    return resampled


def interval(resampled: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return float(low), float(high)


@functools.lru_cache(maxsize=4)
def _signs(resamples: int, n: int, seed: int) -> np.ndarray:
    """Random signs (±1.0) of n items in each of `resamples` flips, drawn once per shape."""
    return 2.0 * np.random.default_rng(seed).integers(0, 2, size=(resamples, n)) - 1


def sign_flip_p(
    item_differences: Sequence[np.ndarray], resamples: int = RESAMPLES, seed: int = SEED
) -> float:
    """Two-sided p-value of a zero mean difference over tasks (each a 1-D array of per-item
    differences, weighing 1/number of tasks): under the null each item's difference is as likely
    to have either sign. Exact when 2^(nonzero items) ≤ resamples, else Monte Carlo
    ((1 + hits) / (1 + resamples))."""
    terms = np.concatenate(
        [np.asarray(d, dtype=float) / (len(item_differences) * len(d)) for d in item_differences]
    )
    nonzero = terms[terms != 0]
    if nonzero.size == 0:
        return 1.0
    observed = abs(terms.sum())
    tolerance = 1e-12 * np.abs(terms).sum()  # the same sum in another order is not "more extreme"
    if 2**nonzero.size <= resamples:
        patterns = np.arange(2**nonzero.size)[:, None] >> np.arange(nonzero.size) & 1
        flipped = np.abs((2 * patterns - 1) @ nonzero)
        return float(np.mean(flipped >= observed - tolerance))
    hits = int(np.sum(np.abs(_signs(resamples, terms.size, seed) @ terms) >= observed - tolerance))
    return (1 + hits) / (1 + resamples)


def mcnemar_p(model: np.ndarray, reference: np.ndarray) -> float:
    """McNemar's exact test on paired 0/1 outcomes: a two-sided binomial test of the items only one
    of the two models gets right (b against c, each with probability 1/2 under the null)."""
    model, reference = np.asarray(model), np.asarray(reference)
    b, c = int(np.sum((model == 1) & (reference == 0))), int(np.sum((model == 0) & (reference == 1)))
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def is_binary(*values: np.ndarray) -> bool:
    return all(np.isin(np.asarray(v), (0, 1)).all() for v in values)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), in the order given."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    steps = (len(p) - np.arange(len(p))) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(steps))
    return adjusted


def compare(
    model: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict[str, dict]:
    """Per task and on the mean over tasks (MEAN_TASK): the difference model − reference, its interval,
    the p-value and the test that gave it. Arrays are (seeds × items), paired item by item."""
    differences = {}
    for task in model:
        a, b = np.asarray(model[task], dtype=float), np.asarray(reference[task], dtype=float)
        if a.shape != b.shape:
            raise ExmeError(
                f"task {task!r}: the two models were scored on different items ({a.shape}, {b.shape})"
            )
        differences[task] = a - b
    resampled = bootstrap(differences, resamples, seed)
    one_seed = _shapes(differences) == 1
    results = {}
    for task, d in differences.items():
        if one_seed and is_binary(model[task], reference[task]):
            test, p = "McNemar exact", mcnemar_p(np.ravel(model[task]), np.ravel(reference[task]))
        else:
            test, p = "sign flip", sign_flip_p([d.mean(axis=0)], resamples, seed)
        results[task] = {
            "difference": float(d.mean()),
            "interval": interval(resampled[task]),
            "p": p,
            "test": test,
        }
    results[MEAN_TASK] = {
        "difference": float(np.mean([d.mean() for d in differences.values()])),
        "interval": interval(resampled[MEAN_TASK]),
        "p": sign_flip_p([d.mean(axis=0) for d in differences.values()], resamples, seed),
        "test": "sign flip",
    }
    return results

"""Top-k greedy merging with model kinship (Hu et al., arXiv 2410.12613, Algorithm 1), one generation
at a time, as pure functions for a Snakemake checkpoint loop.

The loop a workflow runs:
    pool = first_generation(inputs)                 # generation 1: every pair of the inputs
    evaluate pool.unscored(); pool = pool.with_scores(dev scores)
    until converged(previous, pool, k, max_generations):
        compute kinship_pairs(pool, k) (only with exploration)
        previous, pool = pool, next_generation(pool, k, explore=..., kinship=..., exploration=...)
        evaluate pool.unscored(); pool = pool.with_scores(dev scores)
A pool is plain data (`to_dict`/`from_dict`), so each generation can be a checkpoint's JSON output.

The algorithm, as printed, and the choices where it is silent:
  * S is the top k of the whole pool (inputs and every merge so far) by dev score; ties go to the
    model that entered the pool first.
  * Each generation merges the k pairs of models of S with the highest summed score (ties: in the
    order of S), leaving out pairs merged before, which would only repeat a model (so at most
    k(k−1)/2 pairs, and none when S is made of pairs already merged).
  * With exploration, the best model of S is also merged with the model of the pool before this
    generation (M_prev) that has the *lowest* kinship to it, as the paper's text and data say
    (Algorithm 1 prints "highest"; `exploration="highest"` follows the print). The candidates
    are the pool less the best model and the models already merged with it, in this generation
    too. `kinship(a, b)` is a similarity (higher = closer kin, e.g. PCC); give −ED for distances.
  * It stops when S is the same set as before the generation (the paper has no other limit; a
    workflow needs one: `max_generations`).
  * A merge's parents are ordered: the better-ranked model of a pair first, and for the
    exploration merge (M_f, M_best) as printed. The first parent is the natural base_model of a
    SLERP recipe, the paper's merge.

Names of merged models are `g{generation}-m{index}`, index from 1 in the order above (pairs by
rank, the exploration merge last): file-name safe and the same for the same inputs and scores.
This module imports no torch: the kinship function is injected.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from exme.errors import ExmeError
from exme.pipeline.selection import top_k

Exploration = Literal["lowest", "highest"]
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_GENERATED_NAME = re.compile(r"g\d+-m\d+")


def merged_name(generation: int, index: int) -> str:
    return f"g{generation}-m{index}"


@dataclass(frozen=True)
class PoolModel:
    """A model of the pool: an input (generation 0, no parents) or a merge of its parents."""

    name: str
    parents: tuple[str, ...] = ()
    generation: int = 0
    score: float | None = None  # the dev score; None until evaluated


@dataclass(frozen=True)
class Pool:
    """Every model so far, in the order they entered, and the last generation made."""

    models: tuple[PoolModel, ...]
    generation: int

    def model(self, name: str) -> PoolModel:
        for model in self.models:
            if model.name == name:
                return model
        raise ExmeError(f"model {name!r} is not in the pool")

    def unscored(self) -> list[str]:
        """The models to evaluate before the next step."""
        return [model.name for model in self.models if model.score is None]

    def with_scores(self, scores: Mapping[str, float]) -> Pool:
        names = {model.name for model in self.models}
        if unknown := sorted(set(scores) - names):
            raise ExmeError(f"scores given for models not in the pool: {', '.join(unknown)}")
        models = tuple(
            replace(model, score=float(scores[model.name])) if model.name in scores else model
            for model in self.models
        )
        return Pool(models, self.generation)

    def top(self, k: int) -> list[str]:
        """S: the k best models by dev score, best first; ties go to the earlier model."""
        if k < 2:
            raise ExmeError(f"k must be at least 2 (pairs are drawn from the top k), got {k}")
        if k > len(self.models):
            raise ExmeError(f"k = {k} is larger than the pool of {len(self.models)} models")
        if unscored := self.unscored():
            raise ExmeError(f"models not evaluated yet: {', '.join(unscored)}")
        return top_k({model.name: model.score for model in self.models}, k)

    def to_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "models": [
                {"name": m.name, "parents": list(m.parents), "generation": m.generation, "score": m.score}
                for m in self.models
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pool:
        models = tuple(
            PoolModel(m["name"], tuple(m["parents"]), m["generation"], m["score"]) for m in data["models"]
        )
        return cls(models, data["generation"])


def first_generation(inputs: Sequence[str]) -> Pool:
    """The input models and, as generation 1, a merge of every pair of them."""
    if len(inputs) < 2:
        raise ExmeError(f"greedy merging needs at least two input models, got {len(inputs)}")
    if len(set(inputs)) < len(inputs):
        raise ExmeError(f"an input model is listed twice: {list(inputs)}")
    for name in inputs:
        if not _SAFE_NAME.fullmatch(name) or _GENERATED_NAME.fullmatch(name):
            raise ExmeError(
                f"input model name {name!r} must be file-name safe (letters, digits, '.', '_', '+', '-') "
                "and not of the form g<N>-m<N>, which names merged models"
            )
    pairs = list(itertools.combinations(inputs, 2))
    return Pool((*(PoolModel(name) for name in inputs), *_merges(1, pairs)), generation=1)


def _merges(generation: int, pairs: Sequence[tuple[str, str]]) -> list[PoolModel]:
    return [
        PoolModel(merged_name(generation, index), parents, generation)
        for index, parents in enumerate(pairs, start=1)
    ]


def _merged_pairs(pool: Pool) -> set[frozenset[str]]:
    return {frozenset(model.parents) for model in pool.models if model.parents}


def _selected_pairs(pool: Pool, k: int) -> list[tuple[str, str]]:
    """The k pairs of S with the highest summed score, not merged before, in that order."""
    top = pool.top(k)
    merged = _merged_pairs(pool)
    candidates = [pair for pair in itertools.combinations(top, 2) if frozenset(pair) not in merged]
    score = {name: pool.model(name).score for name in top}
    return sorted(candidates, key=lambda pair: -(score[pair[0]] + score[pair[1]]))[:k]


def _exploration_partners(pool: Pool, k: int, selected: Sequence[tuple[str, str]]) -> tuple[str, list[str]]:
    """The best model of S and the models of the pool it may be merged with to explore."""
    best = pool.top(k)[0]
    merged = _merged_pairs(pool) | {frozenset(pair) for pair in selected}
    partners = [
        model.name
        for model in pool.models
        if model.name != best and frozenset((best, model.name)) not in merged
    ]
    return best, partners


def kinship_pairs(pool: Pool, k: int) -> list[tuple[str, str]]:
    """The (best model, candidate) pairs whose kinship next_generation asks for when exploring,
    so that a workflow can compute exactly these first."""
    best, partners = _exploration_partners(pool, k, _selected_pairs(pool, k))
    return [(best, partner) for partner in partners]


def next_generation(
    pool: Pool,
    k: int,
    *,
    explore: bool,
    kinship: Callable[[str, str], float] | None = None,
    exploration: Exploration = "lowest",
) -> Pool:
    """The pool with the next generation's merges added (unscored): the best pairs of the top k
    and, with `explore`, the best model merged with its lowest-kinship (or highest) partner."""
    if exploration not in ("lowest", "highest"):
        raise ExmeError(f"exploration must be 'lowest' or 'highest', got {exploration!r}")
    if explore and kinship is None:
        raise ExmeError("exploring needs a kinship function")
    pairs = _selected_pairs(pool, k)
    if explore:
        best, partners = _exploration_partners(pool, k, pairs)
        if partners:
            kinships = {partner: kinship(best, partner) for partner in partners}
            # min/max keep the first of equal values: ties go to the earlier model of the pool
            choose = min if exploration == "lowest" else max
            pairs.append((choose(partners, key=kinships.__getitem__), best))
    generation = pool.generation + 1
    return Pool((*pool.models, *_merges(generation, pairs)), generation)


def converged(previous: Pool | None, current: Pool, k: int, max_generations: int) -> bool:
    """Whether to stop after `current`: its top k is the same set as that of the pool it grew from
    (`previous`; None after generation 1, which always continues), or it reached max_generations."""
    if max_generations < 1:
        raise ExmeError(f"max_generations must be at least 1, got {max_generations}")
    if current.generation >= max_generations:
        return True
    return previous is not None and set(previous.top(k)) == set(current.top(k))

"""Top-k greedy merging: on a toy world with known scores and kinships, the loop picks exactly the
models Algorithm 1 (text's reading) picks, with and without exploration, and stops when it should."""

from __future__ import annotations

import json

import pytest

from exme.errors import ExmeError
from exme.pipeline.greedy import Pool, converged, first_generation, kinship_pairs, next_generation

INPUT_SCORES = {"a": 60.0, "b": 50.0, "c": 40.0}
CEILING = 66.0


class ToyWorld:
    """Kinship is the overlap (Jaccard) of two models' input ancestors. A merge scores its better
    parent's score plus 3 when the parents share no ancestor, plus 1 when they share some, minus 1
    when they share all, and never more than CEILING: merging close kin stops paying."""

    def __init__(self) -> None:
        self.ancestors = {name: frozenset({name}) for name in INPUT_SCORES}
        self.scores = dict(INPUT_SCORES)
        self.kinship_asked: list[tuple[str, str]] = []

    def kinship(self, first: str, second: str) -> float:
        self.kinship_asked.append((first, second))
        return self._overlap(first, second)

    def _overlap(self, first: str, second: str) -> float:
        shared = self.ancestors[first] & self.ancestors[second]
        return len(shared) / len(self.ancestors[first] | self.ancestors[second])

    def evaluate(self, pool: Pool) -> Pool:
        for name in pool.unscored():
            model = pool.model(name)
            if model.parents:
                first, second = model.parents
                overlap = self._overlap(first, second)
                gain = 3 if overlap == 0 else 1 if overlap < 1 else -1
                self.ancestors[name] = self.ancestors[first] | self.ancestors[second]
                self.scores[name] = min(CEILING, max(self.scores[first], self.scores[second]) + gain)
        return pool.with_scores({name: self.scores[name] for name in pool.unscored()})


def _run(
    world: ToyWorld, k: int, explore: bool, max_generations: int = 10, exploration: str = "lowest"
) -> Pool:
    """The workflow's loop: evaluate, check convergence, grow a generation."""
    pool = world.evaluate(first_generation(list(INPUT_SCORES)))
    previous = None
    while not converged(previous, pool, k, max_generations):
        grown = next_generation(pool, k, explore=explore, kinship=world.kinship, exploration=exploration)
        previous, pool = pool, world.evaluate(grown)
    return pool


def _merges_after_generation_1(pool: Pool) -> list[tuple[str, tuple[str, ...], float]]:
    return [(model.name, model.parents, model.score) for model in pool.models if model.generation > 1]


def test_first_generation_merges_every_pair_of_the_inputs():
    pool = first_generation(["a", "b", "c"])
    assert [(m.name, m.parents, m.generation) for m in pool.models] == [
        ("a", (), 0), ("b", (), 0), ("c", (), 0),
        ("g1-m1", ("a", "b"), 1), ("g1-m2", ("a", "c"), 1), ("g1-m3", ("b", "c"), 1),
    ]  # fmt: skip
    assert pool.generation == 1 and pool.unscored() == ["a", "b", "c", "g1-m1", "g1-m2", "g1-m3"]


def test_greedy_merging_without_exploration_stalls_on_close_kin():
    world = ToyWorld()
    pool = _run(world, k=2, explore=False)
    assert [world.scores[name] for name in ("g1-m1", "g1-m2", "g1-m3")] == [63, 63, 53]
    assert _merges_after_generation_1(pool) == [
        ("g2-m1", ("g1-m1", "g1-m2"), 64),  # S = {g1-m1, g1-m2}: its one pair
        ("g3-m1", ("g2-m1", "g1-m1"), 65),  # S = {g2-m1, g1-m1}
        ("g4-m1", ("g3-m1", "g2-m1"), 64),  # identical ancestry: no gain, S unchanged
    ]
    assert pool.generation == 4 and pool.top(2) == ["g3-m1", "g2-m1"]
    assert world.kinship_asked == []


def test_exploration_merges_the_best_model_with_its_least_kin_and_finds_a_better_model():
    world = ToyWorld()
    pool = _run(world, k=2, explore=True)
    assert _merges_after_generation_1(pool) == [
        ("g2-m1", ("g1-m1", "g1-m2"), 64),
        ("g2-m2", ("c", "g1-m1"), 66),  # best g1-m1 = a+b: c shares no ancestor with it
        ("g3-m1", ("g2-m2", "g2-m1"), 65),
        ("g3-m2", ("a", "g2-m2"), 66),  # kinship 1/3 for a, b and c: the first in the pool
        ("g4-m1", ("g2-m2", "g3-m2"), 65),
        ("g4-m2", ("b", "g2-m2"), 66),  # a was merged with g2-m2 already; S stays {g2-m2, g3-m2}
    ]
    assert pool.generation == 4 and pool.top(2) == ["g2-m2", "g3-m2"]
    assert world.scores[pool.top(2)[0]] > 65  # the best model without exploration


def test_kinship_is_asked_for_exactly_the_pairs_kinship_pairs_names():
    world = ToyWorld()
    pool = world.evaluate(first_generation(list(INPUT_SCORES)))
    expected = kinship_pairs(pool, 2)
    assert expected == [("g1-m1", name) for name in ("a", "b", "c", "g1-m3")]  # g1-m2 is paired already
    next_generation(pool, 2, explore=True, kinship=world.kinship)
    assert world.kinship_asked == expected


def test_highest_exploration_follows_the_printed_algorithm():
    world = ToyWorld()
    pool = world.evaluate(first_generation(list(INPUT_SCORES)))
    grown = next_generation(pool, 2, explore=True, kinship=world.kinship, exploration="highest")
    assert grown.models[-1].name == "g2-m2" and grown.models[-1].parents == ("a", "g1-m1")  # kinship 1/2


def test_k_pairs_with_the_highest_summed_score_are_merged():
    world = ToyWorld()
    pool = world.evaluate(first_generation(list(INPUT_SCORES)))  # a 60, b 50, c 40, 63, 63, 53
    three = next_generation(pool, 3, explore=False, kinship=world.kinship)  # S = g1-m1, g1-m2, a
    assert [m.parents for m in three.models if m.generation == 2] == [
        ("g1-m1", "g1-m2"), ("g1-m1", "a"), ("g1-m2", "a"),
    ]  # fmt: skip
    four = next_generation(pool, 4, explore=False, kinship=world.kinship)  # S adds g1-m3: 6 pairs
    assert [m.parents for m in four.models if m.generation == 2] == [
        ("g1-m1", "g1-m2"), ("g1-m1", "a"), ("g1-m2", "a"), ("g1-m1", "g1-m3"),
    ]  # fmt: skip


def test_pairs_merged_before_are_not_merged_again_and_the_loop_then_stops():
    pool = first_generation(["a", "b", "c"])
    scores = {"a": 70, "b": 69, "c": 10, "g1-m1": 1, "g1-m2": 2, "g1-m3": 3}
    pool = pool.with_scores(scores)
    grown = next_generation(pool, 2, explore=False)
    assert grown.models == pool.models and grown.generation == 2  # (a, b) is g1-m1 already
    assert converged(pool, grown, 2, max_generations=10)


def test_the_generation_limit_stops_the_loop():
    assert _run(ToyWorld(), k=2, explore=True, max_generations=2).generation == 2
    assert converged(None, first_generation(["a", "b"]), 2, max_generations=1)


def test_generation_1_always_continues():
    pool = ToyWorld().evaluate(first_generation(list(INPUT_SCORES)))
    assert not converged(None, pool, 2, max_generations=10)


def test_the_loop_is_deterministic_and_the_pool_survives_json():
    first, second = _run(ToyWorld(), 2, explore=True), _run(ToyWorld(), 2, explore=True)
    assert first == second
    assert Pool.from_dict(json.loads(json.dumps(first.to_dict()))) == first


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (["a"], "at least two input models, got 1"),
        (["a", "b", "a"], "listed twice"),
        (["a/b", "c"], "'a/b' must be file-name safe"),
        (["g1-m1", "c"], "not of the form g<N>-m<N>"),
    ],
)
def test_bad_inputs_are_errors(inputs, message):
    with pytest.raises(ExmeError, match=message):
        first_generation(inputs)


def test_bad_settings_are_errors():
    world = ToyWorld()
    pool = world.evaluate(first_generation(list(INPUT_SCORES)))
    with pytest.raises(ExmeError, match="k = 7 is larger than the pool of 6 models"):
        next_generation(pool, 7, explore=False, kinship=world.kinship)
    with pytest.raises(ExmeError, match="k must be at least 2"):
        next_generation(pool, 1, explore=False, kinship=world.kinship)
    with pytest.raises(ExmeError, match="exploration must be 'lowest' or 'highest'"):
        next_generation(pool, 2, explore=True, kinship=world.kinship, exploration="random")
    with pytest.raises(ExmeError, match="exploring needs a kinship function"):
        next_generation(pool, 2, explore=True)
    with pytest.raises(ExmeError, match="max_generations must be at least 1, got 0"):
        converged(None, pool, 2, max_generations=0)
    inputs_scored_only = first_generation(list(INPUT_SCORES)).with_scores(INPUT_SCORES)
    with pytest.raises(ExmeError, match="not evaluated yet: g1-m1, g1-m2, g1-m3"):
        next_generation(inputs_scored_only, 2, explore=False, kinship=world.kinship)
    with pytest.raises(ExmeError, match="scores given for models not in the pool: zz"):
        pool.with_scores({"zz": 1.0})

"""Greedy merging in the workflow: file names, a generation's recipes of recipes, and one step."""

import re

import pytest
import torch

from exme.errors import ExmeError
from exme.merge.execute import build_state_dict, merge_to_dir
from exme.merge.recipe import recipe_from_dict, write_recipe
from exme.pipeline.config import _check_greedy
from exme.pipeline.greedy import first_generation
from exme.pipeline.greedy_steps import (
    best_model_recipe,
    file_name,
    generation_recipes,
    member_location,
    step,
)

SLERP = {"t": 0.5}


def test_generation_one_is_shared_and_later_generations_belong_to_their_variant():
    assert file_name("expert", "greedy_explore", "g1-m2") == "expert-greedy-g1-m2"
    assert file_name("expert", "greedy_explore", "g3-m1") == "expert-greedy_explore-g3-m1"
    assert file_name("expert", "greedy", "ft-arith") == "ft-arith"
    experts = {"ft-a": "/m/a"}
    assert member_location("ft-a", "/r", experts) == "/m/a"
    assert (
        member_location("expert-greedy-g1-m2", "/r", experts)
        == "/r/expert-pairs/recipes/expert-greedy-g1-m2.yaml"
    )
    assert member_location("expert-greedy_explore-g2-m1", "/r", experts) == (
        "/r/expert-greedy_explore/g2/recipes/expert-greedy_explore-g2-m1.yaml"
    )


def test_a_generation_of_recipes_of_recipes_equals_the_merges_written_out(family, tmp_path):
    experts = {"ft-a": str(family.ft_a), "ft-b": str(family.ft_b), "ft-c": str(family.base)}
    root = str(tmp_path / "greedy")
    pool = first_generation(list(experts))
    kwargs = dict(
        track="expert",
        root=root,
        experts=experts,
        base=str(family.base),
        method="slerp",
        settings=SLERP,
        seed=0,
    )
    first = generation_recipes(pool, variant="greedy", **kwargs)
    assert set(first) == {"expert-greedy-g1-m1", "expert-greedy-g1-m2", "expert-greedy-g1-m3"}
    for name, recipe in first.items():
        write_recipe(recipe, member_location(name, root, experts))
    scores = {"ft-a": 0.1, "ft-b": 0.2, "ft-c": 0.0, "expert-greedy-g1-m1": 0.5, "expert-greedy-g1-m2": 0.4,
              "expert-greedy-g1-m3": 0.3}  # fmt: skip
    scored, grown = step(pool, scores, track="expert", variant="greedy", k=3, max_generations=3, kinship=None,
                         exploration="lowest")  # fmt: skip
    assert grown is not None and grown.generation == 2
    second = generation_recipes(grown, variant="greedy", **kwargs)
    assert len(second) == 3  # the pairs of the top 3, best pair first
    recipe = second["expert-greedy-g2-m1"]
    assert recipe.metadata == {
        "method": "greedy",
        "track": "expert",
        "source": "expert-greedy-g1-m1+expert-greedy-g1-m2",
        "generation": 2,
    }  # noqa: E501
    # The recipe of recipes resolves to the same weights as the merges written out step by step.
    nested = build_state_dict(recipe, device="cpu")
    written = {}
    for parent in ("expert-greedy-g1-m1", "expert-greedy-g1-m2"):
        written[parent] = merge_to_dir(first[parent], tmp_path / parent)
    flat = dict(
        recipe.to_dict(),
        models=[{"model": str(written["expert-greedy-g1-m2"])}],
        base_model=str(written["expert-greedy-g1-m1"]),
    )
    expected = build_state_dict(recipe_from_dict(flat), device="cpu")
    for tensor, value in expected.items():
        torch.testing.assert_close(nested[tensor], value, rtol=1e-6, atol=1e-7)
    best = best_model_recipe(scored, "expert", "greedy", root, experts)
    assert best.metadata["source"] == "expert-greedy-g1-m1" and best.models[0].model.endswith("g1-m1.yaml")


def test_the_step_stops_at_the_generation_limit():
    pool = first_generation(["ft-a", "ft-b"])
    scores = {"ft-a": 0.1, "ft-b": 0.2, "expert-greedy-g1-m1": 0.5}
    scored, grown = step(pool, scores, track="expert", variant="greedy", k=2, max_generations=1, kinship=None,
                         exploration="lowest")  # fmt: skip
    assert grown is None and scored.unscored() == []


@pytest.mark.parametrize(
    ("greedy", "experts", "message"),
    [
        ({"k": 7}, 3, "greedy.k (7) is larger than the pool of 6 models"),
        ({"method": "task_arithmetic"}, 3, "greedy.method: task_arithmetic chooses a coefficient"),
        ({"method": "ties_lots"}, 3, "unknown merge method 'ties_lots'"),
    ],
)
def test_bad_greedy_settings_are_refused_before_any_job(greedy, experts, message):
    settings = {"activate": True, "k": 3, "max_generations": 2, "method": "slerp", **greedy}
    with pytest.raises(ExmeError, match=re.escape(message)):
        _check_greedy(settings, experts)

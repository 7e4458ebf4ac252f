"""The model catalogue: one name grammar, folder models described here, recipes by their metadata."""

import re

import pytest
import yaml

from exme.pipeline.catalogue import (
    NAME_PATTERNS,
    WILDCARD_PATTERNS,
    folder_description,
    format_coef,
    match_name,
    model_name,
    recipe_description,
    sft_step,
)


@pytest.mark.parametrize(
    ("kind", "fields", "name"),
    [
        ("sft", {"step": 150}, "sft-150"),
        ("expo_grid", {"rank": 2, "alpha": 0.05}, "expo2-a0.05"),
        ("expo_grid", {"rank": 1, "alpha": 1.0}, "expo1-a1"),
        ("expo", {"rank": 1}, "expo1"),
        ("exme_grid", {"beta": 0.25}, "exme-b0.25"),
        ("exme", {}, "exme"),
        ("expert", {"expert": "arith"}, "ft-arith"),
        ("merge", {"track": "expert", "method": "m3_ties"}, "expert-m3_ties"),
        (
            "merge_point",
            {"track": "checkpoint", "method": "task_arithmetic", "point": "s0.5"},
            "checkpoint-task_arithmetic-s0.5",
        ),
    ],
)
def test_names_are_built_and_parsed_by_the_same_grammar(kind, fields, name):
    assert model_name(kind, **fields) == name
    parsed = match_name(kind, name)
    assert parsed == {
        key: format_coef(v) if key in ("alpha", "beta") else str(v) for key, v in fields.items()
    }


def test_a_name_matches_only_its_own_kind():
    kinds = {kind for kind in NAME_PATTERNS if match_name(kind, "expo1-a0.1")}
    assert kinds == {"expo_grid"}
    assert match_name("sft", "sft-1x") is None


def test_the_wildcard_constraints_are_the_grammar_parts():
    for field, pattern in WILDCARD_PATTERNS.items():
        for template in NAME_PATTERNS.values():
            if f"{{{field}}}" in template:
                re.compile(pattern)
    assert re.fullmatch(WILDCARD_PATTERNS["alpha"], "0.05") and not re.fullmatch(
        WILDCARD_PATTERNS["alpha"], "-1"
    )


def test_folder_models_are_described_here_and_others_by_their_recipe(tmp_path):
    assert folder_description("base") == {"method": "base", "track": "shared"}
    assert folder_description("sft-300") == {"method": "sft", "track": "checkpoint", "source": "sft-300"}
    assert folder_description("ft-arith") == {"method": "expert", "track": "expert", "source": "arith"}
    assert folder_description("expo1") is None and sft_step("expo1") is None and sft_step("sft-300") == 300
    recipe = {"merge_method": "linear", "models": [], "metadata": {"method": "linear", "weight": 0.5}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(recipe))
    assert recipe_description(tmp_path / "m.yaml") == {"method": "linear", "weight": 0.5}
    folder = tmp_path / "merged"
    folder.mkdir()
    (folder / "merge_recipe.yml").write_text(yaml.safe_dump(recipe))
    assert recipe_description(folder) == {"method": "linear", "weight": 0.5}

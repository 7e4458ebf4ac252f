"""The models a run evaluates: their names, where each one is loaded from, and what each one is.

A model is either a folder (the base, a fine-tuning checkpoint, the exported final model) or a merge
recipe. A recipe describes itself in its `metadata` block (method, sources, coefficients), written
by the function that writes the recipe; a folder is described here. The score table is built from
these descriptions, so a new merge method adds recipes and the function that writes them, and
touches neither this module's name grammar nor the score table's code.

File names follow one grammar, `NAME_PATTERNS`; the Snakefile's wildcard constraints are generated
from `WILDCARD_PATTERNS`. This module imports no torch: the Snakefile uses it to build the DAG.
"""

import re
from pathlib import Path
from typing import Any

import yaml

from exme.pipeline.merging import SYSTEMS

BASE = "base"
FINAL = "exme"  # the ExMe model at its chosen coefficients, exported as a folder
RECIPE_IN_FOLDER = "merge_recipe.yml"  # written by the merge engine beside the weights it merged

# The parts of model names, as regular expressions (and Snakemake wildcard constraints).
_NUMBER = r"\d+(\.\d+)?"
WILDCARD_PATTERNS = {
    "step": r"\d+",
    "rank": r"\d+",
    "alpha": _NUMBER,
    "beta": _NUMBER,
    "split": "dev|test",
    "scope": r"shared|seed\d+",  # the folder of seed-independent outputs, or of one seed's
    "track": "checkpoint|expert",
    "method": "|".join(sorted(SYSTEMS)),  # the merge systems of exme.pipeline.merging
    # A grid point: a letter naming each coefficient, then its value ("s0.5", "d3", "t0.1l2").
    "point": rf"(?:[a-z]{_NUMBER})+",
    "expert": "[a-z0-9_]+",
    "variant": "greedy|greedy_explore",  # top-k greedy merging without and with exploration
    "generation": r"\d+",
    "index": r"\d+",
}
SHARED_SCOPE = "shared"
NAME_PATTERNS = {
    "sft": "sft-{step}",
    "expert": "ft-{expert}",  # an expert fine-tuned from the base on its own data
    "merge": "{track}-{method}",  # a merge system's model on a track (at its chosen grid point)
    "merge_point": "{track}-{method}-{point}",
    "greedy_model": "{track}-{variant}-g{generation}-m{index}",  # a model of a greedy generation
    "greedy_pair": "{track}-greedy-g1-m{index}",  # generation 1, every pair: shared by both variants
    "greedy": "{track}-{variant}",  # the best model greedy merging found (chosen on dev)
    "expo_grid": "expo{rank}-a{alpha}",  # a grid point of the alpha search
    "expo_step_grid": "expo-step{step}-a{alpha}",  # any checkpoint extrapolated (every_checkpoint)
    "expo": "expo{rank}",  # at the alpha the dev search chose
    "exme_grid": "exme-b{beta}",  # a grid point of the beta search
    "exme": FINAL,
}


# Kinds whose models are points of a grid searched on dev: evaluated in batches, one job per grid.
GRID_KINDS = ("expo_grid", "expo_step_grid", "exme_grid", "merge_point", "greedy_pair")


def format_coef(value: float) -> str:
    """A coefficient as it appears in file names: 0.25 -> '0.25', 1.0 -> '1'."""
    return f"{float(value):g}"


def model_name(kind: str, **fields: Any) -> str:
    """The name of a model of `kind` (a key of NAME_PATTERNS); coefficients are formatted."""
    return NAME_PATTERNS[kind].format(
        **{key: format_coef(value) if key in ("alpha", "beta") else value for key, value in fields.items()}
    )


def _pattern(kind: str, named: bool) -> str:
    pattern = re.escape(NAME_PATTERNS[kind]).replace(r"\{", "{").replace(r"\}", "}")
    for field, field_pattern in WILDCARD_PATTERNS.items():
        group = f"?P<{field}>" if named else "?:"
        pattern = pattern.replace(f"{{{field}}}", f"({group}{field_pattern})")
    return pattern


def _regex(kind: str) -> re.Pattern[str]:
    return re.compile(f"^{_pattern(kind, named=True)}$")


def single_model_pattern() -> str:
    """The names of models evaluated one job each (every kind but the grids), as a regex. The
    grids are excluded by a lookahead that ends where a name ends: at the end of the text or
    before a file extension (Snakemake embeds the pattern in a path)."""
    kinds = [kind for kind in NAME_PATTERNS if kind not in GRID_KINDS]
    grids = "|".join(_pattern(kind, named=False) for kind in GRID_KINDS)
    singles = "|".join([re.escape(BASE), *(_pattern(kind, named=False) for kind in kinds)])
    return rf"(?!(?:{grids})(?![\w+-]))(?:{singles})"


def match_name(kind: str, name: str) -> dict[str, str] | None:
    """The fields of `name` if it is a name of `kind`, else None."""
    match = _regex(kind).match(name)
    return None if match is None else {key: value for key, value in match.groupdict().items() if key}


def seed_scope(seed: int) -> str:
    return f"seed{seed}"


def scope_seed(scope: str) -> int:
    return int(scope.removeprefix("seed"))


def sft_step(name: str) -> int | None:
    """The training step of a fine-tuning checkpoint's name, None for any other model."""
    fields = match_name("sft", name)
    return int(fields["step"]) if fields else None


def folder_description(name: str) -> dict[str, Any] | None:
    """What a folder model is; None for a model described by its recipe."""
    if name == BASE:
        return {"method": "base", "track": "shared"}
    if sft_step(name) is not None:
        return {"method": "sft", "track": "checkpoint", "source": name}
    if expert := match_name("expert", name):
        return {"method": "expert", "track": "expert", "source": expert["expert"]}
    return None


def recipe_description(path: str | Path) -> dict[str, Any]:
    """The `metadata` block of a recipe file, or of the recipe inside a merged model's folder."""
    path = Path(path)
    if path.is_dir():
        path = path / RECIPE_IN_FOLDER
    recipe = yaml.safe_load(path.read_text())
    return dict(recipe.get("metadata") or {})

"""mergekit-multi's recipes: several merges in one YAML file, each a document, the later naming
the earlier by their `name` as models (the named merges, or stages), and one final merge.

Here: reading a recipe file (one merge, or several), which merge is the final one, the table of
named merges each shares, their order and which are used. A named merge is planned as a nested
model (plan.ModelOpener) or, with an intermediate folder, merged into a folder of its own
(execute.write_stages and merge_with_stages: merging needs the planner, which reads recipe files
through this module, so that part lives above it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

import yaml

from exme.errors import ExmeError
from exme.merge.recipe import Recipe, recipe_from_dict


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """A recipe file: one merge, or (mergekit-multi's form) several YAML documents, each a merge with
    a `name` by which later ones use its result as a model, and the final merge."""
    recipes = _documents(path)
    return recipes[0] if len(recipes) == 1 else _final_merge(recipes, path)


def load_named_merges(path: str | os.PathLike[str]) -> dict[str, Recipe]:
    """The merges of a recipe file whose merges all have names, as mergekit-multi writes each to its
    intermediate folder and has no final merge: {name: merge}, the table of each one's stages."""
    recipes = _documents(path)
    if unnamed := [number for number, recipe in enumerate(recipes, start=1) if recipe.name is None]:
        raise ExmeError(
            f"recipe {path}: merge {unnamed[0]} has no name, so it is the final merge: give the output "
            "folder it is written to"
        )
    _check_names([recipe.name for recipe in recipes], path)
    return _stage_table(recipes)


def _documents(path: str | os.PathLike[str]) -> list[Recipe]:
    try:
        with open(path, encoding="utf-8") as file:
            documents = list(yaml.safe_load_all(file))
    except OSError as error:
        raise ExmeError(f"cannot read recipe {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ExmeError(f"recipe {path} is not valid YAML: {error}") from error
    if len(documents) <= 1:
        return [recipe_from_dict(documents[0] if documents else None)]
    recipes = []
    for number, document in enumerate(documents, start=1):
        try:
            recipes.append(recipe_from_dict(document))
        except ExmeError as error:
            raise ExmeError(f"document {number} of recipe {path}: {error}") from None
    return recipes


def _check_names(names: list[str], path: str | os.PathLike[str]) -> None:
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise ExmeError(f"recipe {path}: more than one merge is named {repeated[0]!r}")


def _stage_table(recipes: Iterable[Recipe]) -> dict[str, Recipe]:
    """{name: merge} of named merges, each holding the table as the merges it may name."""
    stages: dict[str, Recipe] = {}
    stages.update((recipe.name, replace(recipe, stages=stages)) for recipe in recipes if recipe.name)
    return stages


def _final_merge(recipes: list[Recipe], path: str | os.PathLike[str]) -> Recipe:
    """The merge a multi-document recipe writes, the others its stages: the one merge without a
    name, else the one that no other names."""
    names = [recipe.name for recipe in recipes if recipe.name is not None]
    _check_names(names, path)
    if len(names) < len(recipes) - 1:
        raise ExmeError(
            f"recipe {path} holds {len(recipes) - len(names)} merges without a name; only the final "
            "merge may have none"
        )
    used = {name for recipe in recipes for name in recipe.named_models if name in names}
    finals = [r for r in recipes if r.name is None] or [r for r in recipes if r.name not in used]
    if len(finals) != 1:
        unused = ", ".join(repr(recipe.name) for recipe in finals) or "none"
        raise ExmeError(
            f"recipe {path}: no one final merge (the merge without a name, or the one merge that "
            f"no other uses; unused: {unused})"
        )
    final = finals[0]
    return replace(final, stages=_stage_table(recipe for recipe in recipes if recipe is not final))


def unused_stages(recipe: Recipe) -> list[str]:
    """The names of the recipe's named merges that it does not use, directly or not."""
    uses = {**_stage_uses(recipe.stages), None: [m for m in recipe.named_models if m in recipe.stages]}
    reached = _reached(uses, None)
    return [name for name in recipe.stages if name not in reached]


def changed_stages(stages: Mapping[str, Recipe], change: Callable[[Recipe], Recipe]) -> dict[str, Recipe]:
    """The named merges with `change` made to each (sharing one table again)."""
    return _stage_table(change(stage) for stage in stages.values())


def with_stages(recipe: Recipe, change: Callable[[Recipe], Recipe]) -> Recipe:
    """The recipe with `change` made to each of its named merges."""
    return replace(recipe, stages=changed_stages(recipe.stages, change))


def includes_itself(origin: str, chain: list[str]) -> ExmeError:
    """The error for a merge that uses itself, through the merges of `chain` (first = last)."""
    return ExmeError(f"{origin} includes itself: {' -> '.join(chain)}")


def stage_order(stages: Mapping[str, Recipe]) -> list[str]:
    """The names of these named merges, each after those it uses."""
    order: list[str] = []
    visiting: list[str] = []
    uses = _stage_uses(stages)

    def visit(name: str) -> None:
        if name in visiting:
            raise includes_itself(f"merge {name!r}", [*visiting[visiting.index(name) :], name])
        if name not in order:
            visiting.append(name)
            for used in uses[name]:
                visit(used)
            order.append(visiting.pop())

    for name in stages:
        visit(name)
    return order


def _stage_uses(stages: Mapping[str, Recipe]) -> dict[str | None, list[str]]:
    """{name: the names of the other named merges it uses directly} of these named merges."""
    return {name: [m for m in stage.named_models if m in stages] for name, stage in stages.items()}


def _reached(uses: Mapping[str | None, list[str]], start: str | None) -> set[str]:
    """The names of the merges `start` uses, directly or not, given each merge's direct uses."""
    reached: set[str] = set()
    waiting = [start]
    while waiting:
        for name in uses[waiting.pop()]:
            if name not in reached:
                reached.add(name)
                waiting.append(name)
    return reached


def standalone_stage(stages: Mapping[str, Recipe], name: str) -> Recipe:
    """A named merge as a recipe of its own: with only the named merges it uses."""
    used = _reached(_stage_uses(stages), name)
    table = _stage_table(stage for n, stage in stages.items() if n in used)
    return replace(stages[name], stages=table)

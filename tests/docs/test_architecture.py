"""docs/architecture.md names what is there: every rule file the Snakefile includes and every module
of the package's layers, so that the map cannot fall behind the tree."""

from __future__ import annotations

import re

import pytest

from tests.docs.markdown import REPO

PAGE = (REPO / "docs/architecture.md").read_text()
PACKAGE = REPO / "src/exme"
MODULES = sorted(
    path
    for path in [*PACKAGE.glob("*/*.py"), *PACKAGE.glob("merge/io/*.py")]
    if path.stem not in {"__init__", "__main__"}
)


def test_every_included_rule_file_is_named():
    included = re.findall(r'include: "workflow/rules/(\w+)\.smk"', (REPO / "Snakefile").read_text())
    assert len(included) == len(list(REPO.glob("workflow/rules/*.smk")))
    layout = PAGE.split("workflow/rules/", 1)[1].split("\n", 2)[:2]
    missing = [name for name in included if not re.search(rf"\b{name}\b", " ".join(layout))]
    assert not missing, f"docs/architecture.md's layout leaves out workflow/rules/{missing}"


@pytest.mark.parametrize("module", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_every_module_is_named(module):
    assert f"`{module.stem}`" in PAGE, f"docs/architecture.md does not name {module.relative_to(REPO)}"


def test_every_shared_leaf_is_named():
    leaves = [path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__"]
    assert all(f"`exme.{leaf}`" in PAGE for leaf in leaves), leaves

"""Every relative link between the Markdown pages resolves: its file exists and its #anchor is a
heading of that page."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from tests.docs.markdown import LINKED_PAGES, REPO, anchors, links

LINKS = [(page, line, target) for page in LINKED_PAGES for line, target in links(page)]


def test_the_pages_link_to_each_other():
    relative = [target for _, _, target in LINKS if "://" not in target]
    assert len(relative) > 50


@pytest.mark.parametrize(
    ("page", "line", "target"),
    [link for link in LINKS if "://" not in link[2] and not link[2].startswith("mailto:")],
    ids=lambda value: str(value.relative_to(REPO)) if hasattr(value, "relative_to") else str(value),
)
def test_each_relative_link_resolves(page, line, target):
    path, _, anchor = unquote(target).partition("#")
    linked = (page.parent / path).resolve() if path else page
    assert linked.exists(), f"{page.relative_to(REPO)}:{line}: {target}: no such file"
    assert linked.is_relative_to(REPO), f"{page.relative_to(REPO)}:{line}: {target} leaves the repository"
    if anchor:
        assert linked.suffix == ".md", f"{page.relative_to(REPO)}:{line}: an anchor into a non-Markdown file"
        assert anchor in anchors(linked), f"{page.relative_to(REPO)}:{line}: no heading #{anchor} in {path}"


def test_the_readme_is_read_in_five_minutes():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250

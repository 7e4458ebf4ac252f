"""The documentation's Markdown pages as a test sees them: their fenced blocks, the shell commands in
them, their links and their headings' anchors."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The pages whose examples are run; links are checked on these and config/README.md.
PAGES = sorted([REPO / "README.md", *REPO.glob("docs/*.md"), REPO / "examples/README.md"])
LINKED_PAGES = sorted([*PAGES, REPO / "config/README.md", REPO / "CHANGELOG.md"])
SHELLS = {"bash", "sh", "console", "shell"}
NOT_TESTED = re.compile(r"<!--\s*not-tested:\s*(\S.*?)\s*-->")
_FENCE = re.compile(r"^(\s*)(`{3,})([\w-]*)\s*$")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    not_tested: str | None  # the reason given in a marker just before the block

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


@dataclass(frozen=True)
class Command:
    block: Block
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # VAR=value assignments before the command
    output: str | None  # the output shown after a `$ ` line of a console block

    @property
    def id(self) -> str:
        return f"{self.block.where}: {shlex.join(self.argv)}"[:100]


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a page, with a `<!-- not-tested: reason -->` marker found on the
    closest non-blank line before the fence."""
    lines = page.read_text().splitlines()
    found, index = [], 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence, language = opening.groups()
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        body = [line.removeprefix(indent) for line in lines[index + 1 : end]]
        before = next((line for line in reversed(lines[:index]) if line.strip()), "")
        marker = NOT_TESTED.search(before)
        found.append(Block(page, index + 1, language, "\n".join(body) + "\n", marker and marker[1]))
        index = end + 1
    return found


def all_blocks(language: set[str]) -> list[Block]:
    return [block for page in PAGES for block in blocks(page) if block.language in language]


def commands(block: Block) -> list[Command]:
    """The commands of a shell block: each line (continued by a trailing backslash), split at `&&`
    and `;`; in a console block only the `$ ` lines, each with the output shown after it."""
    lines = block.text.splitlines()
    if block.language == "console":
        entries: list[tuple[str, str | None]] = []
        for line in lines:
            if line.startswith("$ "):
                entries.append((line[2:], ""))
            elif entries:
                entries[-1] = (entries[-1][0], f"{entries[-1][1]}{line}\n")
    else:
        joined = "\n".join(lines).replace("\\\n", " ")
        entries = [(line, None) for line in joined.splitlines()]
    found = []
    for line, output in entries:
        tokens = shlex.split(line, comments=True)
        for part in _split(tokens, {"&&", ";"}):
            if "|" in part:
                raise AssertionError(f"{block.where}: a pipe cannot be checked: {line}")
            env = []
            while part and re.fullmatch(r"[A-Za-z_]\w*=.*", part[0]):
                env.append(tuple(part.pop(0).split("=", 1)))
            found.append(Command(block, tuple(part), tuple(env), output))
    return found


def _split(tokens: list[str], separators: set[str]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token in separators:
            parts.append([])
        else:
            parts[-1].append(token)
    return [part for part in parts if part]


def links(page: Path) -> list[tuple[int, str]]:
    """(line, target) of each inline Markdown link outside code blocks and code spans."""
    found, in_code = [], False
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        if _FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            found += [(number, target) for target in _LINK.findall(re.sub(r"`[^`]*`", "", line))]
    return found


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens,
    a repeated anchor numbered."""
    seen: dict[str, int] = {}
    result, in_code = set(), False
    for line in page.read_text().splitlines():
        if _FENCE.match(line):
            in_code = not in_code
            continue
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if in_code or not heading:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading[1]).replace("`", "")
        anchor = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        result.add(anchor if count == 0 else f"{anchor}-{count}")
    return result

"""Every example of README.md, docs/ and examples/README.md runs: YAML blocks through the config check
or the merge recipe check, JSON blocks as SFT data, each shell command as a dry run, through its
argument parser or against what CI runs (tests/docs/markdown.py extracts them)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from exme.merge.cli import build_parser, main
from exme.merge.multi import load_named_merges, load_recipe
from exme.pipeline.config import merge_config_files, prepare_config
from exme.train.data import read_sft_records
from tests.docs.markdown import REPO, Command, all_blocks, commands

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CI = (REPO / ".ci/run").read_text()
YAML_BLOCKS = all_blocks({"yaml", "yml"})
JSON_BLOCKS = all_blocks({"json", "jsonl"})
SHELL_BLOCKS = all_blocks({"bash", "sh", "console", "shell"})


def _key(command: Command) -> tuple:
    """Commands that check the same thing: a snakemake command and its dry run are one."""
    argv = [token for token in command.argv if token not in {"-n", "--dry-run"}]
    return (*argv, command.env, command.output)


# Each distinct command once, where it first appears (pages repeat the own-model example's dry run).
COMMANDS = list(
    {
        _key(command): command
        for block in reversed(SHELL_BLOCKS)
        if not block.not_tested
        for command in reversed(commands(block))
    }.values()
)[::-1]
PROFILE_MARK = "# slurm/config.yaml"
# What a checkout holds that a scratch copy links to (not its outputs or caches).
SKIPPED_IN_COPY = {".git", ".snakemake", "results", ".venv", "logs", ".pytest_cache", ".ruff_cache"}


def _checkout(tmp_path: Path) -> Path:
    """A scratch copy of the repository (links to its files) to run commands in as from its root,
    without writing into it."""
    copy = tmp_path / "checkout"
    copy.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in SKIPPED_IN_COPY:
            (copy / entry.name).symlink_to(entry)
    return copy


def _dry_run(checkout: Path, argv: list[str], env: dict[str, str]) -> None:
    if not {"-n", "--dry-run", "--dryrun"} & set(argv):
        argv = [*argv, "-n"]
    environment = {**os.environ, **env, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "snakemake", *argv]
    result = subprocess.run(
        command, cwd=checkout, capture_output=True, text=True, timeout=300, env=environment
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{shlex.join(command)}\n{output[-3000:]}"
    assert "This was a dry-run" in output or "Nothing to be done" in output, output[-2000:]


# YAML blocks


def test_the_docs_have_yaml_examples():
    kinds = {_yaml_kind(block.text) for block in YAML_BLOCKS}
    assert kinds == {"config", "recipe", "profile"}


def _yaml_kind(text: str) -> str:
    if text.startswith(PROFILE_MARK):
        return "profile"
    documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    return "recipe" if any("merge_method" in doc for doc in documents) else "config"


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=lambda block: block.where)
def test_each_yaml_block_passes_its_check(block, tmp_path, monkeypatch):
    assert not block.not_tested, "YAML blocks can always be checked"
    kind = _yaml_kind(block.text)
    if kind == "recipe":
        recipe = tmp_path / "recipe.yml"
        recipe.write_text(block.text)
        load_recipe(recipe)  # raises ExmeError naming what is wrong
    elif kind == "profile":
        checkout = _checkout(tmp_path)
        (checkout / "slurm").unlink()
        (checkout / "slurm").mkdir()
        (checkout / "slurm/config.yaml").write_text(block.text)
        _dry_run(checkout, ["--profile", "slurm"], {})
    else:
        overlay = tmp_path / "config.yaml"
        overlay.write_text(block.text)
        config = merge_config_files(REPO / "config/config.yaml", overlay)
        monkeypatch.chdir(_checkout(tmp_path))  # relative paths, as from the repository root
        prepare_config(config, SCHEMA)


@pytest.mark.parametrize("block", JSON_BLOCKS, ids=lambda block: block.where)
def test_each_json_block_is_valid_sft_data(block, tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_text(block.text)
    records, _ = read_sft_records(data)
    assert len(records) == len([line for line in block.text.splitlines() if line.strip()])


# Shell commands


def test_every_command_has_a_rule():
    unknown = [command.id for command in COMMANDS if command.argv[0] not in RULES]
    assert not unknown, f"no rule checks these commands: {unknown}"


def test_markers_are_few_and_give_a_reason():
    marked = [block for block in SHELL_BLOCKS + YAML_BLOCKS if block.not_tested]
    assert len(marked) <= 2, [block.where for block in marked]
    assert all(len(block.not_tested) > 10 for block in marked)


def _snakemake(command: Command, tmp_path: Path, monkeypatch) -> None:
    _dry_run(_checkout(tmp_path), list(command.argv[1:]), dict(command.env))


def _exme(command: Command, tmp_path: Path, monkeypatch) -> None:
    argv = list(command.argv[1:])
    if command.output is not None or {"--help", "-h", "--version"} & set(argv) or argv == ["methods"]:
        monkeypatch.setenv("COLUMNS", "100")  # argparse wraps help text at the terminal's width
        shown = _run_exme(argv)
        if command.output:
            assert shown.rstrip() == command.output.rstrip(), f"{command.id}: the output shown differs"
        return
    args = build_parser().parse_args(argv)  # exits on an option exme does not have
    if args.command == "merge":
        recipe = REPO / args.config
        if recipe.exists() or recipe.parent.exists():
            assert recipe.exists(), f"{command.id}: no {args.config}"
            (load_recipe if args.out_dir or args.out_path else load_named_merges)(recipe)


def _run_exme(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        code = main(argv)
        raise SystemExit(code)
    assert exit_.value.code in (0, None)
    return out.getvalue()


def _lm_eval(command: Command, tmp_path: Path, monkeypatch) -> None:
    from lm_eval._cli import HarnessCLI

    monkeypatch.setattr(sys, "argv", ["lm_eval", *command.argv[1:]])
    args = HarnessCLI().parse_args()  # exits on an option lm-eval does not have
    assert args.model == "hf" and args.tasks


def _pip(command: Command, tmp_path: Path, monkeypatch) -> None:
    argv = list(command.argv[1:])
    assert argv[0] == "install", command.id
    extras = PYPROJECT["project"]["optional-dependencies"]
    pins = {
        re.split(r"[=<>\[ ]", dep, maxsplit=1)[0].lower(): dep for dep in PYPROJECT["project"]["dependencies"]
    }
    index = 1
    while index < len(argv):
        token = argv[index]
        if token == "-e":
            target = argv[index + 1]
            match = re.fullmatch(r"\.(?:\[(\w+)\])?", target)
            assert match, f"{command.id}: installs {target}, not this checkout"
            assert match[1] is None or match[1] in extras, f"{command.id}: no extra {match[1]!r}"
            index += 2
        elif token == "--index-url":
            assert argv[index + 1].startswith("https://download.pytorch.org/whl/"), command.id
            index += 2
        elif token == "--no-deps":
            index += 1
        else:
            name = token.split("==")[0].lower()
            assert token == pins.get(name) or f" {token}" in CI, f"{command.id}: {token} is not pinned so"
            index += 1


def _setup(command: Command, tmp_path: Path, monkeypatch) -> None:
    """Creating and activating the venv: as CI does it."""
    assert shlex.join(command.argv) in CI, f"{command.id}: not how .ci/run sets up"


def _pytest(command: Command, tmp_path: Path, monkeypatch) -> None:
    argv = list(command.argv[1:])
    if not argv:
        assert re.search(r"^pytest\b", CI, re.MULTILINE), ".ci/run does not run `pytest`"
        return
    markers = {marker.split(":")[0] for marker in PYPROJECT["tool"]["pytest"]["ini_options"]["markers"]}
    for index, token in enumerate(argv):
        if index and argv[index - 1] == "-m":
            assert set(re.findall(r"\w+", token)) - {"not", "and", "or"} <= markers, command.id
        elif not token.startswith("-"):
            assert (REPO / token.split("::")[0]).exists(), f"{command.id}: no {token}"


def _python(command: Command, tmp_path: Path, monkeypatch) -> None:
    """A script with options: its --help lists each option used; one without: it runs as written."""
    script = REPO / command.argv[1]
    assert script.is_file(), f"{command.id}: no {command.argv[1]}"
    flags = [token.split("=")[0] for token in command.argv[2:] if token.startswith("--")]
    has_options = "argparse" in script.read_text()
    result = subprocess.run(
        [sys.executable, str(script), *(["--help"] if has_options else command.argv[2:])],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(flag in result.stdout for flag in flags), f"{command.id}: {flags} not all in its --help"


def _bash(command: Command, tmp_path: Path, monkeypatch) -> None:
    assert command.argv[1:] == (".ci/run",), command.id
    assert (REPO / ".ci/run").is_file()


def _cp(command: Command, tmp_path: Path, monkeypatch) -> None:
    sources = [token for token in command.argv[1:-1] if not token.startswith("-")]
    assert sources and all((REPO / source).exists() for source in sources), command.id


RULES = {
    "snakemake": _snakemake,
    "exme": _exme,
    "lm_eval": _lm_eval,
    "pip": _pip,
    "python3": _setup,
    ".": _setup,
    "source": _setup,
    "pytest": _pytest,
    "python": _python,
    "bash": _bash,
    "cp": _cp,
}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: command.id)
def test_each_command_runs(command, tmp_path, monkeypatch):
    RULES[command.argv[0]](command, tmp_path, monkeypatch)


def test_the_own_model_page_shows_the_example_config():
    page = next(block for block in YAML_BLOCKS if block.page.name == "own-model.md")
    shown = yaml.safe_load(page.text)
    assert shown == yaml.safe_load((REPO / "examples/own-model/config.yaml").read_text())

"""The conda envs of the rule families (`snakemake --sdm conda`): each pins exactly what pyproject.toml
pins, provides everything its rules' scripts import, and installs the package itself."""

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from functools import cache

import grimp
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from exme.train.launch import TRAINING_MODULE
from tests.workflow.snakemake_runner import REPO

ENVS = sorted(REPO.glob("envs/*.yaml"))
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
RULE = re.compile(r"^(?:rule|checkpoint) (\w+):\n(.*?)(?=^\S|\Z)", re.M | re.S)


def rules_by_env():
    """{env name: [(rule, script path)]}, read from the rule files' `conda:` and `script:`."""
    found = {}
    for rule_file in sorted(REPO.glob("workflow/rules/*.smk")):
        for name, body in RULE.findall(rule_file.read_text()):
            env = re.search(r'conda:\s*"\.\./\.\./envs/(\w+)\.yaml"', body)
            script = re.search(r'script:\s*"\.\./(scripts/\w+\.py)"', body)
            if env and script:
                found.setdefault(env[1], []).append((name, REPO / "workflow" / script[1]))
    return found


def pip_requirements(env_file):
    env = yaml.safe_load(env_file.read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    return [Requirement(line) for line in pip]


@cache
def importable_names(requirement: str) -> frozenset[str]:
    """The top-level modules that installing `requirement` provides, its dependencies' included
    (read from this machine's installed distributions, which pyproject.toml pins the same)."""
    modules_of = {}
    for module, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            modules_of.setdefault(distribution.lower().replace("_", "-"), set()).add(module)
    seen, names, todo = set(), set(), [Requirement(requirement)]
    while todo:
        req = todo.pop()
        key = req.name.lower().replace("_", "-")
        if (key, frozenset(req.extras)) in seen:
            continue
        seen.add((key, frozenset(req.extras)))
        names |= modules_of.get(key, set())
        for dependency in importlib.metadata.requires(req.name) or []:
            dep = Requirement(dependency)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in req.extras or [""]):
                todo.append(dep)
    return frozenset(names)


@cache
def exme_graph():
    """exme's import graph without the imports pyproject.toml's contracts list as made only when a
    function is called (`ignore_imports`: the engine a recipe is built with, torch for a dtype), so
    an env is asked for what its scripts load, not for what functions they never call would load."""
    graph = grimp.build_graph("exme", include_external_packages=True, exclude_type_checking_imports=True)
    linter = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    for contract in linter["contracts"]:
        for ignored in contract.get("ignore_imports", []):
            importer, imported = (name.strip() for name in ignored.split("->"))
            graph.remove_import(importer=importer, imported=imported)
    return graph


def third_party_imports(script):
    """Top-level third-party modules a rule script imports, through the exme modules it imports."""
    imported = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    if "exme.train.launch" in imported:  # the finetune rule trains in a child process
        imported.add(f"{TRAINING_MODULE}.__main__")
    graph = exme_graph()
    for module in [m for m in imported if m.split(".")[0] == "exme"]:
        imported |= graph.find_upstream_modules(module)
    top_level = {module.split(".")[0] for module in imported}
    return top_level - {"exme"} - set(sys.stdlib_module_names)


def test_every_rule_with_a_script_names_one_of_the_envs():
    assert sorted(rules_by_env()) == sorted(env.stem for env in ENVS)


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.stem)
def test_an_env_pins_python_and_exactly_what_pyproject_pins(env_file):
    env = yaml.safe_load(env_file.read_text())
    python = next(item for item in env["dependencies"] if str(item).startswith("python="))
    assert SpecifierSet(PYPROJECT["requires-python"]).contains(python.removeprefix("python="))
    assert "pip" in env["dependencies"]
    assert {str(req) for req in pip_requirements(env_file)} <= set(PYPROJECT["dependencies"])


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.stem)
def test_an_env_provides_every_import_of_its_rules_scripts(env_file):
    provided = set().union(*(importable_names(str(req)) for req in pip_requirements(env_file)))
    for rule, script in rules_by_env()[env_file.stem]:
        missing = third_party_imports(script) - provided
        assert not missing, f"rule {rule} ({script.name}) imports {sorted(missing)}, not in {env_file.name}"


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.stem)
def test_an_env_installs_the_package_after_it_is_built(env_file):
    post_deploy = env_file.with_suffix(".post-deploy.sh")
    assert post_deploy.resolve() == REPO / "envs/install_package.sh"


@pytest.mark.slow
def test_the_post_deploy_script_installs_this_checkout_editable(tmp_path):
    """As Snakemake runs it in a new env: `bash SCRIPT` with the env's python first on PATH."""
    subprocess.run([sys.executable, "-m", "venv", tmp_path / "env"], check=True)
    env_bin = tmp_path / "env/bin"
    environment = {**os.environ, "PATH": f"{env_bin}:{os.environ['PATH']}", "EXME_SOURCE": str(REPO)}
    environment.pop("PYTHONPATH", None)
    result = subprocess.run(
        ["bash", REPO / "envs/install_package.sh"], env=environment, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    where = subprocess.run(
        [env_bin / "python", "-c", "import exme; print(exme.__file__)"],
        env=environment,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert where.stdout.strip() == str(REPO / "src/exme/__init__.py")


def test_without_the_repository_root_the_post_deploy_script_says_why():
    environment = {key: value for key, value in os.environ.items() if key != "EXME_SOURCE"}
    result = subprocess.run(
        ["bash", REPO / "envs/install_package.sh"], env=environment, capture_output=True, text=True
    )
    assert result.returncode != 0 and "EXME_SOURCE" in result.stderr

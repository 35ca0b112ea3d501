"""The per-rule conda envs are real and agree with requirements.txt and with the workflow.

No conda channel is reachable here, so the envs cannot be built; these tests check
what can be: that each env file is well formed, that its pins are exactly
requirements.txt's, and that every rule (loaded through snakemake's API) names an
existing env that provides every package its script imports, and has a log.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (
    ConfigSettings,
    DeploymentSettings,
    OutputSettings,
    Quietness,
    ResourceSettings,
    StorageSettings,
    WorkflowSettings,
)

REPO = Path(__file__).resolve().parents[1]
ENV_DIR = REPO / "envs"
ENV_FILES = sorted(ENV_DIR.glob("*.yaml"))
SCRIPTS = REPO / "scripts"


def requirement_key(req: Requirement) -> tuple:
    """What must agree between two requirement lines: name, extras, version specifier, marker."""
    return (canonicalize_name(req.name), sorted(req.extras), str(req.specifier), str(req.marker or ""))


def read_requirements(path: Path) -> dict[str, Requirement]:
    """requirements.txt as {canonical name: Requirement} (comments and blank lines skipped)."""
    reqs = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-"):
            raise ValueError(f"{path}: pip option line '{line}' is not supported here; list plain requirements")
        if line:
            req = Requirement(line)
            reqs[canonicalize_name(req.name)] = req
    return reqs


def read_env(path: Path) -> dict:
    """A conda env file, parsed."""
    return yaml.safe_load(path.read_text())


def env_pip_requirements(env: dict) -> dict[str, Requirement]:
    """The pip section of a conda env as {canonical name: Requirement}."""
    pip_sections = [dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict) and "pip" in dep]
    reqs = [Requirement(line) for section in pip_sections for line in section]
    return {canonicalize_name(req.name): req for req in reqs}


def load_rules() -> list:
    """The workflow's rules, parsed by snakemake itself with the default config."""
    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
            workflow_api = api.workflow(
                snakefile=REPO / "workflow" / "Snakefile",
                workdir=REPO,
                config_settings=ConfigSettings(),
                resource_settings=ResourceSettings(),
                storage_settings=StorageSettings(),
                workflow_settings=WorkflowSettings(),
                deployment_settings=DeploymentSettings(),
            )
            return list(workflow_api._workflow.rules)
    finally:
        os.chdir(cwd)


def local_module_files(module: str) -> list[Path]:
    """Source files under scripts/ that importing `module` runs (its packages' __init__ too)."""
    files = []
    parts = module.split(".")
    for depth in range(1, len(parts) + 1):
        base = SCRIPTS.joinpath(*parts[:depth])
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                files.append(candidate)
    return files


def module_name(path: Path) -> str:
    """Dotted module name of a file under scripts/."""
    parts = path.relative_to(SCRIPTS).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules a source file imports (relative imports resolved)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            names.add(module)
            # `from pkg import sub` may import the submodule pkg.sub
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def third_party_imports(script: Path) -> set[str]:
    """Top-level third-party modules a script imports, following its imports of local modules."""
    seen: set[Path] = set()
    pending = [script]
    third_party = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imported_modules(path):
            top = module.split(".")[0]
            local = local_module_files(module)
            if local:
                pending.extend(local)
            elif not (SCRIPTS / top).exists() and not (SCRIPTS / f"{top}.py").exists():
                if top not in sys.stdlib_module_names and top != "__future__":
                    third_party.add(top)
    return third_party


REQUIREMENTS = read_requirements(REPO / "requirements.txt")


@pytest.fixture(scope="module")
def job_rules() -> list:
    """Rules that become jobs (not target-only rules such as `all`)."""
    rules = [rule for rule in load_rules() if not rule.norun]
    assert rules, "the workflow defines no rule that runs a job"
    return rules


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_file_is_a_conda_env_pinned_through_pip(path: Path):
    env = read_env(path)
    assert isinstance(env, dict) and {"name", "channels", "dependencies"} <= env.keys(), (
        f"{path} must be a mapping with name, channels and dependencies"
    )
    assert env["channels"] == ["conda-forge"], f"{path}: use only the conda-forge channel"
    conda_deps = [dep for dep in env["dependencies"] if not isinstance(dep, dict)]
    # Everything but the interpreter goes through pip, so requirements.txt pins it.
    assert sorted(conda_deps) == ["pip", "python=3.11"], f"{path}: conda dependencies must be python=3.11 and pip"
    assert env_pip_requirements(env), f"{path} has no pip section"


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_equal_requirements_txt(path: Path):
    for name, req in env_pip_requirements(read_env(path)).items():
        assert name in REQUIREMENTS, f"{path}: {req} is not in requirements.txt; add it there first"
        expected = REQUIREMENTS[name]
        assert requirement_key(req) == requirement_key(expected), (
            f"{path}: '{req}' differs from requirements.txt's '{expected}'; copy the requirements.txt line"
        )


def test_every_job_rule_has_a_log(job_rules: list):
    missing = [rule.name for rule in job_rules if not list(rule.log)]
    assert not missing, f"rules without log: {missing}; every job must write a log under results/logs/"


def test_every_job_rule_names_an_env_that_provides_its_imports(job_rules: list):
    distributions = importlib.metadata.packages_distributions()
    problems = []
    # snakemake forbids conda: beside run:, so only script/shell/notebook/wrapper rules need one.
    for rule in (rule for rule in job_rules if not rule.is_run):
        if not rule.conda_env:
            problems.append(f"rule {rule.name} has no conda: directive; add conda: '../envs/<kind>.yaml'")
            continue
        env_path = (Path(str(rule.basedir)) / rule.conda_env).resolve()
        if env_path.parent != ENV_DIR or not env_path.is_file():
            problems.append(f"rule {rule.name}: conda env {rule.conda_env} is not a file in {ENV_DIR}")
            continue
        if not rule.script:
            continue
        script = (Path(str(rule.basedir)) / rule.script).resolve()
        if not script.is_file():
            problems.append(f"rule {rule.name}: its script {script} does not exist")
            continue
        provided = set(env_pip_requirements(read_env(env_path)))
        for module in sorted(third_party_imports(script)):
            names = {canonicalize_name(dist) for dist in distributions.get(module, [])}
            if not names:
                problems.append(f"{script.name} imports {module}, which no installed package provides")
            elif not names & provided:
                problems.append(
                    f"rule {rule.name}: {script.relative_to(REPO)} (or a module it imports) imports {module}, "
                    f"but {env_path.name} does not list {' or '.join(sorted(names))}"
                )
    assert not problems, "\n".join(problems)

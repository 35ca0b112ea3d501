"""The docs agree with the repository: links and anchors resolve, quoted counts equal a dry run, nothing points outside.

A count the docs quote carries a marker right after the number, checked against the
workflow itself: `47<!-- jobs -->` (the total `snakemake -n` plans for the default),
`126<!-- jobs:evaluate config/paper.yaml -->` (one rule's jobs under those config files),
`20<!-- attacks config/paper.yaml -->` (attacks per evaluate job: test + sanity), and
`test-attacks` / `sanity-attacks` for the two parts. A number of jobs or attacks written
without a marker fails, so a new page cannot quote an unchecked count.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# The pages a user reads; the schema and the report's captions must stand alone too.
PAGES = ["README.md", "config/README.md", "docs/*.md"]
STANDALONE = [*PAGES, "config/*.yaml", "config/schema/*.yaml", "report/*.rst"]
# Files a clone does not have (the project's working notes), however they are named.
OUTSIDE = re.compile(r"\.\./shared|shared/paper|shared/SPEC|\bSPEC\b|the project's specification", re.IGNORECASE)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
MARKER = re.compile(r"([\d,]+)\s*<!--\s*(jobs(?::[a-z_]+)?|attacks|test-attacks|sanity-attacks)((?:\s+\S+\.yaml)*)\s*-->")
UNMARKED = re.compile(r"\b(\d[\d,]*)(?!\s*<!--)\s+(?:(?:test|sanity|evaluate|train|training|model|small|more)\s+)?(jobs|attacks)\b(?!\s+(?:per|at a time))")
WORKFLOW_PARTS = ["workflow", "rules", "scripts", "config", "envs", "report", "profiles"]


def pages(root: Path, patterns=PAGES) -> list[Path]:
    return sorted(path for pattern in patterns for path in root.glob(pattern))


def without_code(text: str) -> str:
    """The text with fenced code blocks blanked (line numbers kept): links there are examples."""
    return re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for line in without_code(path.read_text()).splitlines():
        if line.startswith("#"):
            base = slug(line.lstrip("#"))
            n = seen.get(base, 0)
            found.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return found


def broken_links(root: Path) -> list[str]:
    """'page:line: target (why)' for every relative link or anchor that does not resolve."""
    problems = []
    for page in pages(root):
        for number, line in enumerate(without_code(page.read_text()).splitlines(), 1):
            for target in LINK.findall(line):
                if re.match(r"[a-z]+:", target):
                    continue  # http(s), mailto: not ours to check offline
                file_part, _, anchor = target.partition("#")
                dest = (page.parent / file_part).resolve() if file_part else page
                where = f"{page.relative_to(root)}:{number}: {target}"
                if not dest.exists() or not dest.resolve().is_relative_to(root.resolve()):
                    problems.append(f"{where} (no such file in the repository)")
                elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                    problems.append(f"{where} (no heading with anchor #{anchor})")
    return problems


def outside_references(root: Path) -> list[str]:
    return [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in pages(root, STANDALONE)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]


def workflow_copy(root: Path, dest: Path) -> Path:
    """The workflow's sources without results/, so a dry run plans everything."""
    for part in WORKFLOW_PARTS:
        shutil.copytree(root / part, dest / part, ignore=shutil.ignore_patterns("__pycache__", "results"))
    return dest


@functools.cache
def dry_run(root: Path, configs: tuple[str, ...], scratch: Path) -> dict[str, int]:
    """Jobs per rule (and 'total') that `snakemake -n` plans from scratch for `configs` over the default."""
    work = workflow_copy(root, scratch / f"dry{len(os.listdir(scratch))}")
    args = ["--configfile", *configs] if configs else []
    env = os.environ | {"TORCH_HOME": str(scratch / "empty-torch-home")}  # plans the weights job too
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", *args], cwd=work, capture_output=True, text=True, timeout=600, env=env
    )
    assert run.returncode == 0, run.stderr[-2000:]
    stats = run.stdout[run.stdout.rindex("Job stats:") :]
    counts = {name: int(n) for name, n in re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.MULTILINE)}
    return counts


def eval_attacks(root: Path, configs: tuple[str, ...]) -> tuple[int, int]:
    """(test attacks, sanity attacks) of one evaluate job, from the merged, validated config as the workflow plans them."""
    from snakemake.utils import update_config, validate

    sys.path.insert(0, str(root / "scripts"))
    from dpaat.sanity import SanityPlan

    config = yaml.safe_load((root / "config/config.yaml").read_text())
    for name in configs:
        update_config(config, yaml.safe_load((root / name).read_text()))
    validate(config, str(root / "config/schema/config.schema.yaml"))
    attacks = {a["name"]: a for a in config["attacks"]}
    plan = SanityPlan.from_config(config["sanity"], config["training"]["adversary"], attacks)
    return len(config["attacks"]), len(plan.attacks)


def count_mismatches(root: Path, scratch: Path, workflow: Path = REPO) -> list[str]:
    """'page:line: quoted N, the workflow gives M' for every marked count in `root`'s pages (counted by `workflow`), and every count left unmarked."""
    problems = []
    for page in pages(root):
        for number, line in enumerate(page.read_text().splitlines(), 1):
            where = f"{page.relative_to(root)}:{number}"
            for quoted, what, configs in MARKER.findall(line):
                configs = tuple(configs.split())
                if what.startswith("jobs"):
                    rule = what.partition(":")[2] or "total"
                    actual = dry_run(workflow, configs, scratch).get(rule, 0)
                else:
                    test, sanity = eval_attacks(workflow, configs)
                    actual = {"attacks": test + sanity, "test-attacks": test, "sanity-attacks": sanity}[what]
                if int(quoted.replace(",", "")) != actual:
                    problems.append(f"{where}: quotes {quoted} {what} {' '.join(configs)}, the workflow gives {actual}")
            for quoted, what in UNMARKED.findall(MARKER.sub("", line)):
                problems.append(f"{where}: '{quoted} … {what}' has no <!-- {what} … --> marker to check it by")
    return problems


def table_one(path: Path) -> list[str]:
    """The rows of the first Markdown table whose header starts '| Method | FGSM'."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\|\s*Method\s*\|\s*FGSM", line))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(re.sub(r"\s+", " ", line.strip()))
    return rows


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("docs")


def test_every_relative_link_and_anchor_resolves():
    assert broken_links(REPO) == []


def test_nothing_refers_to_files_outside_the_repository():
    assert outside_references(REPO) == []


def test_quoted_job_and_attack_counts_equal_what_the_workflow_plans(scratch):
    assert count_mismatches(REPO, scratch) == []


def test_the_readmes_table_one_is_default_runs():
    assert table_one(REPO / "README.md") == table_one(REPO / "docs/default-run.md")


def planted(tmp_path: Path) -> Path:
    """A copy of the repository (no results, no venv) to plant mistakes in."""
    ignore = shutil.ignore_patterns(".git", ".venv", ".snakemake", "results", "__pycache__", ".pytest_cache")
    return Path(shutil.copytree(REPO, tmp_path / "repo", ignore=ignore))


def test_the_check_finds_a_planted_broken_link_and_anchor(tmp_path):
    root = planted(tmp_path)
    assert broken_links(root) == []
    page = root / "docs" / "running.md"
    page.write_text(page.read_text() + "\nSee [gone](no-such-page.md) and [there](scaling.md#no-such-section).\n")
    found = broken_links(root)
    assert len(found) == 2
    assert "no-such-page.md (no such file" in found[0] and "#no-such-section (no heading" in found[1]


def test_the_check_finds_a_planted_wrong_job_count_and_an_unmarked_one(tmp_path, scratch):
    root = planted(tmp_path)
    page = root / "docs" / "running.md"
    right = dry_run(REPO, (), scratch)["total"]
    page.write_text(
        page.read_text() + f"\nThe default plans {right + 1}<!-- jobs --> jobs, {right}<!-- jobs --> in fact; 12 jobs.\n"
    )
    found = [p for p in count_mismatches(root, scratch) if p.startswith("docs/running.md")]
    assert len(found) == 2
    assert f"quotes {right + 1} jobs , the workflow gives {right}" in found[0]
    assert "'12 … jobs' has no <!-- jobs … --> marker" in found[1]

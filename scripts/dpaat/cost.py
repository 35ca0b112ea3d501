"""What a config's grid costs before it runs: PFLOP and GPU-hours per rule, from Snakemake's own job list.

    PYTHONPATH=scripts python -m dpaat.cost --configfile config/paper.yaml [overlays ...]
    make plan CONFIG="config/paper.yaml ..."

The jobs are those `snakemake --dry-run --forceall` lists for the config (the whole grid, whatever
is already built), so the plan and the workflow cannot disagree. Each model job's work is
`dpaat.job_resources.work_gflop` (the counted cost model: the attacks' cascades and early stops
at the robust accuracy `job_resources.expected_accuracy` assumes); the GPU-hours follow at each
throughput of `GPU_GFLOPS` and at the config's own `job_resources.gpu_gflops`.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dpaat.job_resources import REPO, load_config, runtime_minutes, work_gflop

# Effective GFLOP/s of one model job per GPU kind. None is measured yet (benchmarks/gpu_check.py,
# then `python -m dpaat.job_resources calibrate`): every figure is an assumption, labelled so.
GPU_GFLOPS: Mapping[str, tuple[float, str]] = {
    "H100 (assumed: 5 % of its 989 TFLOP/s dense bf16 peak)": (50_000.0, "assumed"),
    "A100 (assumed: 5 % of its 312 TFLOP/s dense bf16 peak)": (15_600.0, "assumed"),
}
# The rules with a cost model, and the rule whose formula each uses.
MODEL_RULES: Mapping[str, str] = {
    "train": "train",
    "train_ablation": "train",
    "evaluate": "evaluate",
    "evaluate_ablation": "evaluate_ablation",
    "gradcam": "gradcam",
}
_JOB = re.compile(r"^(?:local)?rule (\w+):$")
_WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")


@dataclass(frozen=True)
class Job:
    """One job of the dry run: its rule and wildcards."""

    rule: str
    wildcards: tuple[tuple[str, str], ...]


def dry_run_jobs(configfiles: Sequence[str]) -> list[Job]:
    """Every job `snakemake --dry-run --forceall` lists for `configfiles` (run in the repository)."""
    command = [sys.executable, "-m", "snakemake", "--dry-run", "--forceall", "--cores", "1"]
    if configfiles:
        command += ["--configfile", *configfiles]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"snakemake --dry-run failed for {list(configfiles)}:\n{done.stderr[-3000:]}")
    return parse_dry_run(done.stdout)


def parse_dry_run(text: str) -> list[Job]:
    """The jobs of a dry run's output: each 'rule NAME:' block with its 'wildcards:' line."""
    jobs: list[Job] = []
    rule, wildcards = None, ()
    for line in text.splitlines():
        match = _JOB.match(line)
        if match:
            if rule is not None:
                jobs.append(Job(rule, wildcards))
            rule, wildcards = match.group(1), ()
            continue
        match = _WILDCARDS.match(line)
        if match and rule is not None:
            wildcards = tuple(tuple(item.split("=", 1)) for item in match.group(1).split(", "))  # type: ignore[misc]
        elif rule is not None and not line.startswith((" ", "\t")) and not line.startswith("["):
            jobs.append(Job(rule, wildcards))
            rule = None
    if rule is not None:
        jobs.append(Job(rule, wildcards))
    return jobs


def ablation_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` with the ablation's training schedule (rules/common.smk's ABLATION_TRAINING_SETTINGS)."""
    schedule = {k: config["ablation"][k] for k in ("batch_size", "epochs") if config["ablation"][k] is not None}
    return {**config, "training": {**config["training"], **schedule}}


def job_gflop(config: Mapping[str, Any], job: Job) -> float:
    """The cost model's GFLOP of one model job (0 for the data and report rules: CPU work of minutes)."""
    if job.rule not in MODEL_RULES:
        return 0.0
    wildcards = dict(job.wildcards)
    settings = ablation_config(config) if job.rule.endswith("_ablation") else config
    return work_gflop(settings, MODEL_RULES[job.rule], wildcards["arch"], wildcards.get("method"))


@dataclass(frozen=True)
class RuleCost:
    """One rule's jobs and their work."""

    rule: str
    jobs: int
    pflop: float
    request_hours: float


def plan(config: Mapping[str, Any], jobs: Sequence[Job]) -> list[RuleCost]:
    """Per rule (in dry-run order of first appearance): its job count and PFLOP."""
    rows: dict[str, list[tuple[float, float]]] = {}
    for job in jobs:
        rows.setdefault(job.rule, []).append((job_gflop(config, job) / 1e6, job_request_hours(config, job)))
    return [RuleCost(rule, len(v), sum(p for p, _ in v), sum(h for _, h in v)) for rule, v in rows.items()]


def job_request_hours(config: Mapping[str, Any], job: Job) -> float:
    """The runtime a model job asks the scheduler for, in hours (first attempt; 0 for other rules)."""
    if job.rule not in MODEL_RULES:
        return 0.0
    wildcards = dict(job.wildcards)
    settings = ablation_config(config) if job.rule.endswith("_ablation") else config
    threads = config["training"]["threads"]
    minutes = runtime_minutes(
        settings, MODEL_RULES[job.rule], wildcards["arch"], wildcards.get("method"), threads=threads
    )
    return minutes / 60


def gpu_hours(pflop: float, gflops: float) -> float:
    """Hours of one GPU slot for `pflop` at `gflops` effective GFLOP/s."""
    return pflop * 1e6 / gflops / 3600


def render(config: Mapping[str, Any], rows: Sequence[RuleCost], configfiles: Sequence[str]) -> str:
    """The plan as text: a row per rule, the total, then GPU-hours per throughput."""
    assumed = config["job_resources"]["expected_accuracy"]
    lines = [
        f"plan for {' + '.join(['config/config.yaml', *configfiles])}",
        "work: the counted cost model (dpaat.job_resources), forward-equivalent passes × GFLOP per pass;",
        f"  robust accuracy assumed (job_resources.expected_accuracy): clean {assumed['clean']}, "
        f"STD {assumed['robust_std']}, adversarially trained {assumed['robust_adversarial']}",
        "",
        f"{'rule':<20} {'jobs':>6} {'PFLOP':>12} {'requested h':>12}",
    ]
    for row in rows:
        lines.append(f"{row.rule:<20} {row.jobs:>6} {row.pflop:>12.4g} {row.request_hours:>12.4g}")
    total = sum(r.pflop for r in rows)
    requested = sum(r.request_hours for r in rows)
    lines += [
        f"{'total':<20} {sum(r.jobs for r in rows):>6} {total:>12.4g} {requested:>12.4g}",
        "(requested h: the runtime requests, margin and setup_minutes included; hours below: the work alone)",
        "",
    ]
    lines.append(f"{'throughput (one model job)':<60} {'GFLOP/s':>9} {'hours':>10}")
    settings = config["job_resources"]
    rates = [
        ("GPU: job_resources.gpu_gflops (assumed; the SLURM requests use it)", settings["gpu_gflops"]),
        *((f"GPU: {name}", rate) for name, (rate, _) in GPU_GFLOPS.items()),
        (
            f"CPU: cpu_gflops_per_thread × {config['training']['threads']} threads (measured 4-27 per thread)",
            settings["cpu_gflops_per_thread"] * max(1, config["training"]["threads"]),
        ),
    ]
    for name, rate in rates:
        lines.append(f"{name:<60} {rate:>9.4g} {gpu_hours(total, rate):>10.4g}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the plan of `--configfile`s (config/config.yaml alone when none)."""
    parser = argparse.ArgumentParser(prog="python -m dpaat.cost", description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", nargs="*", default=[], help="config files over config/config.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.configfile)
    print(render(config, plan(config, dry_run_jobs(args.configfile)), args.configfile), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run workflows through the execution profiles, the cluster ones on a real one-node SLURM cluster.

The cluster (tests/slurm_cluster.py) declares two GPUs as a generic resource, so a
rule's `gpu=1` must reach sbatch and be counted by slurmctld. Every check reads the
cluster's own record of a job (`scontrol show job`), not snakemake's claims.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import slurm_cluster
import yaml

REPO = Path(__file__).resolve().parents[1]
# What a copy of the pipeline needs to run; its results/ then lands in the copy.
PIPELINE_PARTS = ("workflow", "rules", "scripts", "config", "envs", "profiles", "report", "tests/configs")
TINY_CONFIG = "tests/configs/tiny.yaml"
# Faster polling than the profiles' cluster defaults, for seconds-long test jobs.
FAST_POLLING = {
    "workstation": [],
    "slurm": ["--slurm-init-seconds-before-status-checks", "2"],
    "cluster-generic": ["--seconds-between-status-checks", "2"],
}

TOY_SNAKEFILE = """
rule all:
    input:
        "results/summary.txt",


rule prepare:
    output:
        "results/numbers.txt",
    log:
        "results/logs/prepare.log",
    shell:
        "(echo slurm_job=${{SLURM_JOB_ID:-none}}; seq 1 5) > {output} 2> {log}"


rule square:
    input:
        rules.prepare.output,
    output:
        "results/squares.txt",
    log:
        "results/logs/square.log",
    resources:
        gpu=1,
        mem_mb=500,
        runtime=5,
    shell:
        "(echo slurm_job=${{SLURM_JOB_ID:-none}}; grep -v = {input} | awk '{{print $1*$1}}') > {output} 2> {log}"


rule summarise:
    input:
        rules.square.output,
    output:
        "results/summary.txt",
    log:
        "results/logs/summarise.log",
    shell:
        "(echo slurm_job=${{SLURM_JOB_ID:-none}}; grep -v = {input} | awk '{{s += $1}} END {{print s}}') > {output} 2> {log}"
"""


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory):
    """A running one-node SLURM cluster for the whole session, stopped at the end."""
    reason = slurm_cluster.unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = slurm_cluster.start_cluster(tmp_path_factory.mktemp("slurm-state"))
    print(f"\nSLURM cluster up in {cluster.start_seconds:.1f} s")
    yield cluster
    cluster.stop()


def run_snakemake(workdir: Path, profile: str, *args: str, timeout: float) -> tuple[str, float]:
    """Run snakemake in `workdir` with `profile`; return its output and wall time, failing loudly."""
    command = [sys.executable, "-m", "snakemake", "--profile", f"profiles/{profile}", *FAST_POLLING[profile], *args]
    began = time.monotonic()
    result = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=os.environ | {"PYTHONUNBUFFERED": "1"}
    )
    seconds = time.monotonic() - began
    output = result.stdout + result.stderr
    if result.returncode != 0:
        logs = "\n".join(f"--- {p} ---\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(workdir.rglob("*.log")))
        pytest.fail(f"{' '.join(command)} failed ({result.returncode}) after {seconds:.0f} s:\n{output[-6000:]}\n{logs}")
    return output, seconds


def job_counts(output: str) -> dict[str, int]:
    """Jobs per rule from the first "Job stats" table snakemake prints (target-only rules dropped)."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)}
    counts.pop("all", None)
    return counts


def submitted_jobs(output: str) -> list[tuple[str, int, str]]:
    """(rule, gpu resource, SLURM job id) of every job the slurm executor submitted, from its log."""
    described = {}
    for match in re.finditer(r"^rule (\w+):\n(.*?)(?=^\S)", output, flags=re.MULTILINE | re.DOTALL):
        jobid = re.search(r"^\s+jobid: (\d+)$", match[2], flags=re.MULTILINE)
        gpu = re.search(r"^\s+resources: .*\bgpu=(\d+)", match[2], flags=re.MULTILINE)
        described[jobid[1]] = (match[1], int(gpu[1]) if gpu else 0)
    submitted = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output)
    return [(*described[jobid], slurm_id) for jobid, slurm_id in submitted]


def slurm_job(job_id: str) -> dict[str, str]:
    """slurmctld's record of a job as key=value pairs (finished jobs stay MinJobAge seconds)."""
    result = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True)
    return dict(re.findall(r"(\w+)=(\S*)", result.stdout))


def gpu_request(job: dict[str, str]) -> str:
    """The GPU part of a job's trackable resources ('' when it asked for none)."""
    return ",".join(job[key] for key in ("TresPerJob", "TresPerNode", "TresPerTask") if "gpu" in job.get(key, ""))


def toy_workflow(tmp_path: Path) -> Path:
    """A three-job workflow (the middle job needs a GPU) beside a copy of the profiles."""
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    return tmp_path


def pipeline_copy(tmp_path: Path) -> Path:
    """A copy of the pipeline's sources in tmp_path, so its results/ stay out of the repository."""
    for part in PIPELINE_PARTS:
        shutil.copytree(REPO / part, tmp_path / part)
    return tmp_path


def job_ids(workdir: Path) -> dict[str, str]:
    """The SLURM job id each toy rule recorded in its output."""
    outputs = {"prepare": "numbers", "square": "squares", "summarise": "summary"}
    ids = {}
    for rule, stem in outputs.items():
        first_line = (workdir / "results" / f"{stem}.txt").read_text().splitlines()[0]
        ids[rule] = first_line.removeprefix("slurm_job=")
    return ids


@pytest.mark.parametrize("profile", ["workstation", "slurm", "cluster-generic"])
def test_profile_plans_the_toy_workflow(tmp_path: Path, profile: str):
    output, _ = run_snakemake(toy_workflow(tmp_path), profile, "--dry-run", timeout=120)
    assert job_counts(output) == {"prepare": 1, "square": 1, "summarise": 1}, output


@pytest.mark.slow
def test_workstation_profile_runs_the_toy_workflow(tmp_path: Path):
    workdir = toy_workflow(tmp_path)
    run_snakemake(workdir, "workstation", timeout=120)
    assert (workdir / "results/summary.txt").read_text().splitlines()[1] == str(sum(i * i for i in range(1, 6)))


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.parametrize("profile", ["slurm", "cluster-generic"])
def test_toy_workflow_runs_through_sbatch_with_a_gpu(slurm: slurm_cluster.SlurmCluster, tmp_path: Path, profile: str):
    workdir = toy_workflow(tmp_path)
    output, seconds = run_snakemake(workdir, profile, "--jobs", "2", timeout=300)
    print(f"toy workflow through profiles/{profile}: {seconds:.1f} s")

    assert (workdir / "results/summary.txt").read_text().splitlines()[1] == str(sum(i * i for i in range(1, 6)))
    ids = job_ids(workdir)
    assert all(job_id.isdigit() for job_id in ids.values()), f"a job did not run inside SLURM: {ids}"
    assert len(set(ids.values())) == 3, f"each job must be its own SLURM job: {ids}"
    jobs = {rule: slurm_job(job_id) for rule, job_id in ids.items()}
    assert all(job["JobState"] == "COMPLETED" for job in jobs.values()), jobs
    assert re.search(r"gpu[:=]1\b", gpu_request(jobs["square"])), jobs["square"]
    assert not re.search(r"gpu[:=][1-9]", gpu_request(jobs["prepare"]) + gpu_request(jobs["summarise"]))
    if profile == "slurm":
        assert sorted(submitted_jobs(output)) == sorted(
            (rule, 1 if rule == "square" else 0, job_id) for rule, job_id in ids.items()
        )
        for rule, job_id in ids.items():
            assert (workdir / f"results/logs/slurm/rule_{rule}/{job_id}.log").is_file()
    else:
        for rule, job_id in ids.items():
            assert (workdir / f"results/logs/cluster/{rule}-{job_id}.log").is_file()


@pytest.mark.slow
@pytest.mark.slurm
def test_data_stage_and_training_run_through_the_slurm_profile(slurm: slurm_cluster.SlurmCluster, tmp_path: Path):
    workdir = pipeline_copy(tmp_path)
    tiny = yaml.safe_load((workdir / TINY_CONFIG).read_text())
    # The data stage and one training job: the whole DAG takes several minutes on two cores.
    target = f"results/models/{tiny['seeds'][0]}/{tiny['training']['methods'][0]}/{tiny['models']['archs'][0]}/run.json"
    # The tiny config pins jobs to the CPU (gpu=0); "auto" makes the model jobs ask for
    # a GPU as on a real cluster while still running on the CPU: the fake GPUs set no
    # CUDA_VISIBLE_DEVICES (tests/slurm_cluster.py), so nothing says a GPU is there.
    (workdir / "gpu.yaml").write_text("training:\n  device: auto\n")
    configs = ["--configfile", TINY_CONFIG, "gpu.yaml"]
    output, seconds = run_snakemake(workdir, "slurm", *configs, "--jobs", "2", target, timeout=600)
    print(f"data stage + one training job through profiles/slurm: {seconds:.1f} s")

    check, _ = run_snakemake(workdir, "workstation", *configs, "--dry-run", target, timeout=120)
    assert "Nothing to be done" in check, f"{target} missing or stale after the SLURM run:\n{check}"
    planned = job_counts(output)
    local = Counter(re.findall(r"^localrule (\w+):$", output, flags=re.MULTILINE))
    remote = {rule: n - local[rule] for rule, n in planned.items() if n > local[rule]}
    assert {"cache", "train"} <= remote.keys(), planned
    # The profile keeps one SLURM log per job, named after its SLURM job id.
    logs = {rule: sorted((workdir / "results/logs/slurm" / f"rule_{rule}").rglob("*.log")) for rule in planned}
    assert {rule: len(files) for rule, files in logs.items() if files} == remote, logs
    submitted = submitted_jobs(output)
    assert sorted(slurm_id for *_, slurm_id in submitted) == sorted(p.stem for files in logs.values() for p in files)
    # Each job's GPU request, as slurmctld recorded it, matches its rule's gpu resource.
    assert any(gpu for _, gpu, _ in submitted), f"no job asked for a GPU: {submitted}"
    for rule, gpu, slurm_id in submitted:
        job = slurm_job(slurm_id)
        assert job["JobState"] == "COMPLETED", (rule, job)
        # The profile's one edit: model rules go to the GPU partition, the rest to the default.
        expected = slurm_cluster.GPU_PARTITION if rule in ("train", "evaluate", "gradcam") else slurm_cluster.PARTITION
        assert job["Partition"] == expected, (rule, job["Partition"])
        request = gpu_request(job)
        assert re.search(rf"gpu[:=]{gpu}\b", request) if gpu else not request, (rule, gpu, request)

"""benchmarks/gpu_check.sh and gpu_check.py at toy sizes on the CPU, so that the prepared GPU check cannot rot
between GPU loans: its smoke form runs the GPU's program (gpu.fast_paths: always)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_gpu_command_runs_every_section_on_the_cpu_and_writes_its_report_and_log(tmp_path):
    out = tmp_path / "gpu"
    run = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(out), "--cpu-smoke"],
        capture_output=True, text=True, timeout=400,
        env=os.environ | {"OMP_NUM_THREADS": "1", "PYTHON": sys.executable, "WHEELS": str(tmp_path / "no-wheels")},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    report = (out / "GPU.md").read_text()
    assert (out / "gpu_check.log").read_text().count("## ") == report.count("## "), "the log holds the report"
    for section in ("## Versions", "## cuda-marked tests", "## PGD: ours vs torchattacks",
                    "## One training step of every method", "## What training.deterministic costs",
                    "## Jobs per GPU", "## The paper grid's time"):  # fmt: skip
        assert section in report, section
    assert "Section failed" not in report and "out of time" not in report
    assert "| fast paths in force | channels_last, fused_adam, bf16, gpu_batch_size (gpu.fast_paths: always) |" in report
    assert "exit 0" in report and "skipped" in report, "the cuda tests are collected (and skipped without a GPU)"
    for method in ("std", "at", "sat", "amat", "dpaat", "d_a", "d_b", "trades", "mart"):
        assert f"| squeezenet1_1 | {method} | " in report
    assert "| 1 | " in report and "| 2 | " in report, "the mini-grid ran with 1 and 2 jobs"
    assert "std, at, sat, amat, dpaat, trades, mart" in report, "the grid counts every trained method of paper.yaml"
    assert "| evaluate | " in report and "T_grid hours on one GPU" in report


def test_a_failed_section_is_reported_and_what_ran_before_it_is_kept(tmp_path):
    gpu_check = gpu_check_module()
    out = tmp_path / "GPU.md"
    report = gpu_check.Report(budget=60, out=out)
    report.add("## First", "kept")

    def crash(report):
        report.add("## Second", "")
        raise RuntimeError("view size is not compatible")

    assert report.section(crash) is None
    report.section(lambda report: report.add("## Third", "ran"))
    text = out.read_text()
    assert text.index("kept") < text.index("**Section failed:** `RuntimeError: view size is not compatible`")
    assert text.index("Section failed") < text.index("## Third") and not list(tmp_path.glob("*.partial"))


def test_the_grid_estimate_counts_every_model_job_of_the_paper_config():
    gpu_check = gpu_check_module()
    config = gpu_check.paper_config()
    assert config["sanity"]["tolerance"] == 0.05 and config["job_resources"]["margin"] == 1.5, "the schema's defaults"
    work = gpu_check.paper_grid_work(config)
    only_std = gpu_check.paper_grid_work({**config, "training": {**config["training"], "methods": ["std"]}})
    # Each trained method adds its training and its evaluation jobs; TRADES and MART are among them.
    assert set(config["training"]["methods"]) >= {"trades", "mart"}
    assert work["evaluate"] == pytest.approx(len(config["training"]["methods"]) * only_std["evaluate"])
    assert work["train"] > 7 * only_std["train"] and work["train_ablation"] > 0 and work["gradcam"] > 0

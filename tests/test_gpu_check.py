"""benchmarks/gpu_check.py at toy sizes on the CPU, so that the prepared GPU check cannot rot between GPU loans."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_runs_every_section_on_the_cpu_and_writes_its_report(tmp_path):
    out = tmp_path / "GPU.md"
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--cpu-smoke", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=os.environ | {"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    report = out.read_text()
    for section in ("## Versions", "## cuda-marked tests", "## PGD: ours vs torchattacks",
                    "## One training step of every method", "## Jobs per GPU", "## The paper grid's training time"):  # fmt: skip
        assert section in report, section
    assert "exit 0" in report and "skipped" in report, "the cuda tests are collected (and skipped without a GPU)"
    for method in ("std", "at", "sat", "amat", "dpaat", "d_a", "d_b"):
        assert f"| squeezenet1_1 | {method} | " in report
    assert "| 1 | " in report and "| 2 | " in report, "the mini-grid ran with 1 and 2 jobs"
    assert "T_grid hours on one GPU" in report and "out of time" not in report

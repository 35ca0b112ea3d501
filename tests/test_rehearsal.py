"""The GPU's program rehearsed on the CPU: the paper-shaped workflow under gpu.fast_paths: always, end to end.

tests/configs/rehearsal.yaml has config/paper.yaml's kinds of jobs and attacks at toy sizes, and
turns on every CUDA fast path that has a CPU implementation (channels_last models and batches,
bf16 autocast of training, fused Adam, evaluation.gpu_batch_size), so the branches a GPU run
takes are run here, where CI runs.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from test_workflow import copy_repo, snakemake


@pytest.mark.slow
def test_the_paper_shaped_workflow_runs_to_the_end_with_every_fast_path(tmp_path):
    run = snakemake(copy_repo(tmp_path), "--cores", "2", "--resources", "gpu=1", "--configfile",
                    "tests/configs/rehearsal.yaml", timeout=1800)  # fmt: skip
    assert run.returncode == 0, run.stderr[-6000:]
    results = tmp_path / "results"
    methods = ["std", "at", "sat", "amat", "dpaat", "trades", "mart"]
    for method in methods:
        record = json.loads((results / f"models/0/{method}/mobilenet_v2/run.json").read_text())
        assert record["fast_paths"] == ["channels_last", "fused_adam", "bf16"], method
        log = (results / f"logs/evaluate/0/{method}/mobilenet_v2.log").read_text()
        assert "fast paths in force on cpu (gpu.fast_paths: always): channels_last, gpu_batch_size" in log
        assert "batches of 5" in log, "evaluation.gpu_batch_size, not batch_size"
    for method in ("at", "d_a", "d_b", "dpaat"):
        record = json.loads((results / f"ablation/batch4_epochs1/models/0/{method}/mobilenet_v2/run.json").read_text())
        assert record["fast_paths"] == ["channels_last", "fused_adam", "bf16"], method
    assert "gpu.fast_paths: always): channels_last" in (results / "logs/gradcam/mobilenet_v2.log").read_text()
    metrics = pd.read_parquet(results / "metrics/metrics.parquet")
    test_attacks = {"clean", "fgsm", "ifgsm2", "pgd2", "apgd", "autoattack", "square5"}
    assert test_attacks < set(metrics["attack"]) and {"autoattackwhitebox", "restarts", "curvel2x4"} < set(metrics["attack"])
    assert sorted(metrics["method"].unique()) == sorted(methods) and metrics["accuracy"].between(0, 1).all()
    for table in ("table1", "table2", "baselines", "claims", "sanity", "gradcam"):
        assert (results / f"tables/{table}.md").stat().st_size > 0, table

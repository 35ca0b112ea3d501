"""A researcher's first run: ImageNet weights fetched by the workflow, a killed run recovered, and the
downloading rules kept on the node that has the internet under the SLURM profile."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from data_helpers import serving
from test_imagenet_weights import checkpoint
from test_workflow import REPO, SNAKEMAKE, copy_repo, snakemake

from dpaat.trained import load_trained

ARCH = "squeezenet1_1"
TARGET = f"results/models/0/std/{ARCH}/weights.pt"
CHECKPOINT = f"results/checkpoints/0/std/{ARCH}.pt"


def pretrained_config(base_url: str, name: str) -> dict:
    """One pretrained SqueezeNet trained long enough (tiny steps, no early stop) to be killed mid-run."""
    return {
        "seeds": [0],
        "data": {
            "classes": ["mel", "bkl", "nv"],
            "train_per_class": 8,
            "test_per_class": 2,
            "val_fraction": 0.25,
            "synthetic": {"seed": 1, "images": {"mel": 14, "bkl": 14, "nv": 14, "bcc": 2}},
        },
        "models": {
            "archs": [ARCH],
            "image_size": 32,
            "pretrained": True,
            "weights_base_url": base_url,
            "weights_files": {ARCH: name},
        },
        "training": {"methods": ["std"], "warmup_epochs": 0, "epochs": 12, "patience": 12, "lr": 1e-6},
    }


@pytest.mark.slow
def test_pretrained_run_downloads_verifies_trains_survives_a_kill_and_downloads_once(tmp_path):
    name, body = checkpoint(ARCH)
    workdir = copy_repo(tmp_path / "workflow")
    env = {"TORCH_HOME": str(tmp_path / "torch"), "OMP_NUM_THREADS": "1"}
    with serving({f"/models/{name}": body}) as server:
        server.cut_once[f"/models/{name}"] = len(body) // 2
        base_url = f"http://127.0.0.1:{server.server_address[1]}/models/"
        (workdir / "pretrained.yaml").write_text(json.dumps(pretrained_config(base_url, name)))
        args = [TARGET, "--cores", "2", "--configfile", "pretrained.yaml"]
        # Killed (kill -9, the whole process group) once the training job has checkpointed an epoch.
        first = subprocess.Popen(
            [*SNAKEMAKE, *args],
            cwd=workdir,
            env=os.environ | env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 300
        while not (workdir / CHECKPOINT).exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        assert (workdir / CHECKPOINT).exists() and not (workdir / TARGET).exists()
        # The checkpoint was downloaded (resumed after the cut), verified and put in the torch cache.
        assert (tmp_path / "torch/hub/checkpoints" / name).read_bytes() == body
        assert server.requests == [(f"/models/{name}", None), (f"/models/{name}", f"bytes={len(body) // 2}-")]
        # The recovery in docs/running.md: the lock stays until --unlock, then the same command resumes.
        locked = snakemake(workdir, *args, env=env)
        assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
        assert snakemake(workdir, *args, "--unlock", env=env).returncode == 0
        resumed = snakemake(workdir, *args, env=env)
        assert resumed.returncode == 0, resumed.stderr[-4000:]
        assert "rule weights" not in resumed.stdout + resumed.stderr and len(server.requests) == 2
        run = json.loads((workdir / f"results/models/0/std/{ARCH}/run.json").read_text())
        assert run["pretrained"] and run["resumed_from_epoch"] >= 1
        assert not (workdir / CHECKPOINT).exists()  # deleted once its job succeeded
        # Re-verifying the weights (--forcerun weights) downloads and retrains nothing.
        forced = snakemake(workdir, *args, "--forcerun", "weights", env=env)
        assert forced.returncode == 0, forced.stderr[-3000:]
        log = forced.stdout + forced.stderr
        assert "rule weights:" in log and "rule train:" not in log
    assert len(server.requests) == 2
    # Trained from the served weights: 12 epochs at lr 1e-6 leave the backbone next to them, far from a fresh init.
    trained = load_trained(workdir / TARGET, torch.device("cpu")).model.backbone.state_dict()
    served = torch.load(io.BytesIO(body), weights_only=True)
    other = torch.load(io.BytesIO(checkpoint(ARCH, seed=1)[1]), weights_only=True)
    keys = [k for k in served if k.startswith("features.") and served[k].is_floating_point()]
    assert max((trained[k] - served[k]).abs().max().item() for k in keys) < 0.01
    assert max((trained[k] - other[k]).abs().max().item() for k in keys) > 0.1


@pytest.mark.slow
def test_downloading_rules_run_on_the_login_node_under_the_slurm_profile(tmp_path):
    """The paper's acquire and weights jobs run where snakemake runs; sbatch (a stand-in that logs its calls) is never asked.

    `snakemake -n` hides where each job would run ("we don't know how the user wants to execute"), so the
    plan is read from a real run of the two jobs under the profile, both failing fast on a server without files.
    """
    workdir = copy_repo(tmp_path / "workflow")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sbatch", "squeue", "sacct", "sinfo", "scontrol"):  # the plugin asks scontrol for the config
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{tmp_path}/slurm_calls"\nexit 1\n')
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "TORCH_HOME": str(tmp_path / "torch")}
    with serving({}) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        (workdir / "offline.yaml").write_text(
            json.dumps({"data": {"base_url": url + "datafile/"}, "models": {"weights_base_url": url + "models/"}})
        )
        plan = snakemake(workdir, "-n", "--profile", "profiles/slurm", "--configfile", "config/paper.yaml", env=env)
        assert plan.returncode == 0, plan.stderr[-3000:]
        assert "\nweights " in plan.stdout and "\nacquire " in plan.stdout
        targets = ["results/data/raw/manifest.json", "results/weights/imagenet.json"]
        run = snakemake(
            *(workdir, *targets, "--profile", "profiles/slurm", "--slurm-init-seconds-before-status-checks", "1"),
            *("--configfile", "config/paper.yaml", "offline.yaml"),
            timeout=300,
            env=env,
        )
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "localrule acquire:" in out and "localrule weights:" in out, out[-3000:]
    assert "HTTP 404" in out and "ImageNet checkpoint(s) are missing" in out
    calls = (tmp_path / "slurm_calls").read_text() if (tmp_path / "slurm_calls").exists() else ""
    assert "sbatch" not in calls, calls

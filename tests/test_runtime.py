"""Device choice, determinism settings and GPU slot defaults, on a CPU-only machine (GPUs simulated)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dpaat import gpu_slots, runtime
from dpaat.gpu_slots import SlotLockError, claim_slot, default_slot_dir

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture
def no_driver(tmp_path, monkeypatch):
    """A machine whose driver lists no GPU and torch sees none (whatever this machine really has)."""
    monkeypatch.setattr(runtime, "NVIDIA_GPUS", tmp_path / "no-driver" / "gpus")
    monkeypatch.setattr(runtime, "NVIDIA_VERSION", tmp_path / "no-driver" / "version")
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_without_any_gpu_runs_on_the_cpu_and_logs_it(no_driver, caplog):
    with caplog.at_level("INFO", logger="dpaat"):
        assert runtime.select_device("auto", environ={}) == torch.device("cpu")
    assert "no GPU on this machine" in caplog.text and "running on the CPU" in caplog.text


@pytest.mark.parametrize("hidden", ["", "-1", "NoDevFiles"])
def test_cuda_visible_devices_that_hide_every_gpu_mean_the_cpu(no_driver, hidden):
    assert runtime.select_device("auto", environ={"CUDA_VISIBLE_DEVICES": hidden}) == torch.device("cpu")


@pytest.mark.parametrize("name", ["auto", "cuda"])
def test_a_gpu_torch_cannot_use_is_one_error_naming_torch_driver_and_fix(no_driver, name):
    with pytest.raises(RuntimeError) as error:
        runtime.select_device(name, environ={"CUDA_VISIBLE_DEVICES": "0"})
    message = str(error.value)
    assert f"torch {torch.__version__}" in message and "torch.cuda.is_available() is False" in message
    assert "CUDA_VISIBLE_DEVICES=0" in message
    assert "version unreadable" in message and "make torch-cuda TORCH_CUDA=" in message
    assert "training.device: cpu" in message


def test_cuda_on_a_machine_without_any_gpu_says_so_first_then_the_choices(no_driver):
    with pytest.raises(RuntimeError) as error:
        runtime.select_device("cuda", environ={})
    message = str(error.value)
    assert message.startswith("training.device is 'cuda' but this machine has no GPU")
    assert "install the" not in message.split("Choices:")[0]  # the CUDA build is a choice, not the lead
    assert "training.device: auto" in message and "cpu" in message.split("Choices:")[1]


def test_a_driver_listing_gpus_is_evidence_and_its_version_is_named(no_driver, tmp_path, monkeypatch):
    gpus = tmp_path / "driver" / "gpus"
    (gpus / "0000:17:00.0").mkdir(parents=True)
    version = tmp_path / "driver" / "version"
    version.write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  535.104.05  Release Build  (dvs-builder@U16)\n"
    )
    monkeypatch.setattr(runtime, "NVIDIA_GPUS", gpus)
    monkeypatch.setattr(runtime, "NVIDIA_VERSION", version)
    assert runtime.gpu_evidence({}) == f"the NVIDIA driver lists 1 GPU(s) in {gpus}"
    with pytest.raises(RuntimeError, match=r"NVIDIA driver: 535\.104\.05\."):
        runtime.select_device("auto", environ={})


TRAIN_JOB = """
import runpy, sys, types
from pathlib import Path
root = Path(sys.argv[1])
snakemake = types.SimpleNamespace(
    log=[str(root / "logs" / "train.log")],
    wildcards=types.SimpleNamespace(seed="0", method="std", arch="mobilenet_v2"),
    config={"training": {"device": sys.argv[3] if len(sys.argv) > 3 else "auto"}, "gpu": {"slot_dir": str(root / "slots"), "jobs_per_device": 1},
            "reproducible_cpu_kernels": True},  # read first by the stage scripts on main (issue 18)
    params=types.SimpleNamespace(training={}, pretrained=False, checkpoint=str(root / "checkpoint.pt")),
    input=types.SimpleNamespace(train=str(root / "missing_train.pt"), val=str(root / "missing_val.pt"), reference=[]),
    output=types.SimpleNamespace(**{k: str(root / "out" / k) for k in ("weights", "history", "run")}),
    threads=1,
)
runpy.run_path(sys.argv[2], init_globals={"snakemake": snakemake}, run_name="__main__")
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where torch sees no GPU")
def test_a_model_job_told_of_a_gpu_torch_cannot_see_stops_at_once_and_writes_nothing(tmp_path):
    # The train job (evaluate and gradcam call the same job_device first).
    env = os.environ | {"PYTHONPATH": str(SCRIPTS), "CUDA_VISIBLE_DEVICES": "0", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", TRAIN_JOB, str(tmp_path), str(SCRIPTS / "train.py")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert run.returncode != 0
    assert "a GPU is expected (CUDA_VISIBLE_DEVICES=0)" in run.stderr and "make torch-cuda" in run.stderr
    # It stopped before reading its (missing) inputs: the log is all it wrote.
    assert "missing_train" not in run.stderr and "FileNotFoundError" not in run.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["logs", "logs/train.log"]


@pytest.mark.skipif(torch.cuda.is_available() or runtime.gpu_evidence() is not None, reason="needs a machine without a GPU")
def test_the_first_job_under_device_cuda_without_a_gpu_stops_in_a_few_lines(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env |= {"PYTHONPATH": str(SCRIPTS), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", TRAIN_JOB, str(tmp_path), str(SCRIPTS / "train.py"), "cuda"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert run.returncode != 0
    message = run.stderr[run.stderr.index("DeviceError"):]
    assert message.startswith("DeviceError: training.device is 'cuda' but this machine has no GPU")
    assert len(message.strip().splitlines()) <= 15 and "training.device: auto" in message


def test_cublas_workspace_is_set_when_a_job_picks_its_device(monkeypatch, tmp_path):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    runtime.job_device("cpu", {"slot_dir": str(tmp_path), "jobs_per_device": 1})
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == runtime.CUBLAS_WORKSPACE


def test_deterministic_keeps_deterministic_kernels_without_filling_memory():
    import torch.utils.deterministic

    before = (torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory)
    restore = runtime.set_deterministic(True)
    try:
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.utils.deterministic.fill_uninitialized_memory and not torch.backends.cudnn.benchmark
    finally:
        restore()
    assert (torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory) == before


def test_slot_dir_defaults_to_a_node_local_folder():
    assert default_slot_dir({}) == Path(f"/tmp/dpaat-gpu-slots-{os.getuid()}")
    assert default_slot_dir({"SLURM_JOB_ID": "7", "TMPDIR": "/local/job7"}) == Path("/local/job7/dpaat-gpu-slots")
    assert default_slot_dir({"SLURM_JOB_ID": "7", "SLURM_TMPDIR": "/scratch/7"}) == Path("/scratch/7/dpaat-gpu-slots")
    assert default_slot_dir({"SLURM_JOB_ID": "7"}) == Path(f"/tmp/dpaat-gpu-slots-{os.getuid()}")


def test_a_file_system_without_flock_is_an_error_naming_the_folder_and_the_setting(tmp_path, monkeypatch):
    def no_flock(handle, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(gpu_slots.fcntl, "flock", no_flock)
    with pytest.raises(SlotLockError, match=r"does not support flock.*set gpu\.slot_dir") as error:
        claim_slot(tmp_path, 1, 1, environ={})
    assert str(tmp_path) in str(error.value)


def fake_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(runtime, "_held_slots", [])


def test_a_job_the_scheduler_gave_one_gpu_takes_no_lock(tmp_path, monkeypatch):
    fake_gpus(monkeypatch, 1)
    gpu = {"slot_dir": str(tmp_path / "slots"), "jobs_per_device": 2}
    environ = {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "3"}
    assert runtime.job_device("cuda", gpu, environ=environ) == torch.device("cuda", 0)
    assert not (tmp_path / "slots").exists() and runtime._held_slots == []
    # Two GPUs in the allocation, or none from a scheduler: the jobs share them through slots.
    fake_gpus(monkeypatch, 2)
    assert runtime.job_device("cuda", gpu, environ=environ) == torch.device("cuda", 0)
    assert (tmp_path / "slots").is_dir() and len(runtime._held_slots) == 1
    runtime._held_slots[0].release()


def test_the_fix_the_message_names_installs_the_pinned_versions_for_a_cuda_build():
    repo = SCRIPTS.parent
    pins = dict(line.split("===") for line in (repo / "requirements.txt").read_text().splitlines() if "===" in line)
    run = subprocess.run(["make", "-n", "torch-cuda", "TORCH_CUDA=cu126"], cwd=repo, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    wanted = f"torch=={pins['torch']}+cu126 torchvision=={pins['torchvision']}+cu126"
    # (Without a .venv, make -n also prints the venv's own install, which names no torch build.)
    installs = [line for line in run.stdout.splitlines() if "pip install" in line and "+cu126" in line]
    assert len(installs) == 2 and all(wanted in line for line in installs), run.stdout
    assert "--index-url https://download.pytorch.org/whl/cu126" in installs[0]

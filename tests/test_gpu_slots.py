"""GPU slots on the CPU: a faked device count, concurrent processes, killed holders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from dpaat.gpu_slots import claim_slot, slot_folder

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
# A job that claims a slot, reports it, and holds it until told to go (or is killed).
HOLDER = """
import sys, time
from pathlib import Path
from dpaat.gpu_slots import claim_slot
slot_dir, devices, per_device, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
slot = claim_slot(slot_dir, devices, per_device, poll_seconds=0.05)
print(slot.slot, slot.device_index, flush=True)
while not go.exists():
    time.sleep(0.05)
"""


def start_holders(tmp_path: Path, count: int, devices: int, per_device: int) -> list[subprocess.Popen]:
    env = os.environ | {"PYTHONPATH": str(SCRIPTS)}
    go = tmp_path / "go"
    return [
        subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(tmp_path / "slots"), str(devices), str(per_device), str(go)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(count)
    ]


def claimed(holders: list[subprocess.Popen]) -> list[tuple[int, int]]:
    """(slot, device) each holder printed once it held its slot."""
    return [tuple(map(int, holder.stdout.readline().split())) for holder in holders]


def finish(tmp_path: Path, holders: list[subprocess.Popen]) -> None:
    (tmp_path / "go").touch()
    for holder in holders:
        holder.wait(timeout=30)
        holder.stdout.close()


def test_concurrent_jobs_get_distinct_slots_and_share_devices_evenly(tmp_path):
    holders = start_holders(tmp_path, count=6, devices=3, per_device=2)
    try:
        got = claimed(holders)
    finally:
        finish(tmp_path, holders)
    assert sorted(slot for slot, _ in got) == list(range(6))
    assert all(device == slot % 3 for slot, device in got)
    assert Counter(device for _, device in got) == {0: 2, 1: 2, 2: 2}


def test_fewer_jobs_than_slots_spread_over_the_devices_first(tmp_path):
    holders = start_holders(tmp_path, count=3, devices=3, per_device=4)
    try:
        got = claimed(holders)
    finally:
        finish(tmp_path, holders)
    assert sorted(device for _, device in got) == [0, 1, 2]


def test_a_freed_slot_goes_to_the_least_loaded_device(tmp_path):
    folder = tmp_path / "slots"
    held = [claim_slot(folder, 2, 3) for _ in range(4)]  # devices 0, 1, 0, 1
    assert [slot.device_index for slot in held] == [0, 1, 0, 1]
    held[1].release()
    held[3].release()  # device 1 idle, device 0 still runs two jobs
    assert claim_slot(folder, 2, 3).device_index == 1


def test_a_killed_holder_frees_its_slot(tmp_path):
    (holder,) = start_holders(tmp_path, count=1, devices=1, per_device=1)
    try:
        assert claimed([holder]) == [(0, 0)]
        waiter: list = []
        thread = threading.Thread(target=lambda: waiter.append(claim_slot(tmp_path / "slots", 1, 1, poll_seconds=0.05)))
        thread.start()
        thread.join(timeout=1.0)
        assert thread.is_alive() and not waiter, "the only slot is held: a claim must wait"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        thread.join(timeout=10)
        assert waiter and waiter[0].slot == 0, "the kernel released the killed holder's lock"
    finally:
        holder.kill()
        holder.stdout.close()


def test_released_slot_is_claimed_again_at_once(tmp_path):
    slot = claim_slot(tmp_path, 1, 1)
    slot.release()
    began = time.monotonic()
    assert claim_slot(tmp_path, 1, 1, poll_seconds=5).slot == 0
    assert time.monotonic() - began < 5


def test_slot_files_are_per_machine_slurm_allocation_and_visible_gpus(tmp_path):
    plain = slot_folder(tmp_path, environ={})
    in_job = slot_folder(tmp_path, environ={"SLURM_JOB_ID": "1234"})
    other_job = slot_folder(tmp_path, environ={"SLURM_JOB_ID": "1235"})
    first_pair = slot_folder(tmp_path, environ={"CUDA_VISIBLE_DEVICES": "0,1"})
    second_pair = slot_folder(tmp_path, environ={"CUDA_VISIBLE_DEVICES": "2,3"})
    assert plain.parent == tmp_path and len({plain, in_job, other_job, first_pair, second_pair}) == 5
    assert in_job.name.endswith("-slurm1234") and first_pair.name.endswith("-cuda0_1")
    # Two SLURM jobs that each see "their" GPU 0 do not wait for each other.
    first = claim_slot(tmp_path, 1, 1, environ={"SLURM_JOB_ID": "1234"})
    second = claim_slot(tmp_path, 1, 1, environ={"SLURM_JOB_ID": "1235"})
    assert (first.device_index, second.device_index) == (0, 0)


@pytest.mark.parametrize(
    ("devices", "per_device", "message"), [(0, 1, "at least one visible GPU"), (1, 0, "jobs_per_device")]
)
def test_bad_slot_settings_are_clear_errors(tmp_path, devices, per_device, message):
    with pytest.raises(ValueError, match=message):
        claim_slot(tmp_path, devices, per_device)


def test_job_device_claims_a_slot_only_for_cuda(tmp_path, monkeypatch):
    import torch

    from dpaat import runtime

    gpu = {"slot_dir": str(tmp_path), "jobs_per_device": 1}
    assert runtime.job_device("cpu", gpu) == torch.device("cpu")
    assert not any(tmp_path.iterdir()), "a CPU job claims no slot"
    # Two faked GPUs: consecutive jobs of one machine land on different devices.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(runtime, "_held_slots", [])
    assert [runtime.job_device(name, gpu) for name in ("auto", "cuda")] == [
        torch.device("cuda", 0),
        torch.device("cuda", 1),
    ]
    assert runtime.job_device("cuda:1", gpu) == torch.device("cuda", 1), "an explicit device takes no slot"
    for slot in runtime._held_slots:
        slot.release()


@pytest.mark.parametrize(("device", "ok"), [("cuda:1", True), ("cuda", True), ("cuda:x", False), ("gpu0", False)])
def test_execution_settings_name_a_device_torch_understands(device, ok):
    from dpaat.settings import ExecutionSettings

    if ok:
        assert ExecutionSettings(device=device).device == device
    else:
        with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:<index>"):
            ExecutionSettings(device=device)

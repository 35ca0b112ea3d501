"""GPU slots: which visible GPU a model job uses, claimed with operating-system file locks.

With G visible GPUs and k jobs per device there are G × k slots; slot s runs on device
s mod G. A job claims a free slot for its whole life by holding an exclusive `flock` on
the slot's file, so the kernel releases it when the process ends, however it ends: a
crash never strands a GPU. A claim takes the free slot on the least-loaded device, so
k > 1 shares every device evenly. Snakemake's `--resources gpu=G*k` keeps at most that
many model jobs running, so a free slot normally exists; a claim that finds none (jobs
of another workflow on the same machine) waits for one.

Slot files live in `<slot_dir>/<host>[-slurm<job id>][-cuda<CUDA_VISIBLE_DEVICES>]/`: per
machine, so a slot folder on a shared file system never mixes nodes; per SLURM
allocation, so jobs that SLURM already gave their own GPUs never wait on each other;
and per set of visible GPUs, so slot s means the same physical GPU to every claimer.
`slot_dir` defaults to a node-local folder (`default_slot_dir`): some cluster file
systems (Lustre, NFS mounts) do not support `flock`, which is a clear error here.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger("dpaat.gpu_slots")


@dataclass
class GpuSlot:
    """A claimed slot: its number, the visible device index it maps to, and the held lock."""

    slot: int
    device_index: int
    path: Path
    _file: IO[bytes] = field(repr=False)

    def release(self) -> None:
        """Give the slot back (process exit does the same)."""
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


def slot_folder(slot_dir: str | os.PathLike, environ: os._Environ | dict[str, str] | None = None) -> Path:
    """The folder of slot files under `slot_dir` for this machine, SLURM allocation and visible GPUs."""
    environ = os.environ if environ is None else environ
    name = socket.gethostname() or "localhost"
    job = environ.get("SLURM_JOB_ID")
    if job:
        name += f"-slurm{job}"
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        name += f"-cuda{visible}"
    return Path(slot_dir) / re.sub(r"[^A-Za-z0-9._-]", "_", name)


def default_slot_dir(environ: os._Environ | dict[str, str] | None = None) -> Path:
    """gpu.slot_dir's node-local default: the job's temporary folder under SLURM, else a per-user folder in /tmp."""
    environ = os.environ if environ is None else environ
    if environ.get("SLURM_JOB_ID"):
        for key in ("SLURM_TMPDIR", "TMPDIR"):
            if environ.get(key):
                return Path(environ[key]) / "dpaat-gpu-slots"
    # /tmp itself, not $TMPDIR: every workflow of the user on this machine must meet in the same folder.
    return Path("/tmp") / f"dpaat-gpu-slots-{os.getuid()}"


class SlotLockError(RuntimeError):
    """The slot folder's file system cannot hold the flock a claim needs."""


def _flock(handle: IO[bytes], operation: int, path: Path) -> None:
    """fcntl.flock, with a file system that has no flock reported as what it is and how to fix it."""
    try:
        fcntl.flock(handle, operation)
    except BlockingIOError:
        raise
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        raise SlotLockError(
            f"cannot lock the GPU slot file {path}: the file system of {path.parent} does not support flock "
            f"({err.strerror or err}); set gpu.slot_dir to a folder on a node-local disk, or leave it unset "
            "(null) for the default (the job's temporary folder under SLURM, /tmp/dpaat-gpu-slots-<uid> elsewhere)"
        ) from err


def _try_lock(path: Path) -> IO[bytes] | None:
    """The open, exclusively locked slot file, or None when another process holds it."""
    handle = open(path, "a+b")  # noqa: SIM115 - the lock lives as long as the file stays open
    try:
        _flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB, path)
    except BlockingIOError:
        handle.close()
        return None
    except SlotLockError:
        handle.close()
        raise
    return handle


def _claim_least_loaded(folder: Path, devices: int, slots: int) -> GpuSlot | None:
    """One probe of every slot: lock the free slot on the least-loaded device, or return None."""
    # Claims take turns (a short lock on the folder), so each probe sees only real holders.
    with open(folder / "claim.lock", "a+b") as turn:
        _flock(turn, fcntl.LOCK_EX, folder / "claim.lock")
        free: dict[int, IO[bytes]] = {}
        load: Counter[int] = Counter()
        for slot in range(slots):
            handle = _try_lock(folder / f"slot{slot}.lock")
            if handle is None:
                load[slot % devices] += 1
            else:
                free[slot] = handle
        if not free:
            return None
        chosen = min(free, key=lambda slot: (load[slot % devices], slot))
        for slot, handle in free.items():
            if slot != chosen:
                handle.close()
    handle = free[chosen]
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n".encode())
    handle.flush()
    return GpuSlot(chosen, chosen % devices, folder / f"slot{chosen}.lock", handle)


def claim_slot(
    slot_dir: str | os.PathLike,
    devices: int,
    jobs_per_device: int = 1,
    *,
    poll_seconds: float = 1.0,
    environ: dict[str, str] | None = None,
) -> GpuSlot:
    """Claim a free slot of `devices` × `jobs_per_device`, waiting while all are held."""
    if devices < 1:
        raise ValueError(f"need at least one visible GPU to claim a slot, got {devices}")
    if jobs_per_device < 1:
        raise ValueError(f"gpu.jobs_per_device must be >= 1, got {jobs_per_device}")
    folder = slot_folder(slot_dir, environ)
    folder.mkdir(parents=True, exist_ok=True)
    slots = devices * jobs_per_device
    waited_since = None
    while True:
        chosen = _claim_least_loaded(folder, devices, slots)
        if chosen is not None:
            if waited_since is not None:
                log.info("GPU slot %d free after %.0f s", chosen.slot, time.monotonic() - waited_since)
            return chosen
        if waited_since is None:
            waited_since = time.monotonic()
            log.warning(
                "all %d GPU slots in %s are held (by jobs of another workflow?); waiting for one. "
                "Run snakemake with --resources gpu=%d to match the slots.",
                slots,
                folder,
                slots,
            )
        time.sleep(poll_seconds)

"""Process set-up shared by the stage scripts: logging, device and thread choice."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpaat.gpu_slots import GpuSlot, claim_slot

if TYPE_CHECKING:  # imported where used: the report jobs only log
    import torch

# The slot a job claimed: held (its lock file open) until the process exits.
_held_slots: list[GpuSlot] = []


def setup_logging(log_path: str | Path) -> logging.Logger:
    """Log to `log_path` and stderr; uncaught errors are logged as one clear line plus the trace."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.FileHandler(log_path), logging.StreamHandler(sys.stderr)],
        force=True,
    )
    logger = logging.getLogger("dpaat")

    def log_uncaught(exc_type, exc, tb):
        logger.error("%s: %s", exc_type.__name__, exc, exc_info=(exc_type, exc, tb))

    sys.excepthook = log_uncaught
    return logger


def select_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when visible; asking for CUDA without one is an error, not a silent fallback."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"training.device is {name!r} but no CUDA device is visible; set it to 'auto' or 'cpu'")
    return torch.device(name)


def job_device(name: str, gpu: Mapping[str, Any]) -> torch.device:
    """A model job's device: the CPU, or the GPU of a slot claimed for the rest of the process (see dpaat.gpu_slots).

    `gpu` is the config's `gpu` mapping (slot_dir, jobs_per_device). The visible devices
    are those CUDA_VISIBLE_DEVICES leaves, so a scheduler's choice is respected.
    """
    import torch

    device = select_device(name)
    if device.type != "cuda" or device.index is not None:
        return device
    slot = claim_slot(gpu["slot_dir"], torch.cuda.device_count(), int(gpu["jobs_per_device"]))
    _held_slots.append(slot)
    torch.cuda.set_device(slot.device_index)
    logging.getLogger("dpaat").info("GPU slot %d of %s: cuda:%d", slot.slot, slot.path.parent, slot.device_index)
    return torch.device("cuda", slot.device_index)


def set_threads(threads: int) -> None:
    """Use exactly the CPU threads the scheduler granted the job."""
    import torch

    torch.set_num_threads(max(1, int(threads)))

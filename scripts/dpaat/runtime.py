"""Process set-up shared by the stage scripts: logging, device and thread choice."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from dpaat.gpu_slots import GpuSlot, claim_slot, default_slot_dir
from dpaat.settings import ExecutionSettings

if TYPE_CHECKING:  # imported where used: the report jobs only log
    import torch

# The slot a job claimed: held (its lock file open) until the process exits.
_held_slots: list[GpuSlot] = []
# Where the NVIDIA driver lists its GPUs and its version (Linux).
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")
NVIDIA_VERSION = Path("/proc/driver/nvidia/version")
# cuBLAS's fixed workspace for reproducible results (PyTorch's reproducibility notes).
CUBLAS_WORKSPACE = ":4096:8"


class DeviceError(RuntimeError):
    """The configured device cannot be used here; the message says why and the fix, so no trace is logged."""


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
        trace = None if issubclass(exc_type, DeviceError) else (exc_type, exc, tb)
        logger.error("%s: %s", exc_type.__name__, exc, exc_info=trace)

    sys.excepthook = log_uncaught
    return logger


def gpu_evidence(environ: Mapping[str, str] | None = None) -> str | None:
    """Why this machine should have a usable GPU, or None when nothing says so.

    A GPU is expected when CUDA_VISIBLE_DEVICES names one (a scheduler's grant) or the
    NVIDIA driver lists one in /proc/driver/nvidia/gpus.
    """
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        # CUDA stops at the first entry that is not an index or a GPU/MIG UUID: "", "-1" or
        # "NoDevFiles" (old SLURM) first hide every GPU.
        first = visible.split(",")[0].strip()
        return f"CUDA_VISIBLE_DEVICES={visible}" if re.fullmatch(r"\d+|(GPU|MIG)-.+", first) else None
    listed = sorted(NVIDIA_GPUS.iterdir()) if NVIDIA_GPUS.is_dir() else []
    return f"the NVIDIA driver lists {len(listed)} GPU(s) in {NVIDIA_GPUS}" if listed else None


def driver_version() -> str | None:
    """The NVIDIA driver's version (from /proc, else nvidia-smi), or None when it cannot be read."""
    try:
        found = re.search(r"Kernel Module.*?\s(\d+\.\d+(?:\.\d+)?)\s", NVIDIA_VERSION.read_text())
        if found:
            return found.group(1)
    except OSError:
        pass
    if shutil.which("nvidia-smi"):  # e.g. in a container that hides /proc/driver
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            out = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True).stdout.split()
            return out[0] if out else None
        except (OSError, subprocess.SubprocessError):
            return None
    return None


def unusable_gpu_message(name: str, evidence: str) -> str:
    """The one message for a job that should run on a GPU torch cannot use: what torch is, what the machine has, the fix."""
    import torch

    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    driver = driver_version()
    return (
        f"training.device is {name!r} and a GPU is expected ({evidence}), but torch {torch.__version__} "
        f"({build}) cannot use any: torch.cuda.is_available() is False. NVIDIA driver: "
        f"{driver or 'version unreadable (no /proc/driver/nvidia/version, no nvidia-smi)'}. "
        "A CUDA build of torch needs a driver that supports its CUDA version (nvidia-smi's header shows the "
        "newest CUDA the driver supports). Fix: install the PyTorch build for your driver into .venv, "
        "e.g. `make torch-cuda TORCH_CUDA=cu126` (docs/scaling.md, 'Installing for your GPU'), or run on the CPU on "
        "purpose with training.device: cpu."
    )


def no_gpu_message(name: str) -> str:
    """The message for a job told to use a GPU on a machine that has none: that first, then the choices."""
    return (
        f"training.device is {name!r} but this machine has no GPU: no NVIDIA driver lists one "
        f"({NVIDIA_GPUS} is absent or empty) and CUDA_VISIBLE_DEVICES names none.\n"
        "Choices: run on a machine with an NVIDIA GPU (on a cluster, a GPU node: docs/running.md); "
        "set training.device: auto (the CPU when there is no GPU) or cpu; or, if this machine does have "
        "a GPU, install its NVIDIA driver, then a CUDA build of torch (`make torch-cuda`)."
    )


def select_device(name: str = "auto", environ: Mapping[str, str] | None = None) -> torch.device:
    """The device `name` asks for: never a silent fall-back to the CPU when a GPU is expected.

    'auto' is CUDA when torch sees a GPU and the CPU (logged) when the machine has none;
    'cuda…', or 'auto' on a machine with a GPU torch cannot use (see gpu_evidence), is
    an error naming torch's build, the driver and the fix.
    """
    import torch

    if name == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda" if name == "auto" else name)
    evidence = gpu_evidence(environ)
    if name == "auto" and evidence is None:
        logging.getLogger("dpaat").info(
            "training.device auto: no GPU on this machine (CUDA_VISIBLE_DEVICES unset, no NVIDIA driver); "
            "running on the CPU"
        )
        return torch.device("cpu")
    if evidence is None:
        raise DeviceError(no_gpu_message(name))
    raise DeviceError(unusable_gpu_message(name, evidence))


def scheduler_gave_one_gpu(environ: Mapping[str, str], devices: int) -> bool:
    """True inside a SLURM job whose allocation holds exactly the one visible GPU: no slot lock is needed."""
    granted = any(environ.get(key) for key in ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES"))
    return bool(environ.get("SLURM_JOB_ID")) and granted and devices == 1


def job_device(name: str, gpu: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> torch.device:
    """A model job's device: the CPU, or the GPU of a slot claimed for the rest of the process (see dpaat.gpu_slots).

    Called first in every model job, so a GPU torch cannot use stops it before any work.
    `gpu` is the config's `gpu` mapping (slot_dir, null = node-local default; jobs_per_device).
    The visible devices are those CUDA_VISIBLE_DEVICES leaves, so a scheduler's choice is
    respected; a SLURM job given exactly one GPU uses it without a lock.
    """
    import torch

    environ = os.environ if environ is None else environ
    # Before any cuBLAS handle exists (AMAT's mean_clean_loss multiplies before train() sets determinism).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    device = select_device(name, environ)
    if device.type != "cuda" or device.index is not None:
        return device
    log = logging.getLogger("dpaat")
    count = torch.cuda.device_count()
    if scheduler_gave_one_gpu(environ, count):
        torch.cuda.set_device(0)
        log.info("the scheduler gave this job one GPU: cuda:0, no slot lock")
        return torch.device("cuda", 0)
    slot_dir = gpu.get("slot_dir") or default_slot_dir(environ)
    slot = claim_slot(slot_dir, count, int(gpu["jobs_per_device"]), environ=dict(environ))
    _held_slots.append(slot)
    torch.cuda.set_device(slot.device_index)
    log.info("GPU slot %d of %s: cuda:%d", slot.slot, slot.path.parent, slot.device_index)
    return torch.device("cuda", slot.device_index)


def set_threads(threads: int) -> None:
    """Use exactly the CPU threads the scheduler granted the job."""
    import torch

    torch.set_num_threads(max(1, int(threads)))


def set_deterministic(enabled: bool) -> Callable[[], None]:
    """Deterministic kernels (or the fastest) for training; returns a function restoring the previous settings.

    enabled: torch.use_deterministic_algorithms (warn_only: an op with no deterministic
    CUDA implementation logs a warning instead of failing the job), cuDNN deterministic
    and no cuDNN benchmarking; cuBLAS gets the fixed workspace it needs for
    reproducible results unless CUBLAS_WORKSPACE_CONFIG is already set (job_device sets
    it at process start). `torch.utils.deterministic.fill_uninitialized_memory`, which
    use_deterministic_algorithms turns on, is turned off: it fills every `empty` tensor
    (about 950 fill kernels per DPAAT batch) to expose reads of uninitialised memory,
    which no kernel of ours does. Disabled: cuDNN benchmarks its algorithms per input
    shape and picks the fastest. On the CPU the results are the same either way.
    """
    import torch
    import torch.utils.deterministic

    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled

    def restore() -> None:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.utils.deterministic.fill_uninitialized_memory = previous[2]
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[3:]

    return restore


def set_cudnn_benchmark(deterministic: bool) -> None:
    """Evaluate and gradcam jobs: let cuDNN benchmark its kernels unless training.deterministic asks otherwise."""
    import torch

    torch.backends.cudnn.benchmark = not deterministic


def evaluation_device(execution: ExecutionSettings, uses: tuple[str, ...]) -> torch.device:
    """An evaluate or Grad-CAM job's start: its threads, its device (`job_device`), cuDNN's kernel choice and
    the fast paths among `uses` (`dpaat.fast_paths.use_fast_paths`)."""
    from dpaat.fast_paths import use_fast_paths

    set_threads(execution.threads)
    device = job_device(execution.device, execution.gpu)
    set_cudnn_benchmark(execution.deterministic)
    use_fast_paths(execution.fast_paths, device, uses)
    return device

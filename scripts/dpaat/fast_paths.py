"""The CUDA speed settings ("fast paths"), chosen by the device unless `gpu.fast_paths` says otherwise.

The fast paths: channels_last for the model and its input batches (cuDNN's fast NHWC
kernels, bf16 ones above all), fused Adam (one kernel per step instead of several per
parameter), bf16 autocast for training when `training.bf16` asks for it, and the larger
`evaluation.gpu_batch_size`. Every one of them has a CPU implementation too.

`gpu.fast_paths` picks them: `auto` (the default) turns them on for a CUDA device and off
everywhere else, so the CPU path (the default run) computes exactly what it always has;
`always` turns them on whatever the device, so a CPU run (CI) rehearses the program a GPU
runs; `never` turns them off on a GPU too. It is a process-wide execution setting, like
the thread count: a model job's stage script sets it once (`set_fast_paths_mode`) and
every later `fast_paths(device)` call reads it. What has no CPU counterpart (cuDNN
flags, CUDA streams and caching allocator, TF32) is never rehearsed: docs/performance.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

FastPathsMode = Literal["auto", "always", "never"]

_mode: FastPathsMode = "auto"


@dataclass(frozen=True)
class FastPaths:
    """Which speed settings a device gets."""

    channels_last: bool
    fused_adam: bool
    bf16_training: bool  # training.bf16 takes effect
    gpu_batch_size: bool  # evaluation.gpu_batch_size instead of evaluation.batch_size

    @property
    def memory_format(self) -> torch.memory_format | None:
        """channels_last, or None for "leave the layout alone"."""
        return torch.channels_last if self.channels_last else None

    def names(self, uses: tuple[str, ...], *, bf16: bool = False) -> list[str]:
        """The fast paths among `uses` in force, by name (bf16 only when `training.bf16` asks for it too)."""
        flags = {
            "channels_last": self.channels_last,
            "fused_adam": self.fused_adam,
            "bf16": self.bf16_training and bf16,
            "gpu_batch_size": self.gpu_batch_size,
        }
        return [name for name in uses if flags[name]]


# The fast paths each kind of model job uses (the names its log and record list).
TRAINING_PATHS = ("channels_last", "fused_adam", "bf16")
EVALUATION_PATHS = ("channels_last", "gpu_batch_size")
GRADCAM_PATHS = ("channels_last",)


def check_mode(mode: object) -> FastPathsMode:
    """`mode` if it is auto, always or never; a ValueError naming the fix otherwise."""
    if mode not in get_args(FastPathsMode):
        hint = " (YAML reads on/off/yes/no as booleans)" if isinstance(mode, bool) else ""
        raise ValueError(f"gpu.fast_paths must be auto, always or never, got {mode!r}{hint}")
    return mode  # type: ignore[return-value]


def set_fast_paths_mode(mode: FastPathsMode) -> FastPathsMode:
    """Set the process's `gpu.fast_paths` mode; returns the previous one (to restore it)."""
    global _mode
    previous, _mode = _mode, check_mode(mode)
    return previous


def use_fast_paths(
    mode: FastPathsMode, device: torch.device | str, uses: tuple[str, ...], *, bf16: bool = False
) -> list[str]:
    """A model job's start: set the process's mode, log the fast paths in force among `uses` and return their names."""
    set_fast_paths_mode(mode)
    names = fast_paths(device).names(uses, bf16=bf16)
    log.info("fast paths in force on %s (gpu.fast_paths: %s): %s", device, mode, ", ".join(names) or "none")
    return names


def fast_paths(device: torch.device | str, mode: FastPathsMode | None = None) -> FastPaths:
    """The fast paths of `device` under `mode` (the process's `gpu.fast_paths` when None).

    auto: all on for a CUDA device, all off otherwise; always: all on; never: all off.
    """
    mode = _mode if mode is None else check_mode(mode)
    on = mode == "always" or (mode == "auto" and torch.device(device).type == "cuda")
    return FastPaths(channels_last=on, fused_adam=on, bf16_training=on, gpu_batch_size=on)


def model_to(model: nn.Module, device: torch.device | str, memory_format: torch.memory_format | None) -> nn.Module:
    """`model.to(device)`, in `memory_format` when one is given (its 4-D weights, e.g. channels_last)."""
    if memory_format is None:
        return model.to(device)
    return model.to(device, memory_format=memory_format)


def as_layout(x: Tensor, memory_format: torch.memory_format | None) -> Tensor:
    """`x` in `memory_format` (a copy only when it is not already); unchanged for None."""
    return x if memory_format is None else x.contiguous(memory_format=memory_format)


def adam(params: list[nn.Parameter], lr: float, *, fused: bool) -> torch.optim.Adam:
    """Adam, fused when asked (CUDA, or any device under gpu.fast_paths: always); the default implementation otherwise."""
    return torch.optim.Adam(params, lr=lr, fused=True) if fused else torch.optim.Adam(params, lr=lr)


def evaluation_batch_size(device: torch.device | str, batch_size: int, gpu_batch_size: int) -> int:
    """evaluation.gpu_batch_size where the fast paths are on (a GPU under auto), evaluation.batch_size elsewhere."""
    return int(gpu_batch_size) if fast_paths(device).gpu_batch_size else int(batch_size)

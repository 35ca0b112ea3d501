"""The CUDA-only speed settings, each chosen by the device and nothing else.

On a GPU: channels_last for the model and its input batches (cuDNN's fast NHWC
kernels, bf16 ones above all), fused Adam (one kernel per step instead of several per
parameter), bf16 autocast for training when `training.bf16` asks for it, and a larger
evaluation batch. On the CPU every one of them is off, so the CPU path (the default
run) computes exactly what it always has; the CPU tests still run each branch by asking
for it explicitly (tests/test_fast_paths.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


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


def fast_paths(device: torch.device | str) -> FastPaths:
    """All on for a CUDA device, all off otherwise."""
    cuda = torch.device(device).type == "cuda"
    return FastPaths(channels_last=cuda, fused_adam=cuda, bf16_training=cuda, gpu_batch_size=cuda)


def model_to(model: nn.Module, device: torch.device | str, memory_format: torch.memory_format | None) -> nn.Module:
    """`model.to(device)`, in `memory_format` when one is given (its 4-D weights, e.g. channels_last)."""
    if memory_format is None:
        return model.to(device)
    return model.to(device, memory_format=memory_format)


def as_layout(x: Tensor, memory_format: torch.memory_format | None) -> Tensor:
    """`x` in `memory_format` (a copy only when it is not already); unchanged for None."""
    return x if memory_format is None else x.contiguous(memory_format=memory_format)


def adam(params: list[nn.Parameter], lr: float, *, fused: bool) -> torch.optim.Adam:
    """Adam, fused when asked (CUDA); the default implementation otherwise."""
    return torch.optim.Adam(params, lr=lr, fused=True) if fused else torch.optim.Adam(params, lr=lr)


def evaluation_batch_size(device: torch.device | str, batch_size: int, gpu_batch_size: int) -> int:
    """evaluation.gpu_batch_size on a GPU, evaluation.batch_size elsewhere."""
    return int(gpu_batch_size) if fast_paths(device).gpu_batch_size else int(batch_size)

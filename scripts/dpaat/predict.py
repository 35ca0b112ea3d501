"""Batched inference shared by the attack, evaluation and Grad-CAM stages."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dpaat.fast_paths import as_layout, fast_paths


def as_float_images(images: Tensor) -> Tensor:
    """uint8 (N,3,S,S) images to float32 in [0, 1]; float input passes through."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def device_images(images: Tensor, device: torch.device | str) -> Tensor:
    """A batch as the model on `device` takes it: copied as it is (uint8: a quarter of float32's bytes), then
    converted to float [0, 1] there, channels_last on a GPU."""
    return as_layout(as_float_images(images.to(device, non_blocking=True)), fast_paths(device).memory_format)


@torch.no_grad()
def predict_logits(model: nn.Module, images: Tensor, *, batch_size: int, device: torch.device | str = "cpu") -> Tensor:
    """Logits (N, C) on the CPU for uint8 or [0,1] float images, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        out = [model(device_images(batch, device)).float().cpu() for batch in images.split(batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out)

"""Batched inference shared by the attack, evaluation and Grad-CAM stages."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def as_float_images(images: Tensor) -> Tensor:
    """uint8 (N,3,S,S) images to float32 in [0, 1]; float input passes through."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


@torch.no_grad()
def predict_logits(model: nn.Module, images: Tensor, *, batch_size: int, device: torch.device | str = "cpu") -> Tensor:
    """Logits (N, C) on the CPU for uint8 or [0,1] float images, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        out = [model(as_float_images(batch).to(device)).float().cpu() for batch in images.split(batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out)

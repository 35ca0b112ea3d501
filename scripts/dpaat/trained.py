"""The trained-model file: weights plus what is needed to rebuild the network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dpaat.fast_paths import fast_paths, model_to
from dpaat.io import save_torch
from dpaat.models import Classifier, build_model


@dataclass
class TrainedModel:
    """A rebuilt classifier with the identity of its training run."""

    model: Classifier
    arch: str
    classes: list[str]
    image_size: int


def save_trained(model: Classifier, arch: str, classes: list[str], image_size: int, path: str | Path) -> None:
    """Write the weights (CPU tensors) and the architecture facts, atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch({"arch": arch, "classes": list(classes), "image_size": int(image_size), "state_dict": state}, path)


def load_trained(path: str | Path, device: torch.device | str = "cpu") -> TrainedModel:
    """Rebuild a saved classifier in eval mode on `device` (weights-only load, no pretrained lookup).

    On a GPU its weights are channels_last, the layout `dpaat.predict.device_images` gives the batches.
    """
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(blob["arch"], len(blob["classes"]), pretrained=False)
    model.load_state_dict(blob["state_dict"])
    model_to(model, device, fast_paths(device).memory_format).eval()
    return TrainedModel(model, blob["arch"], list(blob["classes"]), int(blob["image_size"]))

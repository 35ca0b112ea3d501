"""Training augmentation of uint8 batches on the device: Margeloiu et al. (2020)'s transforms.

The paper takes its data setup from Margeloiu et al. [26], whose HAM10000 training
transforms are, in order: ColorJitter(0.2, 0.2, 0.2, 0), RandomHorizontalFlip,
RandomVerticalFlip, RandomAffine(10), RandomRotation(50) (torchvision defaults:
p = 0.5 flips, nearest interpolation, black fill). Here the same torchvision
transforms (v2) run on the already resized uint8 batch, on whatever device holds it,
one random draw per image (a v2 transform called on a whole batch would give every
image the same draw).

The draws come from torchvision's own parameter sampling on torch's CPU generator,
seeded per batch from (training seed, epoch, batch index) inside `fork_rng`, so a
batch's augmentation depends on nothing but those three numbers: runs are
deterministic, a resumed run draws exactly what an uninterrupted one would, and the
global RNG (dropout, random starts) is left where it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import v2


@dataclass(frozen=True)
class AugmentConfig:
    """The config's `training.augmentation` mapping, typed (see config/schema/config.schema.yaml)."""

    enabled: bool
    brightness: float
    contrast: float
    saturation: float
    horizontal_flip: bool
    vertical_flip: bool
    affine_degrees: float
    rotation_degrees: float

    def __post_init__(self) -> None:
        problems = [
            f"{key} must be >= 0, got {getattr(self, key)}"
            for key in ("brightness", "contrast", "saturation", "affine_degrees", "rotation_degrees")
            if getattr(self, key) < 0
        ]
        if problems:
            raise ValueError("invalid training.augmentation: " + "; ".join(problems))

    @classmethod
    def from_mapping(cls, augmentation: Mapping[str, Any]) -> AugmentConfig:
        """Build from the config's `training.augmentation` mapping (every key filled by the schema)."""
        return cls(
            enabled=bool(augmentation["enabled"]),
            brightness=float(augmentation["brightness"]),
            contrast=float(augmentation["contrast"]),
            saturation=float(augmentation["saturation"]),
            horizontal_flip=bool(augmentation["horizontal_flip"]),
            vertical_flip=bool(augmentation["vertical_flip"]),
            affine_degrees=float(augmentation["affine_degrees"]),
            rotation_degrees=float(augmentation["rotation_degrees"]),
        )


class BatchAugmentation:
    """Margeloiu's training transforms as torchvision v2, one seeded draw per image of a uint8 batch."""

    def __init__(self, config: AugmentConfig) -> None:
        steps: list[v2.Transform] = []
        if config.brightness or config.contrast or config.saturation:
            steps.append(v2.ColorJitter(config.brightness, config.contrast, config.saturation, 0))
        if config.horizontal_flip:
            steps.append(v2.RandomHorizontalFlip())
        if config.vertical_flip:
            steps.append(v2.RandomVerticalFlip())
        if config.affine_degrees:
            steps.append(v2.RandomAffine(config.affine_degrees))
        if config.rotation_degrees:
            steps.append(v2.RandomRotation(config.rotation_degrees))
        self.transform = v2.Compose(steps)

    def __call__(self, images: Tensor, *, seed: int, epoch: int, batch: int) -> Tensor:
        """The augmented copy of `images` (uint8 (N, 3, S, S), any device); the same numbers give the same output."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"augmentation needs a uint8 (N, 3, S, S) batch, got {images.dtype} {tuple(images.shape)}")
        with torch.random.fork_rng(devices=[]):
            # Only the CPU generator: torch.manual_seed would also reseed CUDA's, which fork_rng does not restore here.
            torch.default_generator.manual_seed(batch_seed(seed, epoch, batch))
            return torch.stack([self.transform(image) for image in images])


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """A 63-bit seed mixed from (seed, epoch, batch) by numpy's SeedSequence: no two triples collide by summing."""
    return int(np.random.SeedSequence([seed, epoch, batch]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def build_augmentation(config: AugmentConfig) -> BatchAugmentation | None:
    """The batch augmentation `config` asks for, or None when it is off."""
    return BatchAugmentation(config) if config.enabled else None

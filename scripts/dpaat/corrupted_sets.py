"""Corrupted test sets on disk: the corrupt job writes one file per condition and resolution, evaluate reads them.

Kept apart from `dpaat.corruptions` so that the evaluate job imports neither OpenCV nor scikit-image.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dpaat.io import save_torch


def condition_file(directory: str | os.PathLike, size: int, name: str) -> Path:
    """Where the corrupt job keeps one condition's test images at one resolution."""
    return Path(directory) / f"{size}px" / f"{name}.pt"


def save_condition(images: np.ndarray, image_ids: Sequence[str], path: str | os.PathLike) -> None:
    """One condition's corrupted test images (uint8 N, 3, S, S) and their ids, written atomically."""
    save_torch({"images": torch.from_numpy(np.ascontiguousarray(images)), "image_ids": list(image_ids)}, path)


def load_condition(path: str | os.PathLike, image_ids: Sequence[str]) -> Tensor:
    """One condition's corrupted test images, checked to be the test set's images in its order."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if list(blob["image_ids"]) != list(image_ids):
        raise ValueError(
            f"{path} holds other test images than the test cache; rerun the corrupt job (snakemake --forcerun corrupt)"
        )
    return blob["images"]


def corrupted_test_sets(
    directory: str | os.PathLike, names: Iterable[str], size: int, image_ids: Sequence[str]
) -> Iterator[tuple[str, Tensor]]:
    """(condition, uint8 images) of each condition at resolution `size`, loaded one at a time."""
    for name in names:
        yield name, load_condition(condition_file(directory, size, name), image_ids)

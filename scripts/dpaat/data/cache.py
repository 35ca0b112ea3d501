"""One split as fixed-size uint8 tensors: built once from the images, loaded in one read.

Resizing: with `centre_crop` (Margeloiu et al.'s CenterCrop(450) then Resize), the
central square of side min(W, H) (x 75..525 of a 600x450 image) is resized to S x S;
without it the whole image is squashed to S x S. JPEG's DCT-domain downscale (PIL
`draft`) first decodes at the smallest power-of-two reduction that stays at least 2S
on each side, then a LANCZOS resize (antialiased) of the crop box, scaled to the
decoded size, brings it to S x S. Masks get the same box, resized with NEAREST and
kept binary 0/255.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .. import io as atomic
from .errors import DataError

if TYPE_CHECKING:  # pandas costs model jobs, which only load caches, a noticeable import
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class CachedSplit:
    """A split's images uint8 (N,3,S,S), labels int64 (N,), ids, class names, masks uint8 (N,S,S) 0/255 or None."""

    images: Tensor
    labels: Tensor
    image_ids: list[str]
    classes: list[str]
    masks: Tensor | None

    def __len__(self) -> int:
        return len(self.image_ids)


def build_cache(
    splits: pd.DataFrame,
    index: pd.DataFrame,
    split: str,
    size: int,
    classes: Sequence[str],
    *,
    centre_crop: bool = False,
    workers: int = 2,
) -> CachedSplit:
    """Load, resize and stack the images (and masks) of one split, in the order of `splits`."""
    rows = splits[splits["split"] == split]
    if rows.empty:
        raise DataError(f"split {split!r} has no image in the splits table (it has {sorted(splits['split'].unique())})")
    unknown = sorted(set(rows["dx"]) - set(classes))
    if unknown:
        raise DataError(
            f"the splits hold classes {unknown} that data.classes {list(classes)} lacks: rerun the split step"
        )
    rows = rows.merge(index[["image_id", "image_path", "mask_path"]], on="image_id", how="left", validate="one_to_one")
    lost = rows.loc[rows["image_path"].isna(), "image_id"].tolist()
    if lost:
        raise DataError(f"{len(lost)} images of the splits are not in the index, e.g. {lost[:5]}: rerun the split step")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = np.stack(list(pool.map(lambda p: load_image(p, size, centre_crop), rows["image_path"])))
        has_mask = rows["mask_path"].notna()
        masks = None
        if has_mask.all():
            masks = torch.from_numpy(np.stack(list(pool.map(lambda p: load_mask(p, size, centre_crop), rows["mask_path"]))))
        elif has_mask.any():
            log.warning(
                "only %d of %d %s images have a lesion mask: caching no masks", has_mask.sum(), len(rows), split
            )
    labels = np.array(rows["dx"].map(list(classes).index), dtype=np.int64)
    return CachedSplit(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        labels=torch.from_numpy(labels),
        image_ids=rows["image_id"].tolist(),
        classes=list(classes),
        masks=masks,
    )


def centre_square(width: int, height: int) -> tuple[int, int, int, int]:
    """The central square (left, top, right, bottom) of a width x height image, offsets as torchvision's CenterCrop."""
    side = min(width, height)
    left, top = int(round((width - side) / 2.0)), int(round((height - side) / 2.0))
    return left, top, left + side, top + side


def _resize_box(image: Image.Image, full_size: tuple[int, int], centre_crop: bool) -> tuple[float, ...] | None:
    """The crop box in `image`'s pixels (it may be a draft-reduced decode of a full_size original), or None."""
    if not centre_crop:
        return None
    # JPEG draft decodes at 1/2^k of each side, rounded up: the scale is 1/2^k on both axes.
    scale = 1.0 / max(1, round(full_size[0] / image.width))
    return tuple(edge * scale for edge in centre_square(*full_size))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any image as 8-bit RGB: grayscale replicated, alpha dropped; 16-bit grayscale (X-rays) scaled, not clipped."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        # 16-bit values 0..65535 to 0..255 (PIL's own convert would clip everything above 255 to white).
        levels = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8))
    return image.convert("RGB")


def load_image(path: str | os.PathLike, size: int, centre_crop: bool = False) -> np.ndarray:
    """An image cropped to its central square (or squashed whole) and resized to size x size RGB uint8, antialiased."""
    with Image.open(path) as image:
        full_size = image.size
        image.draft("RGB", (2 * size, 2 * size))
        rgb = to_rgb(image)
        box = _resize_box(rgb, full_size, centre_crop)
        return np.asarray(rgb.resize((size, size), Image.Resampling.LANCZOS, box=box))


def load_mask(path: str | os.PathLike, size: int, centre_crop: bool = False) -> np.ndarray:
    """A lesion mask with the image's crop, resized to size x size with NEAREST, binary 0/255 uint8 (H, W)."""
    with Image.open(path) as mask:
        gray = mask.convert("L")
        box = _resize_box(gray, gray.size, centre_crop)
        small = np.asarray(gray.resize((size, size), Image.Resampling.NEAREST, box=box))
    return np.where(small >= 128, 255, 0).astype(np.uint8)


def write_cache(cache: CachedSplit, path: str | os.PathLike) -> None:
    """Save a split atomically as the contract's plain dict (loadable with weights_only=True)."""
    atomic.save_torch(
        {
            "images": cache.images,
            "labels": cache.labels,
            "image_ids": cache.image_ids,
            "classes": cache.classes,
            "masks": cache.masks,
        },
        path,
    )


def load_cache(path: str | os.PathLike) -> CachedSplit:
    """Load a split cache written by `write_cache`, checking its shapes and dtypes."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"no data cache at {path}: build it with snakemake {path}") from None
    try:
        cache = CachedSplit(**obj)
    except TypeError as err:
        raise DataError(f"{path} is not a data cache ({err}): rebuild it with snakemake --forcerun cache") from None
    n = len(cache.image_ids)
    problems = []
    if cache.images.dtype != torch.uint8 or cache.images.ndim != 4 or cache.images.shape[:2] != (n, 3):
        problems.append(f"images {cache.images.dtype} {tuple(cache.images.shape)}")
    if cache.labels.dtype != torch.int64 or cache.labels.shape != (n,):
        problems.append(f"labels {cache.labels.dtype} {tuple(cache.labels.shape)}")
    if cache.masks is not None and (
        cache.masks.dtype != torch.uint8 or cache.masks.shape != (n, *cache.images.shape[2:])
    ):
        problems.append(f"masks {cache.masks.dtype} {tuple(cache.masks.shape)}")
    if problems:
        raise DataError(f"{path} has malformed entries ({'; '.join(problems)}) for {n} image ids: rebuild it")
    return cache

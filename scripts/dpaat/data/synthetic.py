"""A synthetic twin of HAM10000: the same files, names, columns and lesion structure.

`generate` writes what the Dataverse distribution holds (image zips of 600x450 JPEGs
named ISIC_XXXXXXX.jpg, the metadata csv, the lesion-mask zip) so that the rest of the
pipeline reads it through the very code that reads the real data. Some lesions have
several images (HAM10000: 10015 images of 7470 lesions), each a new view of the same
lesion. Same seed, same bytes: every random draw comes from a generator seeded by
(seed, lesion), and the JPEG, PNG and zip settings are fixed.
"""

from __future__ import annotations

import io
import logging
import math
import multiprocessing
import time
import zipfile
from contextlib import ExitStack
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from PIL import Image

from .. import io as atomic
from .dermoscopy import Lesion, View, draw_lesion, draw_view, render
from .errors import DataError
from .ham10000 import (
    DX_CODES,
    FIRST_IMAGE_NUMBER,
    IMAGE_SIZE,
    MASKS_NAME,
    METADATA_COLUMNS,
    METADATA_NAME,
    image_archive_name,
    image_id,
    mask_member,
)

log = logging.getLogger(__name__)

# Images per lesion: 1-6 with a mean of about 1.34, HAM10000's 10015 images / 7470 lesions.
_VIEWS = np.array([1, 2, 3, 4, 5, 6])
_VIEW_P = np.array([0.79, 0.13, 0.045, 0.02, 0.01, 0.005])
_JPEG = dict(format="JPEG", quality=90, subsampling="4:2:0", optimize=False, progressive=False)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: same seed, same archive bytes
# Per-lesion patient metadata, roughly as distributed in HAM10000: how each diagnosis was
# confirmed, age (mean, sd) and body site (relative frequency).
_DX_TYPE = {
    "mel": {"histo": 0.97, "consensus": 0.02, "confocal": 0.01},
    "nv": {"follow_up": 0.55, "histo": 0.35, "consensus": 0.08, "confocal": 0.02},
    "bkl": {"histo": 0.5, "consensus": 0.3, "confocal": 0.2},
    "bcc": {"histo": 1.0},
    "akiec": {"histo": 1.0},
    "df": {"consensus": 0.6, "histo": 0.4},
    "vasc": {"consensus": 0.5, "histo": 0.5},
}
_AGE = {
    "mel": (62, 14),
    "nv": (45, 16),
    "bkl": (62, 13),
    "bcc": (66, 12),
    "akiec": (67, 11),
    "df": (50, 15),
    "vasc": (50, 20),
}
_SITES = {
    "back": 22,
    "lower extremity": 21,
    "trunk": 14,
    "upper extremity": 11,
    "abdomen": 10,
    "face": 7,
    "chest": 4,
    "foot": 3,
    "unknown": 2,
    "neck": 2,
    "scalp": 1.3,
    "hand": 0.9,
    "ear": 0.6,
    "genital": 0.5,
    "acral": 0.1,
}


def generate(
    out_dir: str | Path,
    images: Mapping[str, int],
    *,
    seed: int = 0,
    images_per_archive: int = 5000,
    size: tuple[int, int] = IMAGE_SIZE,
    workers: int = 1,
) -> list[Path]:
    """Write HAM10000-format image zips, metadata csv and mask zip to `out_dir`; return their paths.

    `workers` processes render the images; the bytes do not depend on it (every draw was
    made in `plan`, and the members are written in image-id order).
    """
    started = time.perf_counter()
    metadata, lesions, views = plan(images, seed)
    out_dir = Path(out_dir)
    order = np.argsort(metadata["image_id"].to_numpy(), kind="stable")
    n_parts = math.ceil(len(order) / images_per_archive)
    parts = [out_dir / image_archive_name(k + 1) for k in range(n_parts)]
    jobs = ((lesions[row], views[row], size) for row in order)
    with ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(multiprocessing.get_context("fork").Pool(workers))
            encoded = pool.imap(_render_encoded, jobs, chunksize=16)
        else:
            encoded = map(_render_encoded, jobs)
        masks = _open_zip(stack, out_dir / MASKS_NAME)
        for k, part in enumerate(parts):
            archive = _open_zip(stack, part)
            for row in order[k * images_per_archive : (k + 1) * images_per_archive]:
                name = metadata["image_id"].iat[row]
                jpeg, png = next(encoded)
                _write_member(archive, f"{name}.jpg", jpeg)
                _write_member(masks, mask_member(name), png)
            archive.close()
        masks.close()
    atomic.write_text(metadata.to_csv(index=False), out_dir / METADATA_NAME)
    log.info(
        "generated %d synthetic images of %d lesions (%s) in %.1f s",
        len(metadata),
        metadata["lesion_id"].nunique(),
        metadata["dx"].value_counts().to_dict(),
        time.perf_counter() - started,
    )
    return [*parts, out_dir / METADATA_NAME, out_dir / MASKS_NAME]


def plan(images: Mapping[str, int], seed: int) -> tuple[pd.DataFrame, list[Lesion], list[View]]:
    """Metadata rows (HAM10000 order: by dx, then lesion) and each row's lesion and view, unrendered."""
    unknown = sorted(set(images) - set(DX_CODES))
    if unknown:
        raise DataError(f"data.synthetic.images has unknown dx codes {unknown}: use only {list(DX_CODES)}")
    if sum(images.values()) < 1:
        raise DataError("data.synthetic.images asks for no image: give at least one dx code a positive count")
    rng = np.random.default_rng(seed)
    lesion_dx = []
    lesion_views = []
    for dx in sorted(images):
        remaining = images[dx]
        while remaining > 0:
            n = min(int(rng.choice(_VIEWS, p=_VIEW_P)), remaining)
            lesion_dx.append(dx)
            lesion_views.append(n)
            remaining -= n
    lesion_numbers = rng.choice(10**7, size=len(lesion_dx), replace=False)
    image_numbers = FIRST_IMAGE_NUMBER + rng.permutation(sum(lesion_views))

    rows, lesions, views = [], [], []
    for index, (dx, n_views, number) in enumerate(zip(lesion_dx, lesion_views, lesion_numbers)):
        lesion_rng = np.random.default_rng([seed, index])
        lesion = draw_lesion(dx, lesion_rng)
        patient = _patient(dx, lesion_rng)
        for view in range(n_views):
            rows.append(
                {
                    "lesion_id": f"HAM_{number:07d}",
                    "image_id": image_id(int(image_numbers[len(rows)])),
                    "dx": dx,
                    **patient,
                }
            )
            lesions.append(lesion)
            views.append(draw_view(lesion_rng, first=view == 0))
    metadata = pd.DataFrame(rows, columns=list(METADATA_COLUMNS))
    order = metadata.sort_values(["dx", "lesion_id", "image_id"], kind="stable").index.to_numpy()
    return metadata.loc[order].reset_index(drop=True), [lesions[i] for i in order], [views[i] for i in order]


def _patient(dx: str, rng: np.random.Generator) -> dict[str, object]:
    """Per-lesion metadata: diagnosis type, age (5-year steps, rarely missing), sex, site."""
    dx_types = _DX_TYPE[dx]
    mean, sd = _AGE[dx]
    age = float(np.clip(round(rng.normal(mean, sd) / 5) * 5, 0, 85)) if rng.random() > 0.005 else math.nan
    sites = np.array(list(_SITES.values()))
    return {
        "dx_type": str(rng.choice(list(dx_types), p=list(dx_types.values()))),
        "age": age,
        "sex": str(rng.choice(["male", "female", "unknown"], p=[0.54, 0.45, 0.01])),
        "localization": str(rng.choice(list(_SITES), p=sites / sites.sum())),
    }


def _render_encoded(job: tuple[Lesion, View, tuple[int, int]]) -> tuple[bytes, bytes]:
    """One image and its mask, rendered and encoded (a pool worker's unit of work)."""
    return _encode(*render(*job))


def _encode(image: Image.Image, mask: Image.Image) -> tuple[bytes, bytes]:
    jpeg, png = io.BytesIO(), io.BytesIO()
    image.save(jpeg, **_JPEG)
    mask.save(png, format="PNG", compress_level=6)
    return jpeg.getvalue(), png.getvalue()


def _open_zip(stack: ExitStack, path: Path) -> zipfile.ZipFile:
    """A zip written to a temporary file that replaces `path` only when the whole run succeeds."""
    tmp = stack.enter_context(atomic.atomic_path(path))
    return stack.enter_context(zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED))


def _write_member(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)

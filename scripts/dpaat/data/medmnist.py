"""MedMNIST v2 / MedMNIST+ (2D, single-label) `.npz` files: where they are published and how they are read.

The URL and MD5 of each flag and size, the class names and the task come from the
`medmnist` package's own `INFO` table (never copied here). Only its `info.py` is loaded,
and only when a MedMNIST source is used: the package's `__init__` imports torch and its
dataset classes, which this pipeline does not use. An `.npz` holds `train_images`,
`train_labels`, `val_images`, ... (images uint8 (N, H, W) or (N, H, W, 3), labels
(N, 1)); the index writes each image as a PNG, so the one cache path reads it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
from PIL import Image

from .. import io as atomic
from .errors import DataError

log = logging.getLogger(__name__)

SIZES = (28, 64, 128, 224)
PARTS = ("train", "val", "test")
# Tasks of INFO a single-label classifier can learn.
SINGLE_LABEL = ("multi-class", "binary-class", "ordinal-regression")


def info_table() -> Mapping[str, Mapping[str, Any]]:
    """The `medmnist` package's INFO table, loaded from its info.py alone (no torch import)."""
    spec = importlib.util.find_spec("medmnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data.source medmnist needs the medmnist package: pip install medmnist==3.0.2")
    path = Path(next(iter(spec.submodule_search_locations))) / "info.py"
    info_spec = importlib.util.spec_from_file_location("_medmnist_info", path)
    module = importlib.util.module_from_spec(info_spec)
    info_spec.loader.exec_module(module)
    return module.INFO


def dataset_info(flag: str, size: int, info: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """What INFO says of one flag at one size: url, md5, file name, class names; 3D and multi-label sets refused."""
    info = info_table() if info is None else info
    if flag not in info:
        flags = sorted(f for f, entry in info.items() if _is_2d_single_label(f, entry))
        raise DataError(f"data.medmnist.flag {flag!r} is not a MedMNIST dataset: use one of {flags}")
    entry = info[flag]
    if flag.endswith("3d"):
        raise DataError(
            f"data.medmnist.flag {flag} is a 3D MedMNIST dataset: the CNNs here classify 2D images; "
            "choose a 2D flag such as pathmnist or dermamnist"
        )
    if entry["task"] not in SINGLE_LABEL:
        raise DataError(
            f"data.medmnist.flag {flag} is a {entry['task']} dataset: each image has several labels, and this "
            "pipeline trains single-label classifiers; choose a single-label flag such as pathmnist"
        )
    if size not in SIZES:
        raise DataError(f"data.medmnist.size {size} is not a MedMNIST size: use one of {list(SIZES)}")
    suffix = "" if size == 28 else f"_{size}"
    url = entry[f"url{suffix}"]
    labels = entry["label"]
    return {
        "flag": flag,
        "size": size,
        "url": url,
        "md5": entry[f"MD5{suffix}"],
        "name": Path(urlsplit(url).path).name,
        "classes": [labels[str(i)] for i in range(len(labels))],
        "n_samples": dict(entry["n_samples"]),
    }


def _is_2d_single_label(flag: str, entry: Mapping[str, Any]) -> bool:
    return not flag.endswith("3d") and entry.get("task") in SINGLE_LABEL


def build_index(
    npz_path: str | os.PathLike, classes: list[str], images_dir: str | os.PathLike, *, workers: int = 2
) -> tuple[pd.DataFrame, dict]:
    """Write every image of the npz as `<images_dir>/<part>/<part>_<i>.png`; the index rows and its metadata.

    image_id `<part>_<i>` (the npz's own order), dx the class name of its label, predefined_split the
    official part; each image is its own group (MedMNIST gives no patient ids).
    """
    npz_path = Path(npz_path)
    try:
        archive = np.load(npz_path)
    except (OSError, ValueError) as err:
        raise DataError(f"{npz_path} is not a readable .npz ({err}): delete it and rerun the acquire step") from None
    frames = []
    with archive, ThreadPoolExecutor(max_workers=workers) as pool:
        keys = set(archive.files)
        missing = [f"{part}_{kind}" for part in PARTS for kind in ("images", "labels") if f"{part}_{kind}" not in keys]
        if missing:
            raise DataError(
                f"{npz_path.name} lacks the arrays {missing} (it has {sorted(keys)}): expected MedMNIST's "
                "train/val/test images and labels; use the file as published"
            )
        for part in PARTS:
            images, labels = archive[f"{part}_images"], archive[f"{part}_labels"]
            if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(labels):
                raise DataError(
                    f"{npz_path.name}: {part}_images is {images.dtype} {images.shape} with {len(labels)} labels: "
                    "expected uint8 (N, H, W) or (N, H, W, 3) and one label per image"
                )
            labels = labels.reshape(len(labels), -1)
            if labels.shape[1] != 1:
                raise DataError(
                    f"{npz_path.name}: {part}_labels has {labels.shape[1]} labels per image: expected one "
                    "(a multi-label dataset is not supported)"
                )
            labels = labels[:, 0].astype(np.int64)
            bad = (labels < 0) | (labels >= len(classes))
            if bad.any():
                raise DataError(
                    f"{npz_path.name}: {part}_labels holds {sorted(set(labels[bad].tolist()))[:5]}, outside the "
                    f"{len(classes)} classes of INFO: the file does not belong to this flag"
                )
            out = Path(images_dir) / part
            out.mkdir(parents=True, exist_ok=True)
            ids = [f"{part}_{i}" for i in range(len(images))]
            paths = [str(out / f"{image_id}.png") for image_id in ids]
            list(pool.map(_write_png, images, paths))
            where = [f"{npz_path.name}:{part}_images[{i}]" for i in range(len(images))]
            frames.append(
                pd.DataFrame(
                    {
                        "image_id": ids,
                        "lesion_id": ids,
                        "dx": np.asarray(classes, dtype=object)[labels],
                        "predefined_split": part,
                        "image_path": paths,
                        "source": where,
                    }
                )
            )
    index = pd.concat(frames, ignore_index=True)
    metadata = {
        "layout": "medmnist",
        "metadata": npz_path.name,
        "lesion_grouping": "impossible: MedMNIST gives no patient ids, each image is its own group",
    }
    return index, metadata


def _write_png(image: np.ndarray, path: str) -> None:
    """One image as a PNG (lossless, so the cache sees the npz's pixels); level 1 for speed."""
    with atomic.atomic_path(Path(path)) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", compress_level=1)

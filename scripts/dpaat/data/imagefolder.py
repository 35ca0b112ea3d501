"""Any labelled image collection in torchvision's ImageFolder convention, indexed like HAM10000.

`<local_dir>/<class>/<any name>.<jpg|jpeg|png|bmp|tif|tiff>`, nested folders allowed
below each class folder; optionally `train/` and `test/` at the top, each holding the
class folders (a predefined split, which the split step honours), and a `groups.csv`
(`path,group`, paths relative to `local_dir`) giving each image its patient or lesion
id, so the split keeps a group in one split. An image's id is its path relative to
`local_dir` (unique and stable); the index records where the image came from.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from PIL import Image

from .. import io as atomic
from .errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
GROUPS_NAME = "groups.csv"
PREDEFINED_PARTS = ("train", "test")
_EXAMPLES = 5


def class_roots(local_dir: str | os.PathLike) -> dict[str | None, Path]:
    """The folders holding the class folders: {None: local_dir}, or {"train": .., "test": ..} for a predefined split."""
    root = Path(local_dir).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data.local_dir {root} is not a folder: point it at the ImageFolder tree (one folder per class)"
        )
    parts = {part: root / part for part in PREDEFINED_PARTS if (root / part).is_dir()}
    if len(parts) == 1:
        (only,) = parts
        raise DataError(
            f"{root} has a {only}/ folder but no {'test' if only == 'train' else 'train'}/ one: a predefined split "
            "needs both (each with the class folders); add the other, or rename the folder if it is a class"
        )
    return parts or {None: root}


def find_classes(local_dir: str | os.PathLike) -> list[str]:
    """The class folder names of an ImageFolder tree, sorted (with a predefined split: those of train/ and test/)."""
    roots = class_roots(local_dir)
    found = {part: sorted(p.name for p in root.iterdir() if p.is_dir()) for part, root in roots.items()}
    if None not in found and found["train"] != found["test"]:
        raise DataError(
            f"{local_dir}: train/ holds the classes {found['train']} but test/ holds {found['test']}: "
            "expected the same class folders in both; add or rename the missing ones"
        )
    classes = next(iter(found.values()))
    if len(classes) < 2:
        raise DataError(
            f"{local_dir} holds {len(classes)} class folders ({classes}): expected one folder per class, at least two"
        )
    return classes


def list_images(local_dir: str | os.PathLike, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Every image of the chosen class folders (all when None): image_id (relative path), dx, predefined_split, path."""
    root = Path(local_dir).expanduser()
    roots = class_roots(root)
    known = find_classes(root)
    chosen = list(known if classes is None else classes)
    absent = [c for c in chosen if c not in known]
    if absent:
        raise DataError(
            f"data.classes {absent} have no folder in {root} (its class folders are {known}): fix data.classes"
        )
    rows = []
    for part, top in roots.items():
        for dx in chosen:
            for path in sorted((top / dx).rglob("*")):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    rel = path.relative_to(root).as_posix()
                    rows.append({"image_id": rel, "dx": dx, "predefined_split": part, "path": str(path)})
    listed = pd.DataFrame(rows, columns=["image_id", "dx", "predefined_split", "path"])
    empty = [dx for dx in chosen if not (listed["dx"] == dx).any()]
    if empty:
        raise DataError(
            f"the class folders {empty} of {root} hold no image ({', '.join(IMAGE_SUFFIXES)}): "
            "add images or drop those classes from data.classes"
        )
    return listed


def read_groups(path: str | os.PathLike, image_ids: Sequence[str]) -> dict[str, str]:
    """image id -> group of a groups.csv (`path,group`, paths relative to local_dir), checked against the images."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path} is not a readable csv ({err}): expected the columns path,group") from None
    absent = [c for c in ("path", "group") if c not in table.columns]
    if absent:
        raise DataError(
            f"{path} lacks the column(s) {absent} (it has {list(table.columns)}): expected path,group with "
            "paths relative to data.local_dir"
        )
    table["path"] = table["path"].str.strip().str.replace("\\", "/", regex=False).str.removeprefix("./")
    blank = table["group"].str.strip() == ""
    if blank.any():
        raise DataError(f"{path} has {int(blank.sum())} rows without a group: give every listed image a group")
    twice = table["path"][table["path"].duplicated()]
    if len(twice):
        raise DataError(f"{path} lists {len(twice)} paths twice, e.g. {sorted(set(twice))[:_EXAMPLES]}: one row each")
    unknown = sorted(set(table["path"]) - set(image_ids))
    if unknown:
        raise DataError(
            f"{path} lists {len(unknown)} paths that are no image of the chosen classes, e.g. {unknown[:_EXAMPLES]}: "
            "expected paths relative to data.local_dir such as class/name.png; fix them or drop those rows"
        )
    return dict(zip(table["path"], table["group"]))


def build_index(local_dir: str | os.PathLike, images_dir: str | os.PathLike, skips: Any) -> tuple[pd.DataFrame, dict]:
    """Check and copy every image (all classes) into `images_dir`; the index rows and its metadata (layout, grouping).

    `skips` counts unreadable images (`extract._Skips`): one more than data.max_unreadable is an error naming the files.
    """
    root = Path(local_dir).expanduser()
    listed = list_images(root)
    groups_csv = root / GROUPS_NAME
    if groups_csv.is_file():
        groups = read_groups(groups_csv, listed["image_id"].tolist())
        ungrouped = int((~listed["image_id"].isin(groups)).sum())
        grouping = f"group from {GROUPS_NAME}"
        if ungrouped:
            log.warning("%d images are not in %s: each is its own group", ungrouped, groups_csv)
            grouping += f" ({ungrouped} images not listed: their own group)"
    else:
        groups = {}
        grouping = f"impossible: no {GROUPS_NAME} in {root}, each image is its own group"
    out = Path(images_dir)
    kept = []
    for row in listed.itertuples():
        data = Path(row.path).read_bytes()
        problem = unreadable(data)
        if problem:
            skips.add(row.image_id, row.path, problem)
            continue
        target = out / row.image_id
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(data)
        kept.append(
            {
                "image_id": row.image_id,
                "lesion_id": groups.get(row.image_id, row.image_id),
                "dx": row.dx,
                "predefined_split": row.predefined_split,
                "image_path": str(target),
                "source": row.path,
            }
        )
    index = pd.DataFrame(kept, columns=["image_id", "lesion_id", "dx", "predefined_split", "image_path", "source"])
    layout = "imagefolder" + (" (predefined train/ and test/)" if index["predefined_split"].notna().any() else "")
    return index, {"layout": layout, "metadata": GROUPS_NAME if groups else None, "lesion_grouping": grouping}


def unreadable(data: bytes) -> str | None:
    """Why `data` is not a decodable image, or None if it is (any format PIL reads, any mode)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as err:
        return f"cannot decode: {err}"
    return None

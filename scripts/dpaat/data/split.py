"""Train/val/test split with exact per-class counts, grouped by lesion, stratified, seeded.

For each class, the groups (lesions, or single images when not grouping) are shuffled
with a generator seeded by (split_seed, class) and dealt to test, then val, then train.
A group is taken when it still fits the bucket's remaining count *and* the groups after
it can still fill the rest exactly (a subset-sum reachability table, kept as Python int
bitsets, one per suffix of the shuffled order). The buckets are therefore filled
exactly whenever some choice of whole lesions allows it, and otherwise by the first
lesions in the shuffled order, i.e. at random. Images left over stay unused.
"""

from __future__ import annotations

import logging
import os
import zlib
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import io as atomic
from .errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLITS_SCHEMA = pa.schema(
    [("image_id", pa.string()), ("lesion_id", pa.string()), ("dx", pa.string()), ("split", pa.string())]
)


def make_splits(
    index: pd.DataFrame,
    classes: Sequence[str],
    train_per_class: int,
    test_per_class: int,
    val_fraction: float,
    *,
    group_by_lesion: bool = True,
    seed: int = 0,
) -> pd.DataFrame:
    """Split `classes` of the index into train/val/test; val is `val_fraction` of each class's train part.

    Per class: `test_per_class` test images and `train_per_class` train+val images, of which
    round(val_fraction * train_per_class) (at least 1) are val.
    """
    n_val = max(1, round(val_fraction * train_per_class))
    if n_val >= train_per_class:
        raise DataError(
            f"data.val_fraction {val_fraction} of data.train_per_class {train_per_class} leaves no training image: "
            "lower val_fraction or raise train_per_class"
        )
    counts = {"test": test_per_class, "val": n_val, "train": train_per_class - n_val}
    present = sorted(index["dx"].unique())
    absent = [c for c in classes if c not in present]
    if absent:
        raise DataError(f"data.classes {absent} have no image in the metadata (it has {present}): fix data.classes")
    if group_by_lesion:
        _check_lesions_have_one_dx(index, classes)

    parts = []
    for dx in classes:
        rows = index[index["dx"] == dx]
        groups = rows.groupby("lesion_id" if group_by_lesion else "image_id", sort=True).size()
        rng = np.random.default_rng([seed, zlib.crc32(dx.encode())])
        order = rng.permutation(len(groups))
        names, sizes = groups.index.to_numpy()[order], groups.to_numpy()[order]
        assigned = _deal(sizes, counts, dx, group_by_lesion)
        chosen = pd.Series(assigned, index=names)
        key = rows["lesion_id" if group_by_lesion else "image_id"]
        split = key.map(chosen)
        parts.append(rows.assign(split=split)[split.notna()])
    splits = pd.concat(parts)[["image_id", "lesion_id", "dx", "split"]]
    order = splits["split"].map(SPLITS.index) * len(classes) + splits["dx"].map(list(classes).index)
    splits = splits.assign(_order=order).sort_values(["_order", "image_id"], kind="stable").drop(columns="_order")
    summary = splits.groupby(["split", "dx"]).size().unstack(fill_value=0)
    log.info("split per class (grouped by lesion: %s):\n%s", group_by_lesion, summary.to_string())
    return splits.reset_index(drop=True)


def write_splits(splits: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the splits to Parquet atomically with the contract's schema."""
    atomic.write_parquet(splits, path, schema=SPLITS_SCHEMA)


def _check_lesions_have_one_dx(index: pd.DataFrame, classes: Sequence[str]) -> None:
    """A lesion must have one diagnosis, or grouping by lesion could not keep it in one split."""
    used = index[index["lesion_id"].isin(index.loc[index["dx"].isin(classes), "lesion_id"])]
    dx_per_lesion = used.groupby("lesion_id")["dx"].nunique()
    mixed = dx_per_lesion.index[dx_per_lesion > 1].tolist()
    if mixed:
        raise DataError(f"{len(mixed)} lesions have images with different dx, e.g. {mixed[:5]}: fix the metadata")


def _deal(sizes: np.ndarray, counts: dict[str, int], dx: str, grouped: bool) -> list[str | None]:
    """Assign each group (in the given order) to a split so that every split gets exactly its count."""
    needed = sum(counts.values())
    unit = "lesions" if grouped else "images"
    if sizes.sum() < needed:
        raise DataError(
            f"class {dx} has {int(sizes.sum())} images ({len(sizes)} {unit}), needs {needed} "
            f"({counts['train'] + counts['val']} train+val, {counts['test']} test): "
            "lower data.train_per_class / data.test_per_class or drop the class"
        )
    assigned: list[str | None] = [None] * len(sizes)
    free = list(range(len(sizes)))
    for split in ("test", "val", "train"):
        target = counts[split]
        # reach[i] has bit s set when some of the free groups i.. sum to exactly s images.
        reach = [1] * (len(free) + 1)
        mask = (1 << (target + 1)) - 1
        for i in range(len(free) - 1, -1, -1):
            reach[i] = (reach[i + 1] | (reach[i + 1] << int(sizes[free[i]]))) & mask
        if not reach[0] >> target & 1:
            raise DataError(
                f"class {dx}: no set of whole lesions gives exactly {target} {split} images from the "
                f"{len(free)} lesions left: change the per-class counts or set data.group_by_lesion: false"
            )
        left = target
        kept = []
        for i, group in enumerate(free):
            size = int(sizes[group])
            if left and size <= left and reach[i + 1] >> (left - size) & 1:
                assigned[group] = split
                left -= size
            else:
                kept.append(group)
        free = kept
    return assigned

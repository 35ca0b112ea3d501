"""Train/val/test split with per-class counts, grouped by lesion, stratified, seeded.

For each class, the groups (lesions, or single images when not grouping) are shuffled
with a generator seeded by (split_seed, class) and dealt to test, then val, then train.
A group is taken when it still fits the bucket's remaining count *and* the groups after
it can still fill the rest exactly (a subset-sum reachability table, kept as Python int
bitsets, one per suffix of the shuffled order). The buckets are therefore filled
exactly whenever some choice of whole lesions allows it, and otherwise by the first
lesions in the shuffled order, i.e. at random. Images left over stay unused.

When no set of the lesions left sums to a bucket's count, the bucket takes the nearest
count they can sum to (the smaller on a tie), unless `exact_counts`, which makes that an
error. The requested and achieved counts per class and split are logged and stored in
the splits' Parquet metadata with how lesions were grouped (`split_metadata`).

A dataset's own split (the index's `predefined_split`: MedMNIST's official parts, an
ImageFolder's train/ and test/) is honoured with `predefined`: test images come from its
test part, val from its val part (or, without one, carved from its train part) and train
from its train part, each drawn as above within that part.
"""

from __future__ import annotations

import logging
import os
import zlib
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import io as atomic
from ..tables import RIGHT, markdown, markdown_table
from .errors import DataError
from .extract import METADATA_KEY

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
    exact_counts: bool = False,
    seed: int = 0,
    predefined: bool = True,
) -> pd.DataFrame:
    """Split `classes` of the index into train/val/test; val is `val_fraction` of each class's train part.

    Per class: `test_per_class` test images and `train_per_class` train+val images, of which
    round(val_fraction * train_per_class) (at least 1) are val; with `exact_counts` false, the
    nearest counts whole lesions allow where those cannot be met exactly. `predefined`: honour
    the index's `predefined_split` where it has one.
    """
    counts = requested_counts(train_per_class, test_per_class, val_fraction)
    present = sorted(index["dx"].unique())
    absent = [c for c in classes if c not in present]
    if absent:
        raise DataError(f"data.classes {absent} have no image in the metadata (it has {present}): fix data.classes")
    if group_by_lesion:
        _check_lesions_have_one_dx(index, classes)

    given = index["predefined_split"] if "predefined_split" in index.columns else pd.Series(None, index=index.index)
    plan = _predefined_plan(given[index["dx"].isin(classes)], counts) if predefined else None
    key = "lesion_id" if group_by_lesion else "image_id"
    parts = []
    for dx in classes:
        rows = index[index["dx"] == dx]
        if plan is None:
            parts.append(_dealt(rows, key, counts, dx, group_by_lesion, exact_counts, [seed, zlib.crc32(dx.encode())]))
            continue
        for part, wanted in plan.items():
            rng_seed = [seed, zlib.crc32(dx.encode()), zlib.crc32(part.encode())]
            within = rows[given.loc[rows.index] == part]
            parts.append(_dealt(within, key, wanted, dx, group_by_lesion, exact_counts, rng_seed, part))
    splits = pd.concat(parts)[["image_id", "lesion_id", "dx", "split"]]
    order = splits["split"].map(SPLITS.index) * len(classes) + splits["dx"].map(list(classes).index)
    splits = splits.assign(_order=order).sort_values(["_order", "image_id"], kind="stable").drop(columns="_order")
    splits = splits.reset_index(drop=True)
    table = count_table(splits, classes, counts)
    log.info(
        "split per class and split, requested vs achieved (grouped by lesion: %s):\n%s",
        group_by_lesion,
        table.to_string(index=False),
    )
    short = table[table["achieved"] != table["requested"]]
    if len(short):
        log.warning(
            "whole lesions allow no exact count for %d class/split pairs: took the nearest (%s); "
            "set data.exact_counts: true to make this an error",
            len(short),
            ", ".join(f"{r.dx} {r.split} {r.achieved} of {r.requested}" for r in short.itertuples()),
        )
    return splits


def _predefined_plan(given: pd.Series, counts: Mapping[str, int]) -> dict[str, dict[str, int]] | None:
    """Which splits each predefined part supplies ({part: {split: count}}); None without a predefined split."""
    present = set(given.dropna())
    if not present:
        return None
    if not {"train", "test"} <= present or present - set(SPLITS):
        raise DataError(
            f"the index's predefined split has the parts {sorted(present)}: expected train and test (and "
            "optionally val); rebuild the index, or set the split to be drawn anew"
        )
    if "val" in present:
        return {part: {part: counts[part]} for part in SPLITS}
    return {"test": {"test": counts["test"]}, "train": {"val": counts["val"], "train": counts["train"]}}


def _dealt(
    rows: pd.DataFrame,
    key: str,
    counts: Mapping[str, int],
    dx: str,
    grouped: bool,
    exact: bool,
    rng_seed: list[int],
    part: str | None = None,
) -> pd.DataFrame:
    """`rows` (one class) with the split each was dealt, only those dealt one."""
    groups = rows.groupby(key, sort=True).size()
    order = np.random.default_rng(rng_seed).permutation(len(groups))
    names, sizes = groups.index.to_numpy()[order], groups.to_numpy()[order]
    assigned = _deal(sizes, dict(counts), dx, grouped, exact, part)
    split = rows[key].map(pd.Series(assigned, index=names, dtype=object))
    return rows.assign(split=split)[split.notna()]


def requested_counts(train_per_class: int, test_per_class: int, val_fraction: float) -> dict[str, int]:
    """Images asked for per class in each split: val is round(val_fraction * train_per_class), at least 1."""
    n_val = max(1, round(val_fraction * train_per_class))
    if n_val >= train_per_class:
        raise DataError(
            f"data.val_fraction {val_fraction} of data.train_per_class {train_per_class} leaves no training image: "
            "lower val_fraction or raise train_per_class"
        )
    return {"test": test_per_class, "val": n_val, "train": train_per_class - n_val}


def count_table(splits: pd.DataFrame, classes: Sequence[str], counts: Mapping[str, int]) -> pd.DataFrame:
    """Requested and achieved images per split and class (columns split, dx, requested, achieved)."""
    achieved = splits.groupby(["split", "dx"]).size()
    rows = [
        {"split": split, "dx": dx, "requested": counts[split], "achieved": int(achieved.get((split, dx), 0))}
        for split in SPLITS
        for dx in classes
    ]
    return pd.DataFrame(rows, columns=["split", "dx", "requested", "achieved"])


def split_metadata(
    table: pd.DataFrame,
    *,
    group_by_lesion: bool,
    exact_counts: bool,
    index_info: Mapping[str, Any],
    predefined: str | None = None,
) -> dict[str, Any]:
    """What the splits' Parquet metadata records: counts, how (and whether) lesions were grouped, the split honoured."""
    grouping = str(index_info.get("lesion_grouping", "lesion_id of the index"))
    if not group_by_lesion:
        grouping = "off (data.group_by_lesion: false): split per image"
    elif grouping.startswith("impossible"):
        log.warning("grouping by lesion was %s; images of one lesion may fall in different splits", grouping)
    return {
        "counts": table.to_dict(orient="records"),
        "exact_counts": exact_counts,
        "group_by_lesion": group_by_lesion,
        "lesion_grouping": grouping,
        "layout": index_info.get("layout"),
        **({"predefined_split": predefined} if predefined else {}),
    }


def predefined_description(index: pd.DataFrame, classes: Sequence[str]) -> str | None:
    """How the dataset's own split was honoured (for the metadata), or None when the index has none."""
    if "predefined_split" not in index.columns:
        return None
    parts = sorted(set(index.loc[index["dx"].isin(classes), "predefined_split"].dropna()), key=SPLITS.index)
    if not parts:
        return None
    val = "its val part" if "val" in parts else "carved from its train part"
    return f"the dataset's own {'/'.join(parts)} parts: test from test, train from train, val {val}"


def write_splits(splits: pd.DataFrame, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> None:
    """Write the splits to Parquet atomically with the contract's schema and `metadata` (see `split_metadata`)."""
    atomic.write_parquet(splits, path, schema=SPLITS_SCHEMA, metadata={METADATA_KEY: dict(metadata or {})})


def count_markdown(table: pd.DataFrame) -> str:
    """The count table as Markdown: one row per class, requested / achieved per split."""
    rows = []
    for dx, dx_rows in table.groupby("dx", sort=False):
        cells = []
        for split in SPLITS:
            row = dx_rows[dx_rows["split"] == split].iloc[0]
            mark = "" if row["achieved"] == row["requested"] else " *"
            cells.append(f"{row['achieved']} / {row['requested']}{mark}")
        rows.append([dx, *cells])
    return markdown(
        markdown_table(["class", *SPLITS], ["---"] + [RIGHT] * len(SPLITS), rows, padded_rule=False),
        "",
        "Images per class and split, achieved / requested; * marks where whole lesions allowed no exact count.",
    )


def _check_lesions_have_one_dx(index: pd.DataFrame, classes: Sequence[str]) -> None:
    """A lesion must have one diagnosis, or grouping by lesion could not keep it in one split."""
    used = index[index["lesion_id"].isin(index.loc[index["dx"].isin(classes), "lesion_id"])]
    dx_per_lesion = used.groupby("lesion_id")["dx"].nunique()
    mixed = dx_per_lesion.index[dx_per_lesion > 1].tolist()
    if mixed:
        raise DataError(
            f"{len(mixed)} lesions have images with different dx, e.g. {mixed[:5]}: expected one dx per lesion_id; "
            "fix the metadata csv, or set data.group_by_lesion: false"
        )


def _deal(
    sizes: np.ndarray, counts: dict[str, int], dx: str, grouped: bool, exact: bool, part: str | None = None
) -> list[str | None]:
    """Assign each group (in the given order) to a split: exactly its count, else (not `exact`) the nearest reachable.

    `counts` holds the splits to fill (all three, or those a predefined `part` supplies).
    """
    needed = sum(counts.values())
    unit = "lesions" if grouped else "images"
    if sizes.sum() < needed:
        if part is None:
            asked = f"{counts['train'] + counts['val']} train+val, {counts['test']} test"
        else:
            asked = ", ".join(f"{n} {split}" for split, n in counts.items())
        where = "" if part is None else f" in the dataset's own {part} part"
        raise DataError(
            f"class {dx} has {int(sizes.sum())} images ({len(sizes)} {unit}){where}, needs {needed} ({asked}): "
            "lower data.train_per_class / data.test_per_class or drop the class"
        )
    assigned: list[str | None] = [None] * len(sizes)
    free = list(range(len(sizes)))
    for split in (s for s in SPLITS[::-1] if s in counts):
        wanted = counts[split]
        # Sums above 2 * wanted are farther from it than 0 is: no need to track them.
        limit = wanted if exact else 2 * wanted
        # reach[i] has bit s set when some of the free groups i.. sum to exactly s images.
        reach = [1] * (len(free) + 1)
        mask = (1 << (limit + 1)) - 1
        for i in range(len(free) - 1, -1, -1):
            reach[i] = (reach[i + 1] | (reach[i + 1] << int(sizes[free[i]]))) & mask
        target = wanted if reach[0] >> wanted & 1 else None
        if target is None and exact:
            raise DataError(
                f"class {dx}: no set of whole lesions gives exactly {wanted} {split} images from the "
                f"{len(free)} lesions left: change the per-class counts, set data.exact_counts: false to take "
                "the nearest count, or set data.group_by_lesion: false"
            )
        if target is None:
            target = _nearest(reach[0], wanted)
            if target == 0:
                raise DataError(
                    f"class {dx}: the {len(free)} lesions left cannot give any of the {wanted} {split} images "
                    "asked for without going past twice that: expected smaller lesions or larger counts; "
                    "raise data.train_per_class / data.test_per_class or drop the class"
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


def _nearest(reachable: int, wanted: int) -> int:
    """The set bit of `reachable` nearest to `wanted`, the smaller one on a tie."""
    for distance in range(wanted + 1):
        for candidate in (wanted - distance, wanted + distance):
            if reachable >> candidate & 1:
                return candidate
    return 0

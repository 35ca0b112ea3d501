"""Lesion-grouped, stratified splits with exact per-class counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dpaat.data.errors import DataError
from dpaat.data.split import SPLITS, count_table, make_splits, requested_counts, split_metadata, write_splits
from dpaat.io import read_parquet_metadata


def index_with(lesion_sizes: dict[str, list[int]]) -> pd.DataFrame:
    """An index holding, per dx, lesions with the given numbers of images."""
    lesions = [(dx, size) for dx, sizes in lesion_sizes.items() for size in sizes]
    rows = [{"lesion_id": f"HAM_{n:07d}", "dx": dx} for n, (dx, size) in enumerate(lesions) for _ in range(size)]
    return pd.DataFrame(rows).assign(image_id=[f"ISIC_{i:07d}" for i in range(len(rows))])


def ham_like(n_lesions: int, seed: int) -> list[int]:
    """Lesion sizes with HAM10000's mix of single and repeated images."""
    return list(np.random.default_rng(seed).choice([1, 2, 3, 4], size=n_lesions, p=[0.75, 0.15, 0.07, 0.03]))


@pytest.fixture
def index():
    return index_with({"mel": ham_like(60, 1), "bkl": ham_like(60, 2), "nv": ham_like(120, 3), "bcc": [1] * 10})


def test_exact_counts_per_class_and_split(index):
    splits = make_splits(index, ["mel", "bkl", "nv"], 40, 12, 0.15, seed=0)
    counts = splits.groupby(["split", "dx"]).size().unstack()
    # val = round(0.15 * 40) = 6 of each class's 40 train+val images.
    assert counts.loc["test"].tolist() == [12, 12, 12]
    assert counts.loc["val"].tolist() == [6, 6, 6]
    assert counts.loc["train"].tolist() == [34, 34, 34]
    assert set(splits["dx"]) == {"mel", "bkl", "nv"} and list(splits.columns) == [
        "image_id",
        "lesion_id",
        "dx",
        "split",
    ]


def test_no_lesion_in_two_splits_and_whole_lesions(index):
    splits = make_splits(index, ["mel", "bkl", "nv"], 40, 12, 0.15, seed=0)
    assert splits.groupby("lesion_id")["split"].nunique().max() == 1
    used = index[index["lesion_id"].isin(splits["lesion_id"])]
    assert len(used) == len(splits)  # every chosen lesion comes with all its images


def test_rows_are_ordered_by_split_then_class(index):
    splits = make_splits(index, ["nv", "mel"], 20, 5, 0.2, seed=0)
    keys = list(zip(splits["split"].map(SPLITS.index), splits["dx"].map(["nv", "mel"].index), splits["image_id"]))
    assert keys == sorted(keys)


def test_seeded(index):
    first = make_splits(index, ["mel", "bkl", "nv"], 40, 12, 0.15, seed=3)
    pd.testing.assert_frame_equal(first, make_splits(index, ["mel", "bkl", "nv"], 40, 12, 0.15, seed=3))
    other = make_splits(index, ["mel", "bkl", "nv"], 40, 12, 0.15, seed=4)
    assert set(first.loc[first["split"] == "test", "image_id"]) != set(other.loc[other["split"] == "test", "image_id"])


def test_exact_count_found_where_greedy_order_would_miss():
    # Lesions of 3, 3, 2, 2 images: 4 test images can only be the two 2s, whatever the shuffle.
    index = index_with({"mel": [3, 3, 2, 2], "nv": [1] * 10})
    for seed in range(8):
        splits = make_splits(index, ["mel", "nv"], 6, 4, 0.5, seed=seed)
        test = splits[(splits["dx"] == "mel") & (splits["split"] == "test")]
        assert sorted(test.groupby("lesion_id").size()) == [2, 2]
        assert (splits[splits["dx"] == "mel"].groupby("split").size() == 3).loc[["train", "val"]].all()


def test_unreachable_exact_count_is_a_clear_error():
    index = index_with({"mel": [2, 2, 2, 2], "nv": [1] * 10})
    with pytest.raises(
        DataError, match=r"class mel: no set of whole lesions gives exactly 3 test.*group_by_lesion: false"
    ):
        make_splits(index, ["mel", "nv"], 4, 3, 0.5, exact_counts=True)
    splits = make_splits(index, ["mel", "nv"], 4, 3, 0.5, group_by_lesion=False)
    assert splits[splits["dx"] == "mel"].groupby("split").size().to_dict() == {"test": 3, "train": 2, "val": 2}


def test_per_image_split_may_separate_a_lesions_images():
    index = index_with({"mel": [4] * 10, "nv": [1] * 40})
    splits = make_splits(index, ["mel", "nv"], 20, 10, 0.25, group_by_lesion=False, seed=1)
    assert splits.groupby("lesion_id")["split"].nunique().max() > 1
    assert splits.groupby(["split", "dx"]).size().to_dict() == {
        ("test", "mel"): 10,
        ("test", "nv"): 10,
        ("train", "mel"): 15,
        ("train", "nv"): 15,
        ("val", "mel"): 5,
        ("val", "nv"): 5,
    }


def test_too_few_images_names_class_and_counts(index):
    available = int((index["dx"] == "mel").sum())
    with pytest.raises(DataError) as err:
        make_splits(index, ["mel", "bkl"], available, 1, 0.1)
    assert f"class mel has {available} images (60 lesions), needs {available + 1}" in str(err.value)


def test_class_absent_from_metadata(index):
    with pytest.raises(DataError, match=r"data.classes \['df'\] have no image in the metadata"):
        make_splits(index, ["mel", "df"], 10, 5, 0.2)


def test_val_fraction_leaving_no_training_image(index):
    with pytest.raises(DataError, match="leaves no training image"):
        make_splits(index, ["mel", "bkl"], 2, 1, 0.9)


def test_lesion_with_two_diagnoses_is_an_error():
    index = index_with({"mel": [1] * 10, "nv": [1] * 10})
    index.loc[10, "lesion_id"] = index.loc[0, "lesion_id"]
    with pytest.raises(DataError, match="1 lesions have images with different dx"):
        make_splits(index, ["mel", "nv"], 5, 2, 0.2)


def test_nearest_counts_when_whole_lesions_cannot_give_exact_ones(caplog):
    # Every lesion has three images: 20 test is unreachable; 21 is the nearest (18 is farther).
    index = index_with({"mel": [3] * 70, "nv": [1] * 200})
    with caplog.at_level("INFO"):
        splits = make_splits(index, ["mel", "nv"], 160, 20, 0.15, seed=0)
    counts = requested_counts(160, 20, 0.15)
    assert counts == {"test": 20, "val": 24, "train": 136}
    table = count_table(splits, ["mel", "nv"], counts).set_index(["split", "dx"])
    # Hand-worked: test 21 (7 lesions), val 24 (8), train of the 42 images... 136 -> 135 (45 lesions).
    assert table.loc[("test", "mel"), "achieved"] == 21
    assert table.loc[("val", "mel"), "achieved"] == 24
    assert table.loc[("train", "mel"), "achieved"] == 135
    assert (table.xs("nv", level="dx")["achieved"] == table.xs("nv", level="dx")["requested"]).all()
    assert splits.groupby("lesion_id")["split"].nunique().max() == 1
    assert "mel test 21 of 20" in caplog.text and "data.exact_counts: true" in caplog.text


def test_tie_takes_the_smaller_count():
    # Lesions of 2: 3 test images could be 2 or 4; the smaller is taken.
    index = index_with({"mel": [2] * 10, "nv": [1] * 20})
    splits = make_splits(index, ["mel", "nv"], 8, 3, 0.25, seed=1)
    assert (splits[(splits["dx"] == "mel") & (splits["split"] == "test")]).shape[0] == 2


def test_exact_counts_when_reachable_are_the_same_split_either_way(index):
    exact = make_splits(index, ["mel", "bkl", "nv"], 40, 12, 0.15, seed=2, exact_counts=True)
    pd.testing.assert_frame_equal(exact, make_splits(index, ["mel", "bkl", "nv"], 40, 12, 0.15, seed=2))


def test_split_metadata_records_requested_and_achieved_counts(tmp_path, caplog):
    index = index_with({"mel": [3] * 12, "nv": [1] * 20})
    splits = make_splits(index, ["mel", "nv"], 10, 4, 0.2, seed=0)
    table = count_table(splits, ["mel", "nv"], requested_counts(10, 4, 0.2))
    info = {"layout": "isic2018", "lesion_grouping": "impossible: no LesionGroupings csv"}
    write_splits(
        splits,
        tmp_path / "splits.parquet",
        split_metadata(table, group_by_lesion=True, exact_counts=False, index_info=info),
    )
    assert "grouping by lesion was impossible" in caplog.text
    stored = read_parquet_metadata(tmp_path / "splits.parquet")["dpaat"]
    assert stored["lesion_grouping"].startswith("impossible") and stored["layout"] == "isic2018"
    mel_test = [c for c in stored["counts"] if (c["split"], c["dx"]) == ("test", "mel")][0]
    assert mel_test == {"split": "test", "dx": "mel", "requested": 4, "achieved": 3}
    assert pd.read_parquet(tmp_path / "splits.parquet").equals(splits)
    assert pq.read_schema(tmp_path / "splits.parquet").names == ["image_id", "lesion_id", "dx", "split"]

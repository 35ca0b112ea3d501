"""Any ImageFolder tree as the data source: ids, groups, a predefined split, image modes, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from data_helpers import image_tree
from PIL import Image

from dpaat.data.acquire import acquire
from dpaat.data.cache import load_image
from dpaat.data.classes import dataset_classes, is_paper_dataset
from dpaat.data.errors import DataError
from dpaat.data.extract import build_index, read_index, write_index
from dpaat.data.imagefolder import list_images
from dpaat.data.split import make_splits

CLASSES = [f"class_{c}" for c in range(10)]


def indexed(tree, tmp_path):
    manifest = tmp_path / "raw" / "manifest.json"
    acquire({"source": "imagefolder", "local_dir": str(tree)}, manifest.parent, manifest)
    index = build_index(manifest, tmp_path / "images", tmp_path / "masks")
    write_index(index, tmp_path / "index.parquet")
    return read_index(tmp_path / "index.parquet")


def test_a_ten_class_tree_is_indexed_with_relative_path_ids_and_its_groups(tmp_path):
    tree = image_tree(tmp_path / "tree")
    index = indexed(tree, tmp_path)
    assert sorted(index["dx"].unique()) == CLASSES and len(index) == 80
    assert "class_0/gray.png" in set(index["image_id"]) and "class_2/scans/day1/img2.jpg" in set(index["image_id"])
    row = index.set_index("image_id").loc["class_2/scans/day1/img2.jpg"]
    assert row["source"] == str(tree / "class_2/scans/day1/img2.jpg")  # where the image came from
    assert Image.open(row["image_path"]).tobytes() == Image.open(row["source"]).tobytes()
    groups = pd.read_csv(tree / "groups.csv")
    assert index.set_index("image_id")["lesion_id"].to_dict() == dict(zip(groups["path"], groups["group"]))
    assert index["predefined_split"].isna().all()
    assert index.attrs["dpaat"]["lesion_grouping"] == "group from groups.csv"


def test_the_split_keeps_groups_together_and_null_classes_mean_every_folder(tmp_path):
    tree = image_tree(tmp_path / "tree")
    classes = dataset_classes({"source": "imagefolder", "local_dir": str(tree), "classes": None})
    assert classes == CLASSES and not is_paper_dataset({"source": "imagefolder"}, classes)
    splits = make_splits(indexed(tree, tmp_path), classes, 6, 2, 0.34)
    assert splits.groupby("lesion_id")["split"].nunique().max() == 1
    assert splits.groupby(["split", "dx"]).size().unstack().to_dict() == {
        dx: {"test": 2, "train": 4, "val": 2} for dx in CLASSES
    }


def test_a_predefined_train_test_split_is_honoured_with_val_carved_from_train(tmp_path):
    tree = image_tree(tmp_path / "tree", predefined=True)
    index = indexed(tree, tmp_path)
    assert set(index["predefined_split"]) == {"train", "test"} and index["image_id"].str.match("^(train|test)/").all()
    assert dataset_classes({"source": "imagefolder", "local_dir": str(tree), "classes": None}) == CLASSES
    splits = make_splits(index, CLASSES[:4], 6, 2, 0.34)
    part = splits["image_id"].str.split("/").str[0]
    assert (part[splits["split"] == "test"] == "test").all() and (part[splits["split"] != "test"] == "train").all()
    assert splits["split"].value_counts().to_dict() == {"test": 8, "val": 8, "train": 16}
    # Drawn anew (predefined=False), test images come from both folders.
    anew = make_splits(index, CLASSES[:4], 8, 4, 0.25, predefined=False)
    assert set(anew.loc[anew["split"] == "test", "image_id"].str.split("/").str[0]) == {"train", "test"}


def test_grayscale_and_rgba_images_become_rgb(tmp_path):
    tree = image_tree(tmp_path / "tree")
    gray = load_image(tree / "class_0/gray.png", 16)
    alpha = load_image(tree / "class_1/alpha.png", 16)
    assert gray.shape == alpha.shape == (16, 16, 3) and gray.dtype == np.uint8
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all() and gray[0, 0, 0] == 90


def test_a_16_bit_grayscale_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    levels = np.array([[0, 257 * 100], [32896, 65535]], dtype=np.uint16).repeat(4, axis=0).repeat(4, axis=1)
    Image.fromarray(levels).save(tmp_path / "xray.png")
    assert Image.open(tmp_path / "xray.png").mode.startswith("I")
    rgb = load_image(tmp_path / "xray.png", 8)
    assert (rgb[0, 0] == 0).all() and (rgb[0, 7] == 100).all() and (rgb[7, 0] == 128).all() and (rgb[7, 7] == 255).all()


def test_a_corrupt_image_is_an_error_naming_the_file(tmp_path):
    tree = image_tree(tmp_path / "tree", n_classes=2, per_class=4)
    (tree / "class_1" / "img3.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match=r"class_1/img3\.png \(cannot decode"):
        indexed(tree, tmp_path)


def test_too_few_images_names_the_class_what_it_has_and_what_was_asked(tmp_path):
    tree = image_tree(tmp_path / "tree", n_classes=3, per_class=4)
    for extra in range(6):
        Image.new("RGB", (8, 8), (extra, 0, 0)).save(tree / "class_2" / f"more{extra}.png")
    index = indexed(tree, tmp_path)
    with pytest.raises(DataError, match=r"class class_0 has 4 images \(4 images\), needs 7 \(5 train\+val, 2 test\)"):
        make_splits(index, ["class_2", "class_0"], 5, 2, 0.2, group_by_lesion=False)


def test_bad_trees_and_groups_are_clear_errors(tmp_path):
    tree = image_tree(tmp_path / "tree", n_classes=2, per_class=2)
    with pytest.raises(DataError, match=r"data.classes \['tumour'\] have no folder"):
        list_images(tree, ["tumour", "class_0"])
    (tree / "groups.csv").write_text("path,group\nclass_0/nothere.png,p1\n")
    with pytest.raises(DataError, match=r"groups.csv lists 1 paths that are no image.*class_0/nothere.png"):
        indexed(tree, tmp_path)
    (tree / "train").mkdir()
    with pytest.raises(DataError, match="has a train/ folder but no test/"):
        dataset_classes({"source": "imagefolder", "local_dir": str(tree), "classes": None})
    with pytest.raises(DataError, match="classes is null"):
        dataset_classes({"source": "ham10000", "classes": None})

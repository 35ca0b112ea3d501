"""The data stage of the workflow on a folder in each layout a researcher has, up to a lesion-grouped split."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from data_helpers import isic_members, kaggle_tree, kaggle_zip, own_members, tiny_ham, write_tree
from test_workflow import copy_repo, snakemake

from dpaat.io import read_parquet_metadata

CLASSES = ["mel", "bkl", "nv"]


@pytest.fixture(scope="module")
def ham(tmp_path_factory):
    """A tiny HAM10000 with a few lesions of several images per class (60x45 images)."""
    folder = tmp_path_factory.mktemp("ham")
    tiny_ham(folder, {"mel": 14, "bkl": 14, "nv": 14, "bcc": 2}, seed=3, per_archive=25)
    return folder


def build(layout, ham, dest):
    """`dest` holding the tiny HAM10000 in `layout`; the expected lesion id of each image id."""
    metadata = pd.read_csv(ham / "HAM10000_metadata.csv")
    lesions = dict(zip(metadata["image_id"], metadata["lesion_id"]))
    if layout == "dataverse":
        return shutil.copytree(ham, dest), lesions
    if layout == "kaggle":
        return kaggle_tree(ham, dest), lesions
    if layout == "kaggle_zip_in_folder":
        # Kaggle's download as it arrives, alone in a folder.
        dest.mkdir()
        kaggle_zip(ham, dest / "archive.zip")
        return dest, lesions
    if layout == "isic2018":
        return write_tree(dest, isic_members(ham)), lesions
    members, renamed = own_members(ham)
    return write_tree(dest, members), {renamed[image]: lesion for image, lesion in lesions.items()}


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["dataverse", "kaggle", "isic2018", "folders", "kaggle_zip_in_folder"])
def test_split_of_a_local_folder_in_each_layout(ham, tmp_path, layout):
    local_dir, lesions = build(layout, ham, tmp_path / "copy")
    workdir = copy_repo(tmp_path / "workflow")
    config = {
        "data": {
            "source": "local",
            "local_dir": str(local_dir),
            "classes": CLASSES,
            "train_per_class": 9,
            "test_per_class": 3,
            "val_fraction": 0.25,
        }
    }
    (workdir / "local.yaml").write_text(json.dumps(config))
    run = snakemake(workdir, "--cores", "2", "results/data/splits.parquet", "--configfile", "local.yaml", timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    splits = pd.read_parquet(workdir / "results/data/splits.parquet")
    assert set(splits["dx"]) == set(CLASSES) and set(splits["split"]) == {"train", "val", "test"}
    # Lesion-grouped: the lesion ids are the copy's own, and no lesion is in two splits.
    assert (splits["lesion_id"] == splits["image_id"].map(lesions)).all()
    assert splits.groupby("lesion_id")["split"].nunique().max() == 1
    assert splits["lesion_id"].nunique() < len(splits)  # some lesions do have several images
    stored = read_parquet_metadata(workdir / "results/data/splits.parquet")["dpaat"]
    assert stored["layout"] == layout.removesuffix("_zip_in_folder") and stored["lesion_grouping"].startswith(
        "lesion_id from"
    )
    achieved = splits.groupby(["split", "dx"]).size()
    assert {(c["split"], c["dx"]): c["achieved"] for c in stored["counts"]} == achieved.to_dict()
    counts = pd.read_csv(workdir / "results/tables/split_counts.csv")
    assert counts.set_index(["split", "dx"])["achieved"].to_dict() == achieved.to_dict()
    index = pd.read_parquet(workdir / "results/data/index.parquet")
    assert index["source"].notna().all() and len(index) == 44

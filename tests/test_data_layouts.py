"""Every copy of HAM10000 a researcher has, each built here in its exact layout from tiny generated images."""

from __future__ import annotations

import json
import shutil
import zipfile

import pandas as pd
import pytest
from data_helpers import (
    file_table,
    isic_members,
    jpeg_bytes,
    kaggle_members,
    kaggle_tree,
    kaggle_zip,
    own_members,
    tiny_ham,
    write_tree,
)

from dpaat.data.acquire import acquire
from dpaat.data.errors import DataError
from dpaat.data.extract import METADATA_KEY, build_index, read_index, write_index


@pytest.fixture(scope="module")
def ham(tmp_path_factory):
    """A tiny HAM10000 (14 images in two zips of 8 + 6, csv, masks zip) and its file table."""
    folder = tmp_path_factory.mktemp("ham")
    tiny_ham(folder)
    return folder, file_table(folder)


def local(tmp_path, local_dir, table, **settings):
    """Acquire `local_dir` as data.source local and index it: (manifest, index)."""
    manifest = acquire(
        {"source": "local", "local_dir": str(local_dir), **settings},
        tmp_path / "raw",
        tmp_path / "raw" / "manifest.json",
        files=table,
    )
    index = build_index(tmp_path / "raw" / "manifest.json", tmp_path / "images", tmp_path / "masks")
    return manifest, index


def metadata_of(ham):
    return pd.read_csv(ham / "HAM10000_metadata.csv").sort_values("image_id").reset_index(drop=True)


def test_dataverse_zips_with_the_dataset_column(ham, tmp_path):
    folder, table = ham
    copy = shutil.copytree(folder, tmp_path / "dataverse")
    metadata_of(folder).assign(dataset="vidir_modern").to_csv(copy / "HAM10000_metadata.csv", index=False)
    manifest, index = local(tmp_path, copy, table)
    assert manifest["layout"] == "dataverse"
    assert [r["md5_published"] for r in manifest["files"]] == [True, True, False, False]  # the csv was re-written
    assert index["source"].str.fullmatch(r"HAM10000_images_part_[12]\.zip:ISIC_\d{7}\.jpg").all()
    pd.testing.assert_frame_equal(
        index[["image_id", "lesion_id", "dx"]], metadata_of(folder)[["image_id", "lesion_id", "dx"]]
    )


def test_kaggle_tree_with_lower_case_duplicates_and_hmnist_files(ham, tmp_path, caplog):
    folder, table = ham
    tree = kaggle_tree(folder, tmp_path / "kaggle")
    with caplog.at_level("INFO"):
        manifest, index = local(tmp_path, tree, table)
    assert manifest["layout"] == "kaggle"
    folders = sorted(r["path"].rsplit("/", 1)[-1] for r in manifest["files"] if r["role"] == "images")
    assert folders == [
        "HAM10000_images_part_1",
        "HAM10000_images_part_2",
        "ham10000_images_part_1",
        "ham10000_images_part_2",
    ]
    assert not any("hmnist" in r["path"] for r in manifest["files"])
    assert "dropped 14 byte-identical second copies" in caplog.text and "ignoring 4 hmnist_*.csv" in caplog.text
    assert len(index) == 14 and index["image_id"].is_unique
    # Each image comes from the first folder holding it, upper-case ones first (sorted paths).
    assert index["source"].str.contains("/HAM10000_images_part_").all()
    pd.testing.assert_frame_equal(index[["image_id", "lesion_id"]], metadata_of(folder)[["image_id", "lesion_id"]])


def test_two_different_files_under_one_id_name_both_paths(ham, tmp_path):
    folder, table = ham
    tree = kaggle_tree(folder, tmp_path / "kaggle")
    victim = sorted((tree / "ham10000_images_part_1").iterdir())[0]
    victim.write_bytes(jpeg_bytes((0, 255, 0)))
    with pytest.raises(DataError) as err:
        local(tmp_path, tree, table)
    message = str(err.value)
    assert str(tree / "HAM10000_images_part_1" / victim.name) in message and str(victim) in message
    assert "different contents" in message and "remove the wrong copy" in message


def test_kaggle_zip_read_in_place(ham, tmp_path):
    folder, table = ham
    archive = kaggle_zip(folder, tmp_path / "archive.zip")
    manifest, index = local(tmp_path, archive, table)
    assert manifest["layout"] == "kaggle"
    images = [r for r in manifest["files"] if r["role"] == "images"]
    assert {r["prefix"] for r in images} == {
        "HAM10000_images_part_1/",
        "HAM10000_images_part_2/",
        "ham10000_images_part_1/",
        "ham10000_images_part_2/",
    }
    metadata = [r for r in manifest["files"] if r["role"] == "metadata"][0]
    assert (metadata["member"], metadata["published_md5"], metadata["md5_published"]) == (
        "HAM10000_metadata.csv",
        table[2].md5,
        True,  # the tiny table's csv is this very csv
    )
    assert len(index) == 14 and index["source"].str.startswith("archive.zip:HAM10000_images_part_").all()
    assert not list(tmp_path.glob("raw/local/*"))  # nothing unpacked beside the zip


def test_a_folder_holding_only_the_kaggle_zip_is_read_as_that_zip(ham, tmp_path, caplog):
    folder, table = ham
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    archive = kaggle_zip(folder, downloads / "skin-cancer-mnist-ham10000.zip")
    (downloads / "README.txt").write_text("from Kaggle")
    with caplog.at_level("INFO"):
        manifest, index = local(tmp_path, downloads, table)
    assert f"reading {archive.name} as the dataset" in caplog.text
    direct = acquire(
        {"source": "local", "local_dir": str(archive)}, tmp_path / "direct", tmp_path / "direct/m.json", files=table
    )
    assert manifest["layout"] == direct["layout"] == "kaggle"
    assert manifest["files"] == direct["files"]
    assert len(index) == 14


def test_a_folder_without_any_layout_lists_what_it_holds_beside_what_each_layout_expects(ham, tmp_path):
    folder, table = ham
    other = write_tree(tmp_path / "other", {f"notes_{i}.txt": b"x" for i in range(12)} | {"photo.png": b"png"})
    with pytest.raises(DataError) as err:
        local(tmp_path, other, table)
    message = str(err.value)
    assert "Found: notes_0.txt, notes_1.txt, notes_10.txt" in message and "and 3 more" in message
    for layout in ("dataverse: HAM10000_images_part_1.zip", "kaggle: the folders", "folders:", "isic2018:"):
        assert layout in message
    # A lone zip holding no layout: the error names the zip and what it holds.
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    with zipfile.ZipFile(lonely / "photos.zip", "w") as archive:
        archive.writestr("holiday.jpg", b"jpg")
    with pytest.raises(DataError, match=r"holds one zip, photos\.zip, read as the dataset: .*Found: holiday\.jpg"):
        local(tmp_path, lonely, table)


def test_kaggle_zip_with_an_escaping_member_is_refused_at_acquire(ham, tmp_path):
    folder, table = ham
    archive = kaggle_zip(folder, tmp_path / "archive.zip")
    with zipfile.ZipFile(archive, "a") as handle:
        handle.writestr("../../ISIC_0099999.jpg", jpeg_bytes())
    with pytest.raises(DataError, match=r"archive\.zip has a member '\.\./\.\./ISIC_0099999\.jpg'.*zip-slip"):
        acquire({"source": "local", "local_dir": str(archive)}, tmp_path, tmp_path / "manifest.json", files=table)


def test_kaggle_zip_member_failing_its_crc_is_named(ham, tmp_path):
    folder, table = ham
    archive = kaggle_zip(folder, tmp_path / "archive.zip")
    name = sorted(n for n in kaggle_members(folder) if n.startswith("HAM10000_images_part_1/"))[0]
    data = kaggle_members(folder)[name]
    raw = bytearray(archive.read_bytes())
    at = raw.find(data)
    raw[at + 100] ^= 0xFF
    archive.write_bytes(bytes(raw))
    acquire({"source": "local", "local_dir": str(archive)}, tmp_path, tmp_path / "manifest.json", files=table)
    with pytest.raises(DataError, match=rf"archive\.zip:{name} \(damaged zip member: Bad CRC-32"):
        build_index(tmp_path / "manifest.json", tmp_path / "images", tmp_path / "masks")


def test_isic2018_folder_with_lesion_groupings(ham, tmp_path):
    folder, table = ham
    tree = write_tree(tmp_path / "isic", isic_members(folder))
    manifest, index = local(tmp_path, tree, table)
    assert manifest["layout"] == "isic2018"
    assert [(r["role"], r.get("format")) for r in manifest["files"]] == [
        ("images", None),
        ("metadata", "isic2018"),
        ("lesions", None),
    ]
    expected = metadata_of(folder)
    pd.testing.assert_frame_equal(index[["image_id", "lesion_id", "dx"]], expected[["image_id", "lesion_id", "dx"]])
    hand = {"histo": "histo", "follow_up": "follow_up"}
    assert index["dx_type"].tolist() == [hand.get(t, "consensus") for t in expected["dx_type"]]
    assert index["age"].isna().all() and index["mask_path"].isna().all()
    assert "lesion_id from" in index.attrs[METADATA_KEY]["lesion_grouping"]


def test_isic2018_without_groupings_makes_each_image_its_own_lesion(ham, tmp_path, caplog):
    folder, table = ham
    tree = write_tree(tmp_path / "isic", isic_members(folder, groupings=False))
    with caplog.at_level("INFO"):
        manifest, index = local(tmp_path, tree, table)
    assert manifest["layout"] == "isic2018" and (index["lesion_id"] == index["image_id"]).all()
    grouping = index.attrs[METADATA_KEY]["lesion_grouping"]
    assert grouping.startswith("impossible") and "lesion grouping impossible" in caplog.text
    write_index(index, tmp_path / "index.parquet")
    assert read_index(tmp_path / "index.parquet").attrs[METADATA_KEY]["lesion_grouping"] == grouping


def test_isic2018_ground_truth_with_two_labels_names_the_row(ham, tmp_path):
    folder, table = ham
    members = isic_members(folder)
    truth = pd.read_csv(pd.io.common.BytesIO(members["ISIC2018_Task3_Training_GroundTruth.csv"]))
    truth.loc[3, ["MEL", "NV"]] = 1.0
    members["ISIC2018_Task3_Training_GroundTruth.csv"] = truth.to_csv(index=False).encode()
    tree = write_tree(tmp_path / "isic", members)
    with pytest.raises(DataError, match=rf"GroundTruth\.csv row 5 \({truth['image'][3]}\): expected exactly one"):
        local(tmp_path, tree, table)


def test_own_folders_with_any_isic_ids_and_a_csv_of_its_own_name(ham, tmp_path):
    folder, table = ham
    members, renamed = own_members(folder)
    tree = write_tree(tmp_path / "lab", members)
    manifest, index = local(tmp_path, tree, table)
    assert manifest["layout"] == "folders"
    assert [r for r in manifest["files"] if r["role"] == "metadata"][0]["path"].endswith("labels/our_metadata_v2.csv")
    assert set(index["image_id"]) == set(renamed.values())
    lengths = {len(i) for i in index["image_id"]}
    assert len("ISIC_0024306") not in lengths and len(lengths) > 1  # ids of other lengths than HAM10000's
    by_old = metadata_of(folder).assign(image_id=lambda m: m["image_id"].map(renamed)).set_index("image_id")
    assert (index.set_index("image_id")["lesion_id"] == by_old.loc[index["image_id"], "lesion_id"]).all()


def test_several_layouts_one_is_used_and_the_log_says_which_and_why(ham, tmp_path, caplog):
    folder, table = ham
    both = shutil.copytree(folder, tmp_path / "both")
    for name, data in kaggle_members(folder).items():
        if "/" in name:
            write_tree(both, {name: data})
    with caplog.at_level("WARNING"):
        manifest, _ = local(tmp_path, both, table)
    assert manifest["layout"] == "dataverse"
    assert "2 complete layouts (dataverse, kaggle): using dataverse because the Dataverse zips" in caplog.text
    assert "data.local_layout" in caplog.text
    chosen, index = local(tmp_path / "again", both, table, local_layout="kaggle")
    assert chosen["layout"] == "kaggle" and len(index) == 14


def test_asking_for_a_layout_the_folder_lacks_says_what_it_holds(ham, tmp_path):
    folder, table = ham
    with pytest.raises(
        DataError, match=r"local_layout is isic2018 but .* holds no isic2018 files \(it holds: dataverse"
    ):
        local(tmp_path, folder, table, local_layout="isic2018")


def test_isic_images_without_any_labels_say_what_each_layout_lacks(ham, tmp_path):
    folder, table = ham
    members = {n: d for n, d in isic_members(folder).items() if n.startswith("ISIC2018_Task3_Training_Input/")}
    tree = write_tree(tmp_path / "isic", members)
    with pytest.raises(DataError) as err:
        local(tmp_path, tree, table)
    message = str(err.value)
    assert "HAM10000_metadata.csv (or another csv with the columns lesion_id, image_id, dx" in message
    assert "for the folders layout" in message and "ISIC2018_Task3_Training_GroundTruth.csv" in message
    assert "for the isic2018 layout" in message and "Found: ISIC2018_Task3_Training_Input/" in message


def test_manifest_paths_of_the_kaggle_zip_survive_a_rerun_check(ham, tmp_path):
    folder, table = ham
    archive = kaggle_zip(folder, tmp_path / "archive.zip")
    acquire({"source": "local", "local_dir": str(archive)}, tmp_path, tmp_path / "manifest.json", files=table)
    records = json.loads((tmp_path / "manifest.json").read_text())["files"]
    assert {r["md5"] for r in records} == {records[0]["md5"]}  # every record is backed by the one zip
    with zipfile.ZipFile(archive, "a") as handle:
        handle.writestr("notes.txt", b"changed")
    with pytest.raises(DataError, match="changed since the acquire step"):
        build_index(tmp_path / "manifest.json", tmp_path / "images", tmp_path / "masks")


def test_strict_checksums_refuse_image_folders_that_have_no_published_md5(ham, tmp_path):
    folder, table = ham
    tree = kaggle_tree(folder, tmp_path / "kaggle")  # its csv is byte-identical to the (tiny) published one
    with pytest.raises(DataError) as err:
        local(tmp_path, tree, table, require_published_checksums=True)
    message = str(err.value)
    assert "HAM10000_images_part_1 " not in message and f"{tree}/HAM10000_images_part_1" in message
    assert "no published md5" in message and "data.require_published_checksums: false" in message


def test_one_part_zipped_and_the_other_unzipped(ham, tmp_path):
    folder, table = ham
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(folder / "HAM10000_images_part_1.zip", mixed)
    shutil.copy(folder / "HAM10000_metadata.csv", mixed)
    with zipfile.ZipFile(folder / "HAM10000_images_part_2.zip") as archive:
        archive.extractall(mixed / "HAM10000_images_part_2")
    manifest, index = local(tmp_path, mixed, table)
    assert manifest["layout"] == "dataverse"
    assert [(r["role"], r["kind"]) for r in manifest["files"]] == [
        ("images", "zip"),
        ("images", "folder"),
        ("metadata", "csv"),
    ]
    assert len(index) == 14

"""The one extract-and-index path: every source, and every kind of bad input."""

from __future__ import annotations

import json
import shutil
import zipfile

import pandas as pd
import pyarrow.parquet as pq
import pytest
from data_helpers import file_table, jpeg_bytes, md5, tiny_ham, write_zip

from dpaat.data.acquire import acquire, file_record
from dpaat.data.errors import DataError
from dpaat.data.extract import INDEX_SCHEMA, build_index, write_index


@pytest.fixture(scope="module")
def ham(tmp_path_factory):
    """A tiny HAM10000 (14 images, two image zips of 8 + 6) and its file table."""
    folder = tmp_path_factory.mktemp("ham")
    tiny_ham(folder)
    return folder, file_table(folder)


def manifest_of(folder, tmp_path, *, images=None, metadata=None, masks=None):
    """A manifest listing the given files (default: the tiny HAM10000's), as acquire writes it."""
    images = images or [folder / "HAM10000_images_part_1.zip", folder / "HAM10000_images_part_2.zip"]
    metadata = metadata or folder / "HAM10000_metadata.csv"
    records = [file_record(p, "images") for p in images] + [file_record(metadata, "metadata")]
    records += [file_record(p, "masks") for p in masks or []]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"source": "test", "settings": {}, "files": records}))
    return path


def index_of(manifest, tmp_path, **options):
    return build_index(manifest, tmp_path / "images", tmp_path / "masks", **options)


def test_synthetic_source_goes_through_extraction(tmp_path):
    settings = {
        "source": "synthetic",
        "synthetic": {"seed": 1, "images": {"mel": 2, "nv": 3}, "images_per_archive": 5000},
    }
    manifest = acquire(settings, tmp_path / "raw", tmp_path / "raw" / "manifest.json")
    assert [r["path"] for r in manifest["files"]] == [
        "synthetic/HAM10000_images_part_1.zip",
        "synthetic/HAM10000_metadata.csv",
        "synthetic/HAM10000_segmentations_lesion_tschandl.zip",
    ]
    index = index_of(tmp_path / "raw" / "manifest.json", tmp_path)
    write_index(index, tmp_path / "index.parquet")
    assert pq.read_schema(tmp_path / "index.parquet").equals(INDEX_SCHEMA, check_metadata=False)
    assert len(index) == 5 and index["image_id"].is_monotonic_increasing
    for row in index.itertuples():
        assert row.image_path == str(tmp_path / "images" / f"{row.image_id}.jpg")
        assert row.mask_path == str(tmp_path / "masks" / f"{row.image_id}_segmentation.png")
    stored = tmp_path / "images" / f"{index['image_id'][0]}.jpg"
    with zipfile.ZipFile(tmp_path / "raw/synthetic/HAM10000_images_part_1.zip") as archive:
        assert stored.read_bytes() == archive.read(f"{index['image_id'][0]}.jpg")


def test_index_joins_metadata(ham, tmp_path):
    folder, _ = ham
    index = index_of(
        manifest_of(folder, tmp_path, masks=[folder / "HAM10000_segmentations_lesion_tschandl.zip"]), tmp_path
    )
    metadata = pd.read_csv(folder / "HAM10000_metadata.csv").sort_values("image_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(index[list(metadata.columns)], metadata, check_dtype=False)
    assert index["mask_path"].notna().all()


def test_local_source_with_the_zips(ham, tmp_path):
    folder, table = ham
    local = tmp_path / "downloads"
    shutil.copytree(folder, local)
    manifest = acquire(
        {"source": "local", "local_dir": str(local)}, tmp_path / "raw", tmp_path / "raw" / "manifest.json", files=table
    )
    kinds = [(r["role"], r["kind"], r["md5_published"]) for r in manifest["files"]]
    assert kinds == [
        ("images", "zip", True),
        ("images", "zip", True),
        ("metadata", "csv", True),
        ("masks", "zip", False),
    ]
    assert manifest["files"][0]["path"] == str(local / "HAM10000_images_part_1.zip")  # used in place
    index = index_of(tmp_path / "raw" / "manifest.json", tmp_path)
    assert len(index) == 14 and index["mask_path"].notna().all()


def test_local_source_with_unzipped_images_in_subfolders(ham, tmp_path):
    folder, table = ham
    local = tmp_path / "downloads"
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        with zipfile.ZipFile(folder / f"{part}.zip") as archive:
            archive.extractall(local / "unzipped" / part)
    with zipfile.ZipFile(folder / "HAM10000_segmentations_lesion_tschandl.zip") as archive:
        archive.extractall(local)
    shutil.copy(folder / "HAM10000_metadata.csv", local)
    manifest = acquire(
        {"source": "local", "local_dir": str(local)}, tmp_path / "raw", tmp_path / "raw" / "manifest.json", files=table
    )
    assert [(r["role"], r["kind"]) for r in manifest["files"]] == [
        ("images", "folder"),
        ("images", "folder"),
        ("metadata", "csv"),
        ("masks", "folder"),
    ]
    index = index_of(tmp_path / "raw" / "manifest.json", tmp_path)
    assert len(index) == 14 and index["mask_path"].notna().all()


def _repacked(folder, tmp_path):
    """A copy of the tiny HAM10000 whose metadata csv is not byte-identical to the published one."""
    local = tmp_path / "downloads"
    shutil.copytree(folder, local)
    with (local / "HAM10000_metadata.csv").open("a") as fh:
        fh.write("\n")
    return local, md5((local / "HAM10000_metadata.csv").read_bytes())


def test_local_file_that_is_not_the_published_one_is_accepted_and_recorded(ham, tmp_path, caplog):
    folder, table = ham
    local, computed = _repacked(folder, tmp_path)
    with caplog.at_level("WARNING"):
        manifest = acquire(
            {"source": "local", "local_dir": str(local)}, tmp_path, tmp_path / "manifest.json", files=table
        )
    record = [r for r in manifest["files"] if r["role"] == "metadata"][0]
    assert (record["md5"], record["published_md5"], record["md5_published"]) == (computed, table[2].md5, False)
    assert "not byte-identical to the Dataverse release" in caplog.text and "proceeding" in caplog.text
    assert "damaged" not in caplog.text
    assert len(index_of(tmp_path / "manifest.json", tmp_path)) == 14


def test_strict_checksums_refuse_a_file_that_is_not_the_published_one(ham, tmp_path):
    folder, table = ham
    local, computed = _repacked(folder, tmp_path)
    settings = {"source": "local", "local_dir": str(local), "require_published_checksums": True}
    with pytest.raises(DataError) as err:
        acquire(settings, tmp_path, tmp_path / "manifest.json", files=table)
    message = str(err.value)
    assert "HAM10000_metadata.csv" in message and table[2].md5 in message and computed in message
    assert "data.require_published_checksums" in message and "damaged" not in message
    assert not (tmp_path / "manifest.json").exists()


def test_strict_checksums_accept_the_published_files(ham, tmp_path):
    folder, table = ham
    settings = {"source": "local", "local_dir": str(folder), "require_published_checksums": True}
    manifest = acquire(settings, tmp_path, tmp_path / "manifest.json", files=table)
    assert [r["md5_published"] for r in manifest["files"] if r["role"] != "masks"] == [True, True, True]


def test_local_source_lists_what_is_missing_and_what_was_found(ham, tmp_path):
    folder, table = ham
    shutil.copy(folder / "HAM10000_images_part_1.zip", tmp_path)
    (tmp_path / "HAM10000_metadata.tab").write_text("tab export")
    with pytest.raises(DataError) as err:
        acquire({"source": "local", "local_dir": str(tmp_path)}, tmp_path / "raw", tmp_path / "raw.json", files=table)
    message = str(err.value)
    assert "lacks HAM10000_images_part_2.zip" in message and "HAM10000_metadata.csv" in message
    assert "?format=original" in message and "Found: HAM10000_images_part_1.zip, HAM10000_metadata.tab" in message


def test_local_source_needs_local_dir(tmp_path):
    with pytest.raises(DataError, match="local_dir is not set"):
        acquire({"source": "local", "local_dir": None}, tmp_path, tmp_path / "manifest.json")


def test_zip_slip_is_refused_and_nothing_is_written(ham, tmp_path):
    folder, _ = ham
    evil = write_zip(
        tmp_path / "HAM10000_images_part_1.zip",
        {"ISIC_0024306.jpg": jpeg_bytes(), "../../ISIC_0024307.jpg": jpeg_bytes()},
    )
    manifest = manifest_of(folder, tmp_path, images=[evil])
    with pytest.raises(DataError, match=r"'\.\./\.\./ISIC_0024307\.jpg'.*zip-slip"):
        index_of(manifest, tmp_path / "out")
    assert not (tmp_path / "out" / "images" / "ISIC_0024306.jpg").exists()
    assert not list(tmp_path.parent.glob("ISIC_*")) and not list(tmp_path.glob("ISIC_*"))


@pytest.mark.parametrize("name", ["/tmp/ISIC_0024306.jpg", "C:\\\\ISIC_0024306.jpg", "a/../../ISIC_0024306.jpg"])
def test_other_escaping_member_paths_are_refused(ham, tmp_path, name):
    folder, _ = ham
    evil = write_zip(tmp_path / "evil.zip", {name: jpeg_bytes()})
    with pytest.raises(DataError, match="zip-slip"):
        index_of(manifest_of(folder, tmp_path, images=[evil]), tmp_path)


def _with_member(folder, tmp_path, image_id, data):
    """Part 1 of the tiny HAM10000 with one member's bytes replaced."""
    with zipfile.ZipFile(folder / "HAM10000_images_part_1.zip") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members[f"{image_id}.jpg"] = data
    return write_zip(tmp_path / "HAM10000_images_part_1.zip", members)


def _first_id(folder):
    with zipfile.ZipFile(folder / "HAM10000_images_part_1.zip") as archive:
        return archive.namelist()[0].removesuffix(".jpg")


def test_corrupt_jpeg_member_is_named(ham, tmp_path):
    folder, _ = ham
    image_id = _first_id(folder)
    corrupt = _with_member(folder, tmp_path, image_id, jpeg_bytes()[:200])
    manifest = manifest_of(folder, tmp_path, images=[corrupt, folder / "HAM10000_images_part_2.zip"])
    with pytest.raises(
        DataError, match=rf"HAM10000_images_part_1\.zip:{image_id}\.jpg \(cannot decode.*max_unreadable allows 0"
    ):
        index_of(manifest, tmp_path)


def test_non_jpeg_member_is_named(ham, tmp_path):
    folder, _ = ham
    image_id = _first_id(folder)
    text = _with_member(folder, tmp_path, image_id, b"<html>not found</html>")
    manifest = manifest_of(folder, tmp_path, images=[text, folder / "HAM10000_images_part_2.zip"])
    with pytest.raises(DataError, match=rf"{image_id}\.jpg \(not a JPEG file \(starts with b'<html>no'\)\)"):
        index_of(manifest, tmp_path)


def test_member_failing_its_crc_is_named(ham, tmp_path):
    folder, _ = ham
    image_id = _first_id(folder)
    data = jpeg_bytes((10, 20, 30))
    path = _with_member(folder, tmp_path, image_id, data)
    raw = bytearray(path.read_bytes())
    at = raw.find(data)
    raw[at + 100] ^= 0xFF  # flip a byte inside the stored member: the CRC no longer matches
    path.write_bytes(bytes(raw))
    manifest = manifest_of(folder, tmp_path, images=[path, folder / "HAM10000_images_part_2.zip"])
    with pytest.raises(DataError, match=rf"{image_id}\.jpg \(damaged zip member: Bad CRC-32"):
        index_of(manifest, tmp_path)


def test_unreadable_images_are_skipped_and_counted_when_allowed(ham, tmp_path, caplog):
    folder, _ = ham
    image_id = _first_id(folder)
    corrupt = _with_member(folder, tmp_path, image_id, b"garbage")
    manifest = manifest_of(folder, tmp_path, images=[corrupt, folder / "HAM10000_images_part_2.zip"])
    with caplog.at_level("WARNING"):
        index = index_of(manifest, tmp_path, max_unreadable=1)
    assert len(index) == 13 and image_id not in set(index["image_id"])
    assert not (tmp_path / "images" / f"{image_id}.jpg").exists()
    assert "skipped 1 unreadable files (data.max_unreadable = 1)" in caplog.text


def test_metadata_missing_a_column_names_it(ham, tmp_path):
    folder, _ = ham
    metadata = pd.read_csv(folder / "HAM10000_metadata.csv").drop(columns=["dx_type"])
    metadata.to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    with pytest.raises(DataError, match=r"lacks the column\(s\) \['dx_type'\]"):
        index_of(manifest_of(folder, tmp_path, metadata=tmp_path / "HAM10000_metadata.csv"), tmp_path)


def test_extra_metadata_columns_are_dropped(ham, tmp_path):
    folder, _ = ham
    metadata = pd.read_csv(folder / "HAM10000_metadata.csv").assign(dataset="vidir_modern")
    metadata.to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    index = index_of(manifest_of(folder, tmp_path, metadata=tmp_path / "HAM10000_metadata.csv"), tmp_path)
    assert list(index.columns) == INDEX_SCHEMA.names


def test_image_ids_without_image_are_an_error(ham, tmp_path):
    folder, _ = ham
    with zipfile.ZipFile(folder / "HAM10000_images_part_2.zip") as archive:
        absent = sorted(name.removesuffix(".jpg") for name in archive.namelist())
    with pytest.raises(DataError) as err:
        index_of(manifest_of(folder, tmp_path, images=[folder / "HAM10000_images_part_1.zip"]), tmp_path)
    assert f"{len(absent)} image ids in HAM10000_metadata.csv have no image, e.g. {absent[:5]}" in str(err.value)


def test_file_changed_since_acquire_is_caught(ham, tmp_path):
    folder, _ = ham
    shutil.copytree(folder, tmp_path / "copy")
    manifest = manifest_of(tmp_path / "copy", tmp_path)
    with (tmp_path / "copy" / "HAM10000_metadata.csv").open("a") as fh:
        fh.write("\n")
    with pytest.raises(DataError, match="changed since the acquire step"):
        index_of(manifest, tmp_path)

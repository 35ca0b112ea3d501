"""The real download code against a local HTTP server: resume, md5 checks, HTTP errors."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
from data_helpers import dataverse_files, file_table, isic_downloads, md5, serving, tiny_ham

from dpaat.data.acquire import acquire, download_files
from dpaat.data.download import download, partial_path
from dpaat.data.errors import DataError
from dpaat.data.extract import METADATA_KEY, build_index
from dpaat.data.isic2018 import BASE_URL, ISIC2018_FILES

FAST = {"backoff": 0.0, "progress": False, "timeout": 5.0}


@pytest.fixture(scope="module")
def ham(tmp_path_factory):
    """A tiny HAM10000 and its file table (real names and ids, the tiny files' sizes and md5s)."""
    folder = tmp_path_factory.mktemp("served")
    tiny_ham(folder)
    return folder, file_table(folder)


def test_resumes_after_a_cut_connection_and_verifies(ham, tmp_path):
    folder, table = ham
    part1 = table[0]
    body = (folder / part1.name).read_bytes()
    with serving(dataverse_files(folder)) as server:
        server.cut_once[f"/datafile/{part1.datafile_id}"] = len(body) // 3
        got = download(part1.url(server.base_url), tmp_path / part1.name, md5=part1.md5, size=part1.size, **FAST)
    assert got == md5(body) == part1.md5
    assert (tmp_path / part1.name).read_bytes() == body
    assert not partial_path(tmp_path / part1.name).exists()
    # The second request continued where the cut left off.
    assert server.requests == [
        (f"/datafile/{part1.datafile_id}", None),
        (f"/datafile/{part1.datafile_id}", f"bytes={len(body) // 3}-"),
    ]


def test_restarts_when_the_server_ignores_range(ham, tmp_path):
    folder, table = ham
    part1 = table[0]
    body = (folder / part1.name).read_bytes()
    with serving(dataverse_files(folder), ranges=False) as server:
        server.cut_once[f"/datafile/{part1.datafile_id}"] = 100
        download(part1.url(server.base_url), tmp_path / part1.name, md5=part1.md5, **FAST)
    assert (tmp_path / part1.name).read_bytes() == body


def test_md5_mismatch_names_the_file_and_both_checksums_and_leaves_nothing(ham, tmp_path):
    folder, table = ham
    wrong = replace(table[0], md5="0" * 32)
    with serving(dataverse_files(folder)) as server:
        with pytest.raises(DataError) as err:
            download_files([wrong], server.base_url, tmp_path, **FAST)
    message = str(err.value)
    assert wrong.name in message and "0" * 32 in message and table[0].md5 in message
    assert list(tmp_path.iterdir()) == []  # neither the file nor a partial a rerun could trust or resume


def test_size_announced_by_the_server_must_match(ham, tmp_path):
    folder, table = ham
    wrong = replace(table[2], size=table[2].size + 1)
    with serving(dataverse_files(folder)) as server, pytest.raises(DataError, match="expected"):
        download_files([wrong], server.base_url, tmp_path, **FAST)
    assert not (tmp_path / wrong.name).exists()


def test_http_404_is_a_clear_error(ham, tmp_path):
    folder, table = ham
    with serving({}) as server, pytest.raises(DataError, match=r"HTTP 404.*HAM10000_images_part_1\.zip.*base_url"):
        download_files([table[0]], server.base_url, tmp_path, **FAST)
    assert len(server.requests) == 1  # a missing file is not retried


def test_http_500_is_retried_then_a_clear_error(ham, tmp_path):
    folder, table = ham
    with serving({}) as server:
        server.status[f"/datafile/{table[0].datafile_id}"] = 500
        with pytest.raises(DataError, match=r"HAM10000_images_part_1\.zip.*failed 3 times.*HTTP 500"):
            download_files([table[0]], server.base_url, tmp_path, retries=2, **FAST)
    assert len(server.requests) == 3


def test_verified_file_in_place_is_not_downloaded_again(ham, tmp_path):
    folder, table = ham
    (tmp_path / table[2].name).write_bytes((folder / table[2].name).read_bytes())
    with serving({}) as server:
        download_files([table[2]], server.base_url, tmp_path, **FAST)
    assert server.requests == []


def test_ham10000_source_downloads_with_format_original_and_indexes(ham, tmp_path):
    folder, table = ham
    with serving(dataverse_files(folder)) as server:
        settings = {
            "source": "ham10000",
            "base_url": server.base_url,
            "download_masks": False,
            "masks_datafile_id": None,
        }
        manifest = acquire(settings, tmp_path / "raw", tmp_path / "raw" / "manifest.json", files=table, **FAST)
    paths = {path for path, _ in server.requests}
    assert paths == {"/datafile/3172585", "/datafile/3172584", "/datafile/4338392?format=original"}
    assert manifest["source"] == "ham10000" and manifest["settings"] == settings
    assert [(r["path"], r["md5"], r["md5_published"]) for r in manifest["files"]] == [
        (f"ham10000/{f.name}", f.md5, True) for f in table
    ]
    index = build_index(tmp_path / "raw" / "manifest.json", tmp_path / "images", tmp_path / "masks")
    assert len(index) == 14 and index["mask_path"].isna().all()


def test_masks_are_downloaded_with_their_md5_recorded(ham, tmp_path):
    folder, table = ham
    masks = (folder / "HAM10000_segmentations_lesion_tschandl.zip").read_bytes()
    with serving({**dataverse_files(folder), "/datafile/99": masks}) as server:
        settings = {"source": "ham10000", "base_url": server.base_url, "download_masks": True, "masks_datafile_id": 99}
        manifest = acquire(settings, tmp_path, tmp_path / "manifest.json", files=table, **FAST)
    record = manifest["files"][-1]
    assert (record["role"], record["md5"], record["md5_published"]) == ("masks", md5(masks), False)


def test_masks_without_a_datafile_id_is_a_clear_error(tmp_path):
    settings = {
        "source": "ham10000",
        "base_url": "http://127.0.0.1:9/",
        "download_masks": True,
        "masks_datafile_id": None,
    }
    with pytest.raises(DataError, match="masks_datafile_id"):
        acquire(settings, tmp_path, tmp_path / "manifest.json")


def test_truncated_zip_fails_at_extraction(ham, tmp_path):
    folder, table = ham
    truncated = (folder / table[0].name).read_bytes()[:-2000]
    # A mirror without published checksums: the truncated archive gets through the download.
    unknown = [replace(f, size=None, md5=None) for f in table]
    served = {**dataverse_files(folder), f"/datafile/{table[0].datafile_id}": truncated}
    with serving(served) as server:
        settings = {
            "source": "ham10000",
            "base_url": server.base_url,
            "download_masks": False,
            "masks_datafile_id": None,
        }
        acquire(settings, tmp_path, tmp_path / "manifest.json", files=unknown, **FAST)
    with pytest.raises(DataError, match=r"HAM10000_images_part_1\.zip is not a readable zip archive.*truncated"):
        build_index(tmp_path / "manifest.json", tmp_path / "images", tmp_path / "masks")


def test_isic2018_urls_are_the_challenge_buckets():
    assert [f.url(BASE_URL) for f in ISIC2018_FILES] == [
        "https://isic-challenge-data.s3.amazonaws.com/2018/ISIC2018_Task3_Training_Input.zip",
        "https://isic-challenge-data.s3.amazonaws.com/2018/ISIC2018_Task3_Training_GroundTruth.zip",
        "https://isic-challenge-data.s3.amazonaws.com/2018/ISIC2018_Task3_Training_LesionGroupings.csv",
    ]


def test_isic2018_source_downloads_with_resume_records_md5s_and_indexes(ham, tmp_path):
    folder, _ = ham
    files = isic_downloads(folder)
    inputs = "/2018/ISIC2018_Task3_Training_Input.zip"
    with serving({f"/2018/{name}": data for name, data in files.items()}) as server:
        server.cut_once[inputs] = len(files["ISIC2018_Task3_Training_Input.zip"]) // 2
        settings = {"source": "isic2018", "isic_base_url": f"http://127.0.0.1:{server.server_address[1]}/2018/"}
        manifest = acquire(settings, tmp_path / "raw", tmp_path / "raw" / "manifest.json", **FAST)
    half = len(files["ISIC2018_Task3_Training_Input.zip"]) // 2
    assert [r for r in server.requests if r[0] == inputs] == [(inputs, None), (inputs, f"bytes={half}-")]
    assert manifest["layout"] == "isic2018" and manifest["settings"] == settings
    stored = {r["path"]: r for r in manifest["files"]}
    for name, data in files.items():
        record = stored[f"isic2018/{name}"]
        # No md5 is published for these files: the computed one is recorded.
        assert (record["md5"], record["published_md5"], record["md5_published"]) == (md5(data), None, False)
    assert not list((tmp_path / "raw" / "isic2018").glob("*.part"))
    index = build_index(tmp_path / "raw" / "manifest.json", tmp_path / "images", tmp_path / "masks")
    metadata = pd.read_csv(folder / "HAM10000_metadata.csv").sort_values("image_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(index[["image_id", "lesion_id", "dx"]], metadata[["image_id", "lesion_id", "dx"]])
    assert index.attrs[METADATA_KEY]["lesion_grouping"] == "lesion_id from ISIC2018_Task3_Training_LesionGroupings.csv"
    assert index["source"].str.startswith("ISIC2018_Task3_Training_Input.zip:ISIC2018_Task3_Training_Input/").all()

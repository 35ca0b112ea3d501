"""MedMNIST .npz files: INFO's URL and MD5, served locally, through acquire, index and the official split."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from data_helpers import md5, medmnist_info, medmnist_npz, serving
from PIL import Image

from dpaat.data.acquire import acquire
from dpaat.data.classes import dataset_classes
from dpaat.data.errors import DataError
from dpaat.data.extract import build_index
from dpaat.data.medmnist import dataset_info, info_table
from dpaat.data.split import make_splits, predefined_description

LABELS = ["basophil", "eosinophil", "lymphocyte", "monocyte"]


@pytest.fixture(scope="module")
def npz():
    return medmnist_npz(classes=4)


def settings(**extra):
    return {"source": "medmnist", "medmnist": {"flag": "bloodmnist", "size": 28}, **extra}


def acquired(server, data, tmp_path, digest=None, **options):
    info = medmnist_info("bloodmnist", f"{server.base_url}bloodmnist.npz?download=1", digest or md5(data), LABELS)
    manifest = tmp_path / "raw" / "manifest.json"
    acquire(settings(), manifest.parent, manifest, medmnist_info=info, backoff=0.01, progress=False, **options)
    return manifest


def test_a_served_npz_goes_through_acquire_and_index_to_its_official_split(npz, tmp_path):
    with serving({"/datafile/bloodmnist.npz": npz}) as server:
        manifest = acquired(server, npz, tmp_path)
    assert (tmp_path / "raw/medmnist/bloodmnist.npz").read_bytes() == npz
    index = build_index(manifest, tmp_path / "images", tmp_path / "masks")
    arrays = np.load(tmp_path / "raw/medmnist/bloodmnist.npz")
    assert index["predefined_split"].value_counts().to_dict() == {"train": 40, "test": 16, "val": 12}
    row = index.set_index("image_id").loc["val_7"]
    assert row["dx"] == LABELS[int(arrays["val_labels"][7, 0])] and row["source"] == "bloodmnist.npz:val_images[7]"
    assert (np.asarray(Image.open(row["image_path"])) == arrays["val_images"][7]).all()  # lossless
    splits = make_splits(index, LABELS, 10, 4, 0.2)
    part = splits["image_id"].str.rsplit("_", n=1).str[0]
    assert (part == splits["split"]).all()  # test from test, val from val, train from train
    assert splits["split"].value_counts().to_dict() == {"train": 32, "test": 16, "val": 8}
    assert "val its val part" in predefined_description(index, LABELS)
    anew = make_splits(index, LABELS, 10, 4, 0.2, predefined=False)
    assert (anew["image_id"].str.rsplit("_", n=1).str[0] != anew["split"]).any()


def test_a_wrong_md5_is_refused_naming_both_digests(npz, tmp_path):
    wrong = "0" * 32
    with serving({"/datafile/bloodmnist.npz": npz}) as server, pytest.raises(DataError) as err:
        acquired(server, npz, tmp_path, digest=wrong)
    assert wrong in str(err.value) and md5(npz) in str(err.value)
    assert not list((tmp_path / "raw/medmnist").glob("bloodmnist.npz*"))  # nothing a rerun would trust


def test_an_interrupted_transfer_resumes_and_is_verified(npz, tmp_path):
    with serving({"/datafile/bloodmnist.npz": npz}) as server:
        server.cut_once["/datafile/bloodmnist.npz"] = len(npz) // 3
        acquired(server, npz, tmp_path)
        ranges = [r for _, r in server.requests]
    assert ranges == [None, f"bytes={len(npz) // 3}-"]
    assert (tmp_path / "raw/medmnist/bloodmnist.npz").read_bytes() == npz


def test_the_package_info_table_gives_urls_md5s_and_class_names():
    info = info_table()
    path = dataset_info("pathmnist", 224, info)
    assert path["url"] == info["pathmnist"]["url_224"] and path["md5"] == info["pathmnist"]["MD5_224"]
    assert path["name"] == "pathmnist_224.npz" and len(path["classes"]) == 9 and path["classes"][0] == "adipose"
    assert dataset_classes({"source": "medmnist", "classes": None, "medmnist": {"flag": "pathmnist", "size": 224}}) == (
        path["classes"]
    )
    with pytest.raises(DataError, match="chestmnist is a multi-label"):
        dataset_info("chestmnist", 28, info)
    with pytest.raises(DataError, match="organmnist3d is a 3D"):
        dataset_info("organmnist3d", 28, info)
    with pytest.raises(DataError, match="not a MedMNIST dataset"):
        dataset_info("cifar10", 28, info)


def test_a_local_npz_is_read_and_a_foreign_one_refused_when_checksums_are_required(npz, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/bloodmnist.npz").write_bytes(npz)
    info = medmnist_info("bloodmnist", "http://unused/bloodmnist.npz", md5(npz), LABELS)
    manifest = tmp_path / "raw/manifest.json"
    acquire(settings(local_dir=str(tmp_path / "mine")), manifest.parent, manifest, medmnist_info=info)
    assert len(build_index(manifest, tmp_path / "images", tmp_path / "masks")) == 68
    other = medmnist_info("bloodmnist", "http://unused/bloodmnist.npz", "f" * 32, LABELS)
    strict = settings(local_dir=str(tmp_path / "mine"), require_published_checksums=True)
    with pytest.raises(DataError, match=f"md5 {md5(npz)}, but MedMNIST publishes {'f' * 32}"):
        acquire(strict, manifest.parent, manifest, medmnist_info=other)


def test_planning_reads_the_info_table_without_importing_torch_or_the_medmnist_datasets():
    program = (
        "import sys\nfrom dpaat.data.classes import dataset_classes\n"
        "data = {'source': 'medmnist', 'classes': None, 'medmnist': {'flag': 'pathmnist', 'size': 224}}\n"
        "classes = dataset_classes(data)\n"
        "print(len(classes), 'torch' in sys.modules, 'medmnist.dataset' in sys.modules)"
    )
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    run = subprocess.run([sys.executable, "-c", program], cwd=scripts, capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["9", "False", "False"]

"""The synthetic HAM10000 twin: format, lesion structure, determinism, class looks."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pytest
from data_helpers import TINY, md5, tiny_ham
from PIL import Image

from dpaat.data.errors import DataError
from dpaat.data.ham10000 import DX_TYPES, FIRST_IMAGE_NUMBER, IMAGE_SIZE, METADATA_COLUMNS
from dpaat.data.synthetic import generate, plan


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    return folder, tiny_ham(folder, {"mel": 20, "bkl": 20, "nv": 30}, per_archive=40)


def test_writes_the_ham10000_files(tiny):
    folder, paths = tiny
    assert [p.name for p in paths] == [
        "HAM10000_images_part_1.zip",
        "HAM10000_images_part_2.zip",
        "HAM10000_metadata.csv",
        "HAM10000_segmentations_lesion_tschandl.zip",
    ]
    metadata = pd.read_csv(folder / "HAM10000_metadata.csv")
    assert tuple(metadata.columns) == METADATA_COLUMNS
    ids = sorted(metadata["image_id"])
    assert ids == [f"ISIC_{FIRST_IMAGE_NUMBER + i:07d}" for i in range(70)]
    assert metadata["lesion_id"].str.fullmatch(r"HAM_\d{7}").all()
    assert metadata["dx"].value_counts().to_dict() == {"nv": 30, "mel": 20, "bkl": 20}
    assert set(metadata["dx_type"]) <= set(DX_TYPES)
    assert set(metadata["sex"]) <= {"male", "female", "unknown"}
    with zipfile.ZipFile(paths[0]) as part1, zipfile.ZipFile(paths[1]) as part2:
        members = part1.namelist() + part2.namelist()
        assert len(part1.namelist()) == 40  # images_per_archive, in image id order
        assert members == [f"{i}.jpg" for i in ids]
        image = Image.open(io.BytesIO(part1.read(members[0])))
        assert (image.format, image.size, image.mode) == ("JPEG", TINY, "RGB")
    with zipfile.ZipFile(paths[3]) as masks:
        assert sorted(masks.namelist()) == [f"HAM10000_segmentations_lesion_tschandl/{i}_segmentation.png" for i in ids]
        mask = Image.open(io.BytesIO(masks.read(masks.namelist()[0])))
        assert (mask.format, mask.size, mask.mode) == ("PNG", TINY, "L")
        assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_lesions_have_several_views_sharing_their_metadata(tiny):
    folder, _ = tiny
    metadata = pd.read_csv(folder / "HAM10000_metadata.csv")
    per_lesion = metadata.groupby("lesion_id")
    assert per_lesion.size().max() > 1 and (per_lesion.size() == 1).any()
    # Every view of a lesion carries the lesion's diagnosis and patient data.
    shared = ["dx", "dx_type", "age", "sex", "localization"]
    assert (per_lesion[shared].nunique(dropna=False) == 1).all().all()


def test_images_per_lesion_mimic_ham10000():
    # A fifth of HAM10000's class counts (nv 6705, mel 1113, bkl 1099, bcc 514, akiec 327, vasc 142, df 115).
    counts = {"nv": 1341, "mel": 223, "bkl": 220, "bcc": 103, "akiec": 65, "vasc": 28, "df": 23}
    metadata, lesions, views = plan(counts, seed=0)
    assert len(metadata) == len(lesions) == len(views) == sum(counts.values())
    assert metadata["dx"].value_counts().to_dict() == counts
    # HAM10000 has 10015 images of 7470 lesions.
    assert len(metadata) / metadata["lesion_id"].nunique() == pytest.approx(10015 / 7470, rel=0.04)


def test_default_size_is_ham10000s(tmp_path):
    part1 = generate(tmp_path, {"nv": 1})[0]
    with zipfile.ZipFile(part1) as archive:
        assert Image.open(io.BytesIO(archive.read(archive.namelist()[0]))).size == IMAGE_SIZE == (600, 450)


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    images = {"mel": 3, "nv": 3}
    first = generate(tmp_path / "a", images, seed=7, size=TINY)
    again = generate(tmp_path / "b", images, seed=7, size=TINY)
    other = generate(tmp_path / "c", images, seed=8, size=TINY)
    assert [md5(p.read_bytes()) for p in first] == [md5(p.read_bytes()) for p in again]
    assert md5(first[0].read_bytes()) != md5(other[0].read_bytes())


def test_parallel_rendering_writes_the_same_bytes(tmp_path):
    images = {"mel": 20, "bkl": 20, "nv": 20}  # more images than one pool chunk
    serial = generate(tmp_path / "serial", images, seed=5, size=TINY, images_per_archive=25)
    parallel = generate(tmp_path / "parallel", images, seed=5, size=TINY, images_per_archive=25, workers=2)
    assert [p.name for p in serial] == [p.name for p in parallel]
    assert [md5(p.read_bytes()) for p in serial] == [md5(p.read_bytes()) for p in parallel]


def test_unknown_dx_code_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"unknown dx codes \['melanoma'\]"):
        generate(tmp_path, {"melanoma": 3})
    assert list(tmp_path.iterdir()) == []


def test_masks_cover_the_lesion_and_class_looks_differ(tmp_path):
    """The mask marks the (mostly darker) lesion; mel lesions are darker than nv, nv darker than bkl on average."""
    folder = tmp_path
    generate(folder, {"mel": 12, "bkl": 12, "nv": 12}, seed=3, size=(120, 90))
    metadata = pd.read_csv(folder / "HAM10000_metadata.csv").set_index("image_id")
    lesion_lightness = {dx: [] for dx in ("mel", "bkl", "nv")}
    darker = []
    with zipfile.ZipFile(folder / "HAM10000_images_part_1.zip") as images, zipfile.ZipFile(
        folder / "HAM10000_segmentations_lesion_tschandl.zip"
    ) as masks:
        for name in images.namelist():
            image_id = name.removesuffix(".jpg")
            grey = np.asarray(Image.open(io.BytesIO(images.read(name))).convert("L"), dtype=float)
            inside = (
                np.asarray(
                    Image.open(
                        io.BytesIO(masks.read(f"HAM10000_segmentations_lesion_tschandl/{image_id}_segmentation.png"))
                    )
                )
                > 0
            )
            assert 0.02 < inside.mean() < 0.9
            darker.append(grey[inside].mean() < grey[~inside].mean())
            lesion_lightness[metadata.loc[image_id, "dx"]].append(grey[inside].mean())
    # A light keratosis on dark skin can be lighter than its surroundings, but few are.
    assert np.mean(darker) > 0.8
    mel, nv, bkl = (np.mean(lesion_lightness[dx]) for dx in ("mel", "nv", "bkl"))
    assert mel < nv < bkl

"""Split caches: shapes, dtypes, labels, masks, resizing, loading; and how the stage scripts fail."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch
from data_helpers import file_table, tiny_ham
from PIL import Image

from dpaat.data import CachedSplit, DataError, load_cache
from dpaat.data.acquire import acquire
from dpaat.data.cache import build_cache, load_image, load_mask, write_cache
from dpaat.data.extract import build_index
from dpaat.data.split import make_splits
from dpaat.data.stage import run_stage

CLASSES = ["mel", "bkl", "nv"]


@pytest.fixture(scope="module")
def index_and_splits(tmp_path_factory):
    """Index and splits of a tiny synthetic HAM10000 (images 60x45), read as a local source."""
    root = tmp_path_factory.mktemp("cache")
    tiny_ham(root / "downloads", {"mel": 8, "bkl": 8, "nv": 8, "bcc": 2}, per_archive=16)
    acquire(
        {"source": "local", "local_dir": str(root / "downloads")},
        root,
        root / "manifest.json",
        files=file_table(root / "downloads"),
    )
    index = build_index(root / "manifest.json", root / "images", root / "masks")
    return index, make_splits(index, CLASSES, 6, 2, 0.34, seed=0)


def test_cache_shapes_dtypes_labels_and_masks(index_and_splits, tmp_path):
    index, splits = index_and_splits
    for split in ("train", "val", "test"):
        cache = build_cache(splits, index, split, 16, CLASSES)
        rows = splits[splits["split"] == split]
        n = len(rows)
        assert cache.images.shape == (n, 3, 16, 16) and cache.images.dtype == torch.uint8
        assert cache.labels.dtype == torch.int64 and cache.labels.tolist() == [CLASSES.index(dx) for dx in rows["dx"]]
        assert cache.image_ids == rows["image_id"].tolist() and cache.classes == CLASSES
        assert cache.masks.shape == (n, 16, 16) and cache.masks.dtype == torch.uint8
        assert set(cache.masks.unique().tolist()) == {0, 255}
        write_cache(cache, tmp_path / f"{split}_16px.pt")
        loaded = load_cache(tmp_path / f"{split}_16px.pt")
        assert isinstance(loaded, CachedSplit) and len(loaded) == n
        assert torch.equal(loaded.images, cache.images) and torch.equal(loaded.masks, cache.masks)
        assert loaded.image_ids == cache.image_ids and torch.equal(loaded.labels, cache.labels)


def test_cache_file_is_the_contracts_plain_dict(index_and_splits, tmp_path):
    index, splits = index_and_splits
    write_cache(build_cache(splits, index, "test", 8, CLASSES), tmp_path / "c.pt")
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert sorted(raw) == ["classes", "image_ids", "images", "labels", "masks"]


def test_resize_matches_a_full_resolution_lanczos(index_and_splits):
    index, _ = index_and_splits
    path = index["image_path"].iloc[0]
    # Reference: decode at full size, then LANCZOS straight to 8x8 (no DCT-domain shortcut).
    reference = np.asarray(Image.open(path).convert("RGB").resize((8, 8), Image.Resampling.LANCZOS), dtype=float)
    ours = load_image(path, 8)
    assert ours.shape == (8, 8, 3) and ours.dtype == np.uint8
    assert np.abs(ours - reference).mean() < 3


def test_mask_resize_is_nearest_and_binary(tmp_path):
    mask = np.zeros((40, 60), np.uint8)
    mask[:, :30] = 255  # left half is lesion
    mask[0, 59] = 200  # a stray grey pixel that NEAREST does not sample
    Image.fromarray(mask, "L").save(tmp_path / "m.png")
    small = load_mask(tmp_path / "m.png", 4)
    assert small.tolist() == [[255, 255, 0, 0]] * 4


def ramp_image(path, width: int = 600, height: int = 450) -> None:
    """Red rises linearly with x, green with y: an output pixel's colour tells where it was sampled."""
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.round(np.arange(width) * 255 / (width - 1))[None, :]
    image[..., 1] = np.round(np.arange(height) * 255 / (height - 1))[:, None]
    Image.fromarray(image).save(path, quality=95)


@pytest.mark.parametrize(("suffix", "tolerance"), [(".png", 1.0), (".jpg", 2.0)])
@pytest.mark.parametrize("centre_crop", [False, True])
def test_centre_crop_keeps_x_75_to_525_of_a_600x450_image(tmp_path, suffix, tolerance, centre_crop):
    # Hand-worked: output column j samples source x = x0 + (j + 0.5) * w / S - 0.5, with the
    # crop x0 = 75, w = 450 (CenterCrop(450)); squashed x0 = 0, w = 600. Rows span all 450.
    # LANCZOS keeps a linear ramp linear, and its support never reaches the image edge here.
    ramp_image(tmp_path / f"ramp{suffix}")
    size = 32
    ours = load_image(tmp_path / f"ramp{suffix}", size, centre_crop).astype(float)
    centres = np.arange(size) + 0.5
    x0, w = (75, 450) if centre_crop else (0, 600)
    expected_red = (x0 + centres * w / size - 0.5) * 255 / 599
    expected_green = (centres * 450 / size - 0.5) * 255 / 449
    assert np.abs(ours[size // 2, :, 0] - expected_red).max() < tolerance
    assert np.abs(ours[:, size // 2, 1] - expected_green).max() < tolerance


def test_centre_crop_matches_torchvisions_centercrop_then_resize(tmp_path):
    from torchvision.transforms import v2

    ramp_image(tmp_path / "ramp.png")
    with Image.open(tmp_path / "ramp.png") as image:
        tensor = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
    reference = v2.Resize((32, 32), antialias=True)(v2.CenterCrop(450)(tensor)).permute(1, 2, 0).numpy()
    ours = load_image(tmp_path / "ramp.png", 32, centre_crop=True)
    # Bilinear-antialiased (torchvision) against LANCZOS (ours): equal on a ramp up to rounding.
    assert np.abs(ours.astype(float) - reference).max() <= 1


def test_mask_gets_the_images_centre_crop(tmp_path):
    mask = np.zeros((450, 600), np.uint8)
    mask[:, :150] = 255  # lesion in x < 150: a quarter of the squashed image, a sixth of the crop
    Image.fromarray(mask, "L").save(tmp_path / "m.png")
    # Column j is lesion iff its source centre is left of 150: squashed (j + 0.5) * 600/32 < 150
    # for j <= 7; cropped 75 + (j + 0.5) * 450/32 < 150 for j <= 4.
    assert (load_mask(tmp_path / "m.png", 32)[0] == 255).sum() == 8
    assert (load_mask(tmp_path / "m.png", 32, centre_crop=True)[0] == 255).sum() == 5


def test_cache_built_with_centre_crop_differs_from_the_squashed_one(index_and_splits):
    index, splits = index_and_splits
    cropped = build_cache(splits, index, "test", 8, CLASSES, centre_crop=True)
    squashed = build_cache(splits, index, "test", 8, CLASSES)
    assert cropped.images.shape == squashed.images.shape and not torch.equal(cropped.images, squashed.images)
    assert cropped.masks.shape == squashed.masks.shape


def test_partial_masks_cache_none(index_and_splits):
    index, splits = index_and_splits
    partial = index.assign(mask_path=index["mask_path"].where(index.index % 2 == 0, None))
    assert build_cache(splits, partial, "train", 8, CLASSES).masks is None


def test_splits_with_a_class_outside_data_classes(index_and_splits):
    index, splits = index_and_splits
    with pytest.raises(DataError, match=r"classes \['nv'\] that data.classes \['mel', 'bkl'\] lacks"):
        build_cache(splits, index, "train", 8, ["mel", "bkl"])


def test_malformed_cache_is_a_clear_error(tmp_path):
    torch.save(
        {
            "images": torch.zeros(2, 3, 4, 4),
            "labels": torch.zeros(2, dtype=torch.int64),
            "image_ids": ["a", "b"],
            "classes": ["mel"],
            "masks": None,
        },
        tmp_path / "float.pt",
    )
    with pytest.raises(DataError, match=r"malformed entries \(images torch.float32"):
        load_cache(tmp_path / "float.pt")
    torch.save({"images": torch.zeros(2, 3, 4, 4, dtype=torch.uint8)}, tmp_path / "partial.pt")
    with pytest.raises(DataError, match="is not a data cache"):
        load_cache(tmp_path / "partial.pt")
    with pytest.raises(DataError, match="no data cache at"):
        load_cache(tmp_path / "absent.pt")


def test_stage_turns_a_data_error_into_one_logged_line(tmp_path, capsys, monkeypatch):
    # run_stage configures process-wide logging and the excepthook: undo that after the test.
    monkeypatch.setattr(logging.root, "handlers", list(logging.root.handlers))
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)

    def bad() -> None:
        raise DataError("class mel has 3 images, needs 5")

    with pytest.raises(SystemExit) as exit_:
        run_stage(tmp_path / "stage.log", bad)
    assert exit_.value.code == 1
    assert "DataError: class mel has 3 images, needs 5" in (tmp_path / "stage.log").read_text()
    assert "Traceback" not in capsys.readouterr().err

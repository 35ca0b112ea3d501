"""Training augmentation: Margeloiu et al.'s transforms per image, seeded by (seed, epoch, batch) alone."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from dpaat.augment import BatchAugmentation, batch_seed, build_augmentation
from dpaat.settings import AugmentationSettings, training_section

# Margeloiu et al.'s transforms are the schema's defaults.
MARGELOIU = training_section("augmentation")
OFF = dict(brightness=0, contrast=0, saturation=0, horizontal_flip=False, vertical_flip=False, affine_degrees=0,
           rotation_degrees=0)  # fmt: skip


def config(**overrides) -> AugmentationSettings:
    return training_section("augmentation", **{**OFF, **overrides})


def asymmetric_batch(n: int, size: int = 8) -> torch.Tensor:
    """n copies of an image no flip maps to itself."""
    image = torch.arange(3 * size * size, dtype=torch.int64).reshape(3, size, size) % 251
    return image.to(torch.uint8).expand(n, -1, -1, -1).clone()


def test_same_seed_epoch_and_batch_give_the_same_batch_and_others_do_not():
    augment = BatchAugmentation(MARGELOIU)
    images = asymmetric_batch(6, 16)
    first = augment(images, seed=0, epoch=3, batch=2)
    assert first.dtype == torch.uint8 and first.shape == images.shape
    assert torch.equal(first, augment(images, seed=0, epoch=3, batch=2))
    for other in (
        {"seed": 1, "epoch": 3, "batch": 2},
        {"seed": 0, "epoch": 2, "batch": 3},
        {"seed": 0, "epoch": 3, "batch": 1},
    ):
        assert not torch.equal(first, augment(images, **other)), other


def test_seeds_do_not_collide_when_the_numbers_sum_alike():
    assert len({batch_seed(0, 1, 0), batch_seed(0, 0, 1), batch_seed(1, 0, 0)}) == 3


def test_the_global_rng_is_left_untouched():
    augment = BatchAugmentation(MARGELOIU)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    augment(asymmetric_batch(4), seed=0, epoch=0, batch=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_flips_are_drawn_per_image_with_probability_one_half():
    augment = BatchAugmentation(config(horizontal_flip=True, vertical_flip=True))
    images = asymmetric_batch(400)
    out = augment(images, seed=0, epoch=0, batch=0)
    x = images[0]
    candidates = {
        "none": x,
        "h": TF.horizontal_flip(x),
        "v": TF.vertical_flip(x),
        "hv": TF.vertical_flip(TF.horizontal_flip(x)),
    }
    kinds = [next(name for name, c in candidates.items() if torch.equal(image, c)) for image in out]
    counts = {name: kinds.count(name) for name in candidates}
    # Each of the four outcomes has p = 1/4: 100 expected of 400, sd 8.7; 5 sd bounds.
    assert all(56 < count < 144 for count in counts.values()), counts


def test_brightness_scales_each_image_by_one_factor_in_its_range():
    augment = BatchAugmentation(config(brightness=0.2))
    images = torch.full((50, 3, 4, 4), 100, dtype=torch.uint8)
    out = augment(images, seed=0, epoch=0, batch=0).float()
    # adjust_brightness multiplies by the factor and rounds: one value per image, in [80, 120].
    per_image = out.flatten(1)
    assert torch.equal(per_image.amax(1), per_image.amin(1))
    assert per_image[:, 0].min() >= 80 and per_image[:, 0].max() <= 120
    assert per_image[:, 0].unique().numel() > 10


@pytest.mark.parametrize("key", ["affine_degrees", "rotation_degrees"])
def test_rotations_keep_the_centre_and_fill_corners_black(key):
    augment = BatchAugmentation(config(**{key: 50}))
    images = torch.full((40, 3, 9, 9), 200, dtype=torch.uint8)
    out = augment(images, seed=0, epoch=0, batch=0)
    assert (out[:, :, 4, 4] == 200).all()
    assert (out[:, :, 0, 0] == 0).any() and (out == 200).any()


def test_off_builds_nothing_and_bad_values_are_named():
    assert build_augmentation(config(enabled=False)) is None
    with pytest.raises(ValueError, match="rotation_degrees must be >= 0"):
        config(rotation_degrees=-1)
    with pytest.raises(ValueError, match="needs a uint8"):
        BatchAugmentation(config(horizontal_flip=True))(torch.zeros(2, 3, 4, 4), seed=0, epoch=0, batch=0)


def torchvision_reference(images: torch.Tensor, params, *, two_resamplings: bool = False) -> torch.Tensor:
    """torchvision's own per-image functional ops for the draws `params` (ColorJitter order, flips, rotations)."""
    from torchvision.transforms import InterpolationMode

    jitter = {0: TF.adjust_brightness, 1: TF.adjust_contrast, 2: TF.adjust_saturation}
    out = []
    for i, image in enumerate(images):
        for op in params.order[i].tolist():
            image = jitter[op](image, float(params.factors[i, op]))
        if params.hflip[i]:
            image = TF.horizontal_flip(image)
        if params.vflip[i]:
            image = TF.vertical_flip(image)
        if two_resamplings:  # RandomAffine then RandomRotation, as the transforms do it
            image = TF.affine(
                image,
                angle=float(params.affine_angle[i]),
                translate=[0, 0],
                scale=1.0,
                shear=[0.0, 0.0],
                interpolation=InterpolationMode.NEAREST,
            )
            image = TF.rotate(image, float(params.rotation_angle[i]), InterpolationMode.NEAREST)
        else:  # the single rotation they compose to
            image = TF.rotate(image, float(params.angle[i]), InterpolationMode.NEAREST)
        out.append(image)
    return torch.stack(out)


@pytest.mark.parametrize("size", [(33, 33), (20, 28)])
def test_the_batch_equals_torchvisions_per_image_ops_for_the_same_draws(size):
    augment = BatchAugmentation(MARGELOIU)
    images = torch.randint(0, 256, (24, 3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    params = augment.draw(len(images), seed=0, epoch=1, batch=2)
    assert params.order.sort(dim=1).values.eq(torch.arange(3)).all(), "each image applies each jitter once"
    ours, reference = augment.apply(images, params), torchvision_reference(images, params)
    difference = (ours.int() - reference.int()).abs()
    # The same ops to float rounding: a nearest-neighbour tie may pick the neighbouring pixel.
    assert (difference > 0).float().mean() < 0.005, (difference > 0).float().mean()


def test_colour_jitter_alone_matches_torchvision_to_one_level():
    augment = BatchAugmentation(config(brightness=0.4, contrast=0.4, saturation=0.4))
    images = torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    params = augment.draw(len(images), seed=3, epoch=0, batch=0)
    assert params.factors.min() < 0.7 and params.factors.max() > 1.3
    difference = (augment.apply(images, params).int() - torchvision_reference(images, params).int()).abs()
    # torchvision's blend is one fused multiply-add; ours rounds in between, so a value on an integer may truncate down.
    assert difference.max() <= 1 and (difference > 0).float().mean() < 0.005


def test_one_resampling_is_close_to_the_transforms_two():
    augment = BatchAugmentation(config(affine_degrees=10, rotation_degrees=50))
    ramp = torch.linspace(0, 255, 64)
    smooth = ((ramp[:, None] + ramp[None, :]) / 2).to(torch.uint8).expand(8, 3, 64, 64).clone()
    params = augment.draw(len(smooth), seed=0, epoch=0, batch=0)
    ours = augment.apply(smooth, params).float()
    twice = torchvision_reference(smooth, params, two_resamplings=True).float()
    inside = (ours > 0) & (twice > 0)  # the black corners differ by a pixel's width along the edge
    assert inside.float().mean() > 0.5 and (ours - twice)[inside].abs().mean() < 3


def test_cpu_chunks_give_the_whole_batch_result():
    augment = BatchAugmentation(MARGELOIU)
    images = torch.randint(0, 256, (9, 3, 96, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    params = augment.draw(len(images), seed=0, epoch=0, batch=0)
    packed_whole = augment.apply(images, params)
    import dpaat.augment as module

    chunked = module._CPU_CHUNK_BYTES
    try:
        module._CPU_CHUNK_BYTES = 4 * images[0].numel() * 2  # two images a chunk
        assert torch.equal(augment.apply(images, params), packed_whole)
    finally:
        module._CPU_CHUNK_BYTES = chunked

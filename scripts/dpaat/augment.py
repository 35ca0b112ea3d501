"""Training augmentation of uint8 batches on the device: Margeloiu et al. (2020)'s transforms, batched.

The paper takes its data setup from Margeloiu et al. [26], whose HAM10000 training
transforms are, in order: ColorJitter(0.2, 0.2, 0.2, 0), RandomHorizontalFlip,
RandomVerticalFlip, RandomAffine(10), RandomRotation(50) (torchvision defaults:
p = 0.5 flips, nearest interpolation, black fill). Here the same operations run on the
already resized uint8 batch, on whatever device holds it, with one random draw per
image and no per-image Python loop: torchvision's per-image transforms build small
tensors on the device for every image, so on a GPU each batch would wait on ~200
host-to-device copies.

- The draws of a whole batch come at once from a CPU generator seeded from (training
  seed, epoch, batch index) and reach the device in one copy, so a batch's augmentation
  depends on nothing but those three numbers: runs are deterministic, a resumed run
  draws exactly what an uninterrupted one would, and the global RNG (dropout, random
  starts) is never touched.
- ColorJitter is batched arithmetic with torchvision's own formulas (each of brightness,
  contrast and saturation blends the image with black, its grey mean or its grey image,
  in a random order per image, truncated to uint8 after each step, as torchvision does).
- RandomAffine(10) and RandomRotation(50) are both rotations about the centre, so with
  the flips they compose into one sampling matrix per image, applied by a single
  `grid_sample` (nearest, zero fill) for the batch: one resampling where torchvision's
  pipeline does two (tests/test_augment.py checks the result against torchvision's
  functional ops for the same draws; benchmarks/bench_augmentation.py times it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dpaat.settings import AugmentationSettings

# torchvision's (ITU-R 601-2) grey weights, as in its rgb_to_grayscale.
_GREY = (0.2989, 0.587, 0.114)
# ColorJitter's operations; each image applies them in its own random order.
BRIGHTNESS, CONTRAST, SATURATION = 0, 1, 2
# The float working set of one CPU chunk (a few 224-px images): small enough to stay in the cache.
_CPU_CHUNK_BYTES = 5 << 19


@dataclass(frozen=True)
class AugmentParams:
    """One batch's draws (CPU tensors, one row per image).

    factors (N, 3): brightness, contrast and saturation factors (1 = off); order (N, 3):
    the jitter operations in the order each image applies them; hflip, vflip (N,) bool;
    affine_angle, rotation_angle (N,) degrees, as torchvision's F.affine and F.rotate take them.
    """

    factors: Tensor
    order: Tensor
    hflip: Tensor
    vflip: Tensor
    affine_angle: Tensor
    rotation_angle: Tensor

    @property
    def angle(self) -> Tensor:
        """The one rotation (F.rotate's convention) equal to F.affine(affine_angle) then F.rotate(rotation_angle)."""
        # torchvision's F.affine(angle=a) turns the other way from F.rotate(a).
        return self.rotation_angle - self.affine_angle


class BatchAugmentation:
    """Margeloiu's training transforms, one seeded draw per image, applied to a uint8 batch at once."""

    def __init__(self, config: AugmentationSettings) -> None:
        self.config = config
        self.jitter = (config.brightness, config.contrast, config.saturation)

    def draw(self, n: int, *, seed: int, epoch: int, batch: int) -> AugmentParams:
        """The draws for a batch of `n` images: all at once from a CPU generator seeded by (seed, epoch, batch)."""
        generator = torch.Generator().manual_seed(batch_seed(seed, epoch, batch))
        u = torch.rand((n, 10), generator=generator, dtype=torch.float64)
        # ColorJitter's ranges: [max(0, 1 - j), 1 + j].
        low = torch.tensor([max(0.0, 1.0 - j) for j in self.jitter], dtype=torch.float64)
        high = torch.tensor([1.0 + j for j in self.jitter], dtype=torch.float64)
        factors = torch.where(high > low, low + (high - low) * u[:, 0:3], torch.ones(()))
        c = self.config
        return AugmentParams(
            factors=factors,
            order=u[:, 3:6].argsort(dim=1),
            hflip=(u[:, 6] < 0.5) & c.horizontal_flip,
            vflip=(u[:, 7] < 0.5) & c.vertical_flip,
            affine_angle=(2 * u[:, 8] - 1) * c.affine_degrees,
            rotation_angle=(2 * u[:, 9] - 1) * c.rotation_degrees,
        )

    def apply(self, images: Tensor, params: AugmentParams) -> Tensor:
        """`images` (uint8 (N, 3, H, W), any device) augmented with the draws `params`."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"augmentation needs a uint8 (N, 3, S, S) batch, got {images.dtype} {tuple(images.shape)}")
        height, width = images.shape[-2:]
        # One host-to-device copy for all the per-image numbers of the batch.
        packed = torch.cat(
            [params.factors, 1 - params.factors, params.order.double(),
             sampling_matrices(params.angle, params.hflip, params.vflip, width, height)],
            dim=1,
        ).to(images.device, torch.float32, non_blocking=True)  # fmt: skip
        if images.device.type != "cpu":
            return self._apply(images, packed)
        # On the CPU a few images at a time: each chunk's dozen passes then stay in the cache (2x faster at 224 px).
        chunk = max(1, _CPU_CHUNK_BYTES // (4 * images[0].numel()))
        out = torch.empty_like(images)
        for start in range(0, len(images), chunk):
            out[start : start + chunk] = self._apply(images[start : start + chunk], packed[start : start + chunk])
        return out

    def _apply(self, images: Tensor, packed: Tensor) -> Tensor:
        """The augmentation of `images` with the packed per-image numbers of `apply`."""
        c = self.config
        if any(self.jitter):
            x = self._jitter(images, packed[:, 0:3], packed[:, 3:6], packed[:, 6:9].long())
        else:
            x = images.float()
        if c.affine_degrees or c.rotation_degrees:
            # The flips ride in the rotation's matrix: one resampling for all three.
            grid = _grid(packed[:, 9:15].view(-1, 2, 3), *images.shape[-2:])
            return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False).to(torch.uint8)
        out = x.to(torch.uint8)
        # Without a rotation the flips are index reversals; the matrices' signs say which images flip.
        if c.horizontal_flip:
            out = torch.where((packed[:, 9] < 0).view(-1, 1, 1, 1), out.flip(-1), out)
        if c.vertical_flip:
            out = torch.where((packed[:, 13] < 0).view(-1, 1, 1, 1), out.flip(-2), out)
        return out

    def _jitter(self, images: Tensor, factors: Tensor, complements: Tensor, order: Tensor) -> Tensor:
        """ColorJitter of a uint8 batch into an integer-valued float batch: each step is x·f + (1 − f)·target.

        The target is 0 (brightness), the image's grey mean (contrast) or its grey image
        (saturation), both from torchvision's floored grey; f = 1 leaves an image as it is.
        The first step reads the uint8 images and every later one works in place.
        """
        needs_grey = bool(self.jitter[CONTRAST] or self.jitter[SATURATION])
        x, grey = images, None
        for step in range(3):
            op = order[:, step : step + 1]  # (N, 1): the operation each image applies at this step
            factor = factors.gather(1, op).view(-1, 1, 1, 1)
            complement = complements.gather(1, op).view(-1, 1, 1, 1)
            if needs_grey:
                r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
                grey = torch.mul(r, _GREY[0]) if grey is None else torch.mul(r, _GREY[0], out=grey)
                grey.add_(g, alpha=_GREY[1]).add_(b, alpha=_GREY[2]).floor_()
                offset = complement * grey.mean(dim=(-3, -2, -1), keepdim=True) * (op == CONTRAST).view(-1, 1, 1, 1)
                target = grey.mul_(complement * (op == SATURATION).view(-1, 1, 1, 1)).add_(offset)
            else:
                target = torch.zeros((), device=x.device)
            x = torch.addcmul(target, x, factor) if step == 0 else torch.addcmul(target, x, factor, out=x)
            # torchvision clamps each step to [0, 255] and truncates it to uint8.
            x.clamp_(0, 255).floor_()
        return x

    def __call__(self, images: Tensor, *, seed: int, epoch: int, batch: int) -> Tensor:
        """The augmented copy of `images` (uint8 (N, 3, S, S), any device); the same numbers give the same output."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"augmentation needs a uint8 (N, 3, S, S) batch, got {images.dtype} {tuple(images.shape)}")
        return self.apply(images, self.draw(len(images), seed=seed, epoch=epoch, batch=batch))


def sampling_matrices(angle: Tensor, hflip: Tensor, vflip: Tensor, width: int, height: int) -> Tensor:
    """(N, 6) `affine_grid`-style matrices (align_corners=False) of flips, then F.rotate by `angle` degrees.

    F.rotate samples output pixel p (centred pixel coordinates) at R·p with
    R = [[cos, -sin], [sin, cos]]; a flip before it negates that x or y, so the image is
    sampled at Fl·R·p. Normalised coordinates are pixel coordinates over half the width
    and height.
    """
    radians = angle.double() * (math.pi / 180)
    cos, sin, zero = radians.cos(), radians.sin(), torch.zeros_like(radians)
    sx = 1 - 2 * hflip.double()
    sy = 1 - 2 * vflip.double()
    return torch.stack([sx * cos, -sx * sin * height / width, zero, sy * sin * width / height, sy * cos, zero], dim=1)


def _grid(theta: Tensor, height: int, width: int) -> Tensor:
    """F.affine_grid(theta, (N, C, height, width), align_corners=False) for translation-free theta, by broadcasting.

    The same sampling positions as affine_grid (to float rounding) at a tenth of its cost
    on the CPU, where affine_grid runs a batched matrix product over every pixel.
    """
    xs = (torch.arange(width, device=theta.device, dtype=theta.dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=theta.device, dtype=theta.dtype) * 2 + 1) / height - 1
    grid = torch.empty((len(theta), height, width, 2), device=theta.device, dtype=theta.dtype)
    for axis in range(2):
        torch.add(theta[:, axis, 0, None, None] * xs, theta[:, axis, 1, None, None] * ys[:, None], out=grid[..., axis])
    return grid


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """A 63-bit seed mixed from (seed, epoch, batch) by numpy's SeedSequence: no two triples collide by summing."""
    return int(np.random.SeedSequence([seed, epoch, batch]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def build_augmentation(config: AugmentationSettings) -> BatchAugmentation | None:
    """The batch augmentation `config` asks for, or None when it is off."""
    return BatchAugmentation(config) if config.enabled else None

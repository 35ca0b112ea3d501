"""Image corruptions as test conditions: MedMNIST-C's dermoscopy set (Di Salvo et al. 2024).

The definitions and severities are those of the `medmnistc` package (0.1.0, its
`dermamnist` registry): pixelate, JPEG, Gaussian, speckle, impulse and shot noise,
defocus, motion and zoom blur, brightness and contrast up and down, black corner and
characters, five severities each. `medmnistc` itself cannot be a dependency (it pins
medmnist 3.0.1 and scikit-image 0.23.2, and its motion blur needs ImageMagick through
Wand), so each corruption is restated here with the same library calls (Pillow, OpenCV,
SciPy, scikit-image) and ImageMagick's motion blur in NumPy; tests/test_corruptions.py
checks each against `medmnistc`'s own output on the same image, severity and seed.

Randomness: each (image, corruption, severity) draws from its own generators seeded by
`image_seed` (a hash of the set's seed, the names and the image id), so every method and
CNN sees the same corrupted images, whichever order they are made in. MedMNIST-C draws
from the global NumPy / `random` state; ours are the same generators, seeded per image.

The severities were set for 224 px images (radii, kernel widths and font sizes are in
pixels), so `corrupt_split` corrupts the 224 px test image and then resizes it to the
model's resolution with the data cache's antialiased LANCZOS resize.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

# The resolution MedMNIST-C's severities were set for (its 224 x 224 MedMNIST+ images).
DESIGN_SIZE = 224
SEVERITIES = (1, 2, 3, 4, 5)
# The label of a corrupted test set in the metrics and predictions: "<corruption>@<severity>".
SEPARATOR = "@"
# The claims' and tables' name of the mean over every corrupted test set.
MEAN_CORRUPTION = "corrupted"


@dataclass
class Draws:
    """The random generators one corrupted image draws from (the global ones MedMNIST-C uses, seeded per image)."""

    numpy: np.random.RandomState  # np.random.normal / poisson / uniform
    generator: np.random.Generator  # scikit-image's random_noise (medmnistc's corruptor.rng)
    python: random.Random  # the `random` module (characters)

    @classmethod
    def seeded(cls, seed: int) -> Draws:
        """All three generators seeded with `seed`."""
        return cls(np.random.RandomState(seed), np.random.default_rng(seed), random.Random(seed))


def _unit(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64) / 255.0


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    # MedMNIST-C truncates (astype), it does not round.
    return (np.clip(unit, 0, 1) * 255).astype(np.uint8)


def pixelate(img: Image.Image, factor: float, draws: Draws) -> np.ndarray:
    """Box-downscale by `factor` and back up (MedMNIST-C Pixelate)."""
    width, height = img.size
    small = img.resize((int(width * factor), int(height * factor)), Image.BOX)
    return np.asarray(small.resize((width, height), Image.BOX))


def jpeg_compression(img: Image.Image, quality: int, draws: Draws) -> np.ndarray:
    """A JPEG round trip at `quality` (MedMNIST-C JPEGCompression)."""
    buffer = BytesIO()
    img.save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def gaussian_noise(img: Image.Image, scale: float, draws: Draws) -> np.ndarray:
    """Additive Gaussian noise of standard deviation `scale` on [0, 1] (MedMNIST-C GaussianNoise)."""
    x = _unit(img)
    return _to_uint8(x + draws.numpy.normal(size=x.shape, scale=scale))


def speckle_noise(img: Image.Image, scale: float, draws: Draws) -> np.ndarray:
    """Multiplicative Gaussian noise (MedMNIST-C SpeckleNoise)."""
    x = _unit(img)
    return _to_uint8(x + x * draws.numpy.normal(size=x.shape, scale=scale))


def impulse_noise(img: Image.Image, amount: float, draws: Draws) -> np.ndarray:
    """Salt-and-pepper noise on `amount` of the values (MedMNIST-C ImpulseNoise, scikit-image random_noise)."""
    from skimage.util import random_noise

    return _to_uint8(random_noise(_unit(img), mode="s&p", amount=amount, rng=draws.generator))


def shot_noise(img: Image.Image, photons: float, draws: Draws) -> np.ndarray:
    """Poisson noise at `photons` counts per unit intensity (MedMNIST-C ShotNoise)."""
    x = _unit(img)
    return _to_uint8(draws.numpy.poisson(x * photons) / photons)


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    import cv2

    span = 8 if radius <= 8 else radius
    grid = np.arange(-span, span + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    disk /= disk.sum()
    ksize = (3, 3) if radius <= 8 else (5, 5)
    return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)


def defocus_blur(img: Image.Image, params: tuple[float, float], draws: Draws) -> np.ndarray:
    """Convolution with an anti-aliased disk of `radius` pixels (MedMNIST-C DefocusBlur)."""
    import cv2

    radius, alias_blur = params
    x = _unit(img)
    kernel = _disk(radius, alias_blur)
    channels = np.stack([cv2.filter2D(x[:, :, c], -1, kernel) for c in range(x.shape[2])], axis=-1)
    return _to_uint8(channels)


def motion_blur(img: Image.Image, params: tuple[float, float], draws: Draws) -> np.ndarray:
    """ImageMagick's MotionBlurImage at a random angle in [-45, 45] degrees (MedMNIST-C MotionBlur).

    ImageMagick's kernel: width 2 ceil(radius) + 1, Gaussian weights exp(-i^2 / 2 sigma^2)
    normalised, pixel i along the angle at offset round(i cos a), round(i sin a), edge pixels
    repeated beyond the border; the result is floored to 8 bits (as medmnistc's 8-bit PNG round trip
    gives: it agrees within one level, on under 1 % of values, with ImageMagick's 16-bit arithmetic).
    """
    radius, sigma = params
    angle = np.deg2rad(draws.numpy.uniform(-45, 45))
    width = 2 * int(np.ceil(radius)) + 1
    i = np.arange(width, dtype=np.float64)
    kernel = np.exp(-(i**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    # ImageMagick: offset = ceil(i * point / hypot(point) - 0.5), point = width (sin a, cos a).
    dx = np.ceil(i * np.cos(angle) - 0.5).astype(int)
    dy = np.ceil(i * np.sin(angle) - 0.5).astype(int)
    x = np.asarray(img, dtype=np.float64)
    pad = int(max(np.abs(dx).max(), np.abs(dy).max()))
    padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    height, width_px = x.shape[:2]
    out = np.zeros_like(x)
    for weight, ox, oy in zip(kernel, dx, dy):
        out += weight * padded[pad + oy : pad + oy + height, pad + ox : pad + ox + width_px]
    return np.clip(np.floor(out), 0, 255).astype(np.uint8)


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    from scipy.ndimage import zoom

    h = x.shape[0]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    # Channel by channel: the same values as MedMNIST-C's one 3-D zoom with factor 1 on the channels, 2-3x faster.
    crop = x[top : top + ch, top : top + ch]
    zoomed = np.stack([zoom(crop[:, :, c], (factor, factor), order=1) for c in range(x.shape[2])], axis=-1)
    trim = (zoomed.shape[0] - h) // 2
    return zoomed[trim : trim + h, trim : trim + h]


def zoom_blur(img: Image.Image, factors: Sequence[float], draws: Draws) -> np.ndarray:
    """The mean of the image and its centre zooms by each of `factors` (MedMNIST-C ZoomBlur)."""
    x = (np.asarray(img) / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for factor in factors:
        out += _clipped_zoom(x, factor)
    return _to_uint8((x + out) / (len(factors) + 1))


def brightness(img: Image.Image, factor: float, draws: Draws) -> np.ndarray:
    """Pillow's ImageEnhance.Brightness by `factor` (MedMNIST-C Brightness)."""
    return np.asarray(ImageEnhance.Brightness(img).enhance(factor)).astype(np.uint8)


def contrast(img: Image.Image, factor: float, draws: Draws) -> np.ndarray:
    """Pillow's ImageEnhance.Contrast by `factor` (MedMNIST-C Contrast)."""
    return np.asarray(ImageEnhance.Contrast(img).enhance(factor)).astype(np.uint8)


def black_corner(img: Image.Image, multiplier: float, draws: Draws) -> np.ndarray:
    """Black outside a centred disk of `multiplier` x the inscribed radius: a dermatoscope's vignette (MedMNIST-C)."""
    import cv2

    width, height = img.size
    x = np.array(img)
    centre = (width // 2, height // 2)
    radius = min(centre[0], centre[1], width - centre[0], height - centre[1])
    circle = np.zeros((height, width), np.uint8)
    cv2.circle(circle, centre, int(radius * multiplier), 255, thickness=-1)
    x[circle != 255] = 0
    return x


def characters(img: Image.Image, params: tuple[int, int, float], draws: Draws) -> np.ndarray:
    """Up to `max_words` random lowercase words in random colours: pen marks and labels (MedMNIST-C Characters)."""
    import string

    import cv2

    max_words, max_letters, max_font_scale = params
    rnd = draws.python
    x = np.array(img)
    for _ in range(rnd.randint(1, max_words)):
        n_letters = rnd.randint(3, max_letters)
        font_scale = rnd.randint(14, int(max_font_scale * 100)) / 100.0
        text = "".join(rnd.choice(string.ascii_lowercase) for _ in range(n_letters))
        height, width = x.shape[:2]
        origin = (rnd.randint(10, width - 8 * n_letters), rnd.randint(10, height - 10))
        colour = (rnd.randint(0, 255), rnd.randint(0, 255), rnd.randint(0, 255))
        x = cv2.putText(x, text, origin, cv2.FONT_HERSHEY_DUPLEX, font_scale, colour, 1, cv2.LINE_AA)
    return x


Corruption = Callable[[Image.Image, Any, Draws], np.ndarray]

# MedMNIST-C's dermamnist registry (medmnistc/corruptions/registry.py): function and its five severities.
DERMOSCOPY: dict[str, tuple[Corruption, tuple[Any, ...]]] = {
    "pixelate": (pixelate, (0.7, 0.5, 0.40, 0.30, 0.25)),
    "jpeg_compression": (jpeg_compression, (30, 20, 15, 10, 7)),
    "gaussian_noise": (gaussian_noise, (0.04, 0.08, 0.12, 0.18, 0.26)),
    "speckle_noise": (speckle_noise, (0.05, 0.15, 0.2, 0.35, 0.45)),
    "impulse_noise": (impulse_noise, (0.01, 0.03, 0.06, 0.09, 0.17)),
    "shot_noise": (shot_noise, (60, 25, 18, 10, 5)),
    "defocus_blur": (defocus_blur, ((4, 0.1), (5, 0.2), (6, 0.3), (7, 0.4), (8, 0.5))),
    "motion_blur": (motion_blur, ((10, 5), (15, 5), (15, 8), (15, 12), (20, 15))),
    "zoom_blur": (
        zoom_blur,
        tuple(
            np.arange(1, stop, step)
            for stop, step in ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))
        ),
    ),
    "brightness_up": (brightness, (1.1, 1.2, 1.3, 1.4, 1.5)),
    "brightness_down": (brightness, (0.9, 0.8, 0.7, 0.6, 0.5)),
    "contrast_up": (contrast, (1.1, 1.2, 1.3, 1.4, 1.6)),
    "contrast_down": (contrast, (0.8, 0.7, 0.6, 0.5, 0.4)),
    "black_corner": (black_corner, (1.10, 1.05, 1.00, 0.90, 0.95)),
    "characters": (characters, ((1, 6, 0.14), (2, 7, 0.15), (3, 8, 0.16), (4, 9, 0.17), (6, 10, 0.18))),
}
CORRUPTION_SETS: dict[str, dict[str, tuple[Corruption, tuple[Any, ...]]]] = {"dermoscopy": DERMOSCOPY}


def condition_name(corruption: str, severity: int) -> str:
    """The test condition's label in the metrics and predictions, e.g. 'gaussian_noise@3'."""
    return f"{corruption}{SEPARATOR}{severity}"


def parse_condition(name: str) -> tuple[str, int] | None:
    """(corruption, severity) of a condition label, or None for a clean or attacked one."""
    corruption, sep, severity = name.rpartition(SEPARATOR)
    return (corruption, int(severity)) if sep and severity.isdigit() else None


def conditions(settings: Mapping[str, Any]) -> list[str]:
    """The condition labels of the config's `corruptions` section, in set order then severity; [] when off."""
    name = settings.get("set")
    if not name:
        return []
    if name not in CORRUPTION_SETS:
        raise ValueError(f"corruptions.set {name!r} is unknown; use one of {sorted(CORRUPTION_SETS)} or null")
    known = CORRUPTION_SETS[name]
    only = list(settings.get("only") or known)
    unknown = [c for c in only if c not in known]
    if unknown:
        raise ValueError(f"corruptions.only names {unknown}, which the {name} set lacks; use some of {list(known)}")
    severities = list(settings.get("severities") or SEVERITIES)
    bad = [s for s in severities if s not in SEVERITIES]
    if bad:
        raise ValueError(f"corruptions.severities {bad} are out of range; use some of {list(SEVERITIES)}")
    return [condition_name(c, s) for c in known if c in only for s in sorted(set(severities))]


def image_seed(seed: int, corruption: str, severity: int, image_id: str) -> int:
    """The seed of one corrupted image: a hash of the set's seed, the condition and the image id (order-free)."""
    digest = hashlib.sha256(f"{seed}/{corruption}/{severity}/{image_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def corrupt(
    image: np.ndarray, corruption: str, severity: int, seed: int, corruption_set: str = "dermoscopy"
) -> np.ndarray:
    """One RGB uint8 (H, W, 3) image under `corruption` at `severity` (1-5), drawing from generators seeded by `seed`."""
    function, params = CORRUPTION_SETS[corruption_set][corruption]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"corrupt takes an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    out = function(Image.fromarray(image), params[severity - 1], Draws.seeded(seed))
    if out.shape != image.shape or out.dtype != np.uint8:
        raise AssertionError(f"{corruption} returned {out.dtype} {out.shape} for {image.shape}")
    return out


def corrupt_split(
    images: np.ndarray,
    image_ids: Sequence[str],
    names: Iterable[str],
    *,
    seed: int,
    sizes: Iterable[int],
    corruption_set: str = "dermoscopy",
    workers: int = 1,
) -> Iterator[tuple[str, dict[int, np.ndarray]]]:
    """Each condition's corrupted test images, uint8 (N, 3, S, S) for each model resolution S, from (N, 3, H, W).

    One condition at a time (the paper's test set is 135 MB per condition at 224 px). The
    corruption is applied at the images' own resolution (224 px in the workflow), then each
    image is resized to S x S with LANCZOS like the data cache (skipped when S is that resolution).
    `workers` threads share the images; each image's seed makes the result independent of their order.
    """
    from concurrent.futures import ThreadPoolExecutor

    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3 or len(images) != len(image_ids):
        raise ValueError(f"corrupt_split takes uint8 (N, 3, H, W) images and N ids, got {images.dtype} {images.shape}")
    sizes = sorted(set(sizes))
    hwc = images.transpose(0, 2, 3, 1)
    for name in names:
        parsed = parse_condition(name)
        if parsed is None:
            raise ValueError(f"{name!r} is not a corruption condition '<corruption>{SEPARATOR}<severity>'")
        corruption, severity = parsed

        def one(i: int) -> np.ndarray:
            seeded = image_seed(seed, corruption, severity, image_ids[i])
            return corrupt(np.ascontiguousarray(hwc[i]), corruption, severity, seeded, corruption_set)

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            corrupted = list(pool.map(one, range(len(images))))
        yield name, {
            size: (
                np.stack([resize(img, size) for img in corrupted]).transpose(0, 3, 1, 2).copy()
                if corrupted
                else np.zeros((0, 3, size, size), np.uint8)
            )
            for size in sizes
        }


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB uint8 image resized to size x size with the data cache's LANCZOS (unchanged at its own size)."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))

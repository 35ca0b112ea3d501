"""Dermoscopy-like pictures of synthetic skin lesions, with the lesion's mask.

A `Lesion` is drawn once per lesion from a per-class prior (colour, border asymmetry and
irregularity, edge sharpness, network, veil, dots) and lives in its own frame, where its
border is near the unit circle; `render` takes a `View` (placement, rotation, scale,
recolouring, hairs) and paints it on skin. All views of a lesion therefore show the same
lesion. Class looks follow the dermoscopic textbook cues (mel: dark, multi-coloured,
asymmetric, irregular border, blue-white veil, atypical network; bkl: light/medium
brown, waxy, sharp border, milia-like cysts and comedo-like openings; nv: uniform
brown, round, symmetric, regular network) and overlap through per-lesion variation and
a share of lesions that borrow another class's look, so a classifier cannot be perfect.

Smooth fields are computed with numpy at half resolution and upsampled; small discrete
structures (dots, cysts, vessels, hairs) are drawn with PIL at full resolution.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Share of lesions drawn with the look of another class: the overlap that keeps accuracy < 100 %.
MIMIC_RATE = 0.04
_HARMONICS = 12
_ANGLES = 1024  # resolution of the border's angle table
_RENDER_SCALE = 2  # numpy fields at 1/2 resolution
_SKIN_TONES = np.array([[0.93, 0.76, 0.70], [0.88, 0.66, 0.58], [0.80, 0.58, 0.48], [0.70, 0.50, 0.40]])
# Look-alike pairs a lesion may borrow its look from (mel <-> nv <-> bkl are the hard ones).
_MIMICS = {
    "mel": ("nv", "bkl"),
    "nv": ("mel", "bkl"),
    "bkl": ("nv", "mel"),
    "bcc": ("bkl", "nv"),
    "akiec": ("bkl", "bcc"),
    "df": ("nv", "bkl"),
    "vasc": ("bcc", "nv"),
}


@dataclass(frozen=True)
class Dots:
    """Small round structures at fixed lesion-frame positions (u, v), radius in lesion radii."""

    uv: np.ndarray  # (n, 2)
    radius: np.ndarray  # (n,)
    colour: tuple[float, float, float]


@dataclass(frozen=True)
class Lesion:
    """One lesion's appearance in its own frame (border near the unit circle)."""

    dx: str
    radius: float  # border radius as a fraction of the image's short side
    border: np.ndarray  # (2, _HARMONICS) cos/sin amplitudes of the radius, harmonic k = index + 1
    edge: float  # border softness in lesion radii
    edge_wobble: float  # relative angular variation of the softness
    edge_phase: float
    opacity: float
    body: np.ndarray  # (3,) pigment colour at the rim
    centre: np.ndarray  # (3,) pigment colour at the centre
    centre_offset: np.ndarray  # (2,) where the darkest pigment sits (asymmetry)
    patches: tuple[tuple[np.ndarray, np.ndarray, float], ...]  # (colour, field waves, coverage)
    network: float  # strength of the pigment network (0 = none)
    network_freq: float  # lines per lesion radius
    network_warp: float  # 0 = regular mesh; larger = atypical
    fissures: float  # cerebriform ridges (bkl)
    dots: tuple[Dots, ...]
    vessels: np.ndarray  # (n, 2, 2) line segments in the lesion frame (bcc)
    skin: np.ndarray  # (3,) skin tone of the patient


@dataclass(frozen=True)
class View:
    """One photograph of a lesion: placement, pose, recolouring, vignette and hairs."""

    centre: tuple[float, float]  # lesion centre as fractions of width and height
    angle: float
    scale: float
    gain: np.ndarray  # (3,) per-channel colour gain
    vignette: float
    hairs: int
    seed: int  # texture and hair randomness of this view


def draw_lesion(dx: str, rng: np.random.Generator) -> Lesion:
    """Draw one lesion of class `dx` from its prior (with a small chance of another class's look)."""
    look = str(rng.choice(_MIMICS[dx])) if rng.random() < MIMIC_RATE else dx
    return _PRIORS[look](dx, rng)


def draw_view(rng: np.random.Generator, first: bool) -> View:
    """Draw a photograph of a lesion; later views are shifted, rotated, rescaled, recoloured."""
    spread = 0.04 if first else 0.10
    return View(
        centre=(0.5 + rng.normal(0, spread), 0.5 + rng.normal(0, spread)),
        angle=float(rng.uniform(0, 2 * np.pi)),
        scale=float(np.exp(rng.normal(0, 0.10))),
        gain=np.exp(rng.normal(0, 0.03, 3)) * np.exp(rng.normal(0, 0.04)),
        vignette=float(rng.uniform(0.15, 0.85)),
        hairs=int(rng.poisson(rng.choice([0.5, 3.0, 8.0], p=[0.5, 0.35, 0.15]))),
        seed=int(rng.integers(2**32)),
    )


def render(lesion: Lesion, view: View, size: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """Paint `lesion` as seen in `view`: an RGB image of `size` (w, h) and its 0/255 mask."""
    width, height = size
    w, h = max(width // _RENDER_SCALE, 8), max(height // _RENDER_SCALE, 8)
    rng = np.random.default_rng(view.seed)
    px_per_radius = lesion.radius * view.scale * min(w, h)
    box = _box(lesion, view, w, h, px_per_radius)
    u, v = _lesion_frame(view, box, w, h, px_per_radius)
    t, alpha, r = _shape(lesion, u, v)

    texture = 1 + _noise(rng, (h, w), 6, 0.05) + _noise(rng, (h, w), 40, 0.03)
    rgb = lesion.skin * texture[..., None]
    rgb[box] += (_lesion_colour(lesion, u, v, r) - rgb[box]) * alpha[..., None]
    rgb *= view.gain.astype(np.float32) * _vignette(w, h, view.vignette)[..., None]
    image = Image.fromarray(_to_uint8(rgb), "RGB").resize((width, height), Image.Resampling.BILINEAR)
    _draw_structures(image, lesion, view, px_per_radius * width / w, (width, height), rng)

    inside = np.zeros((h, w), np.uint8)
    inside[box] = np.where(t < 0, 255, 0)
    mask = Image.fromarray(inside, "L").resize((width, height), Image.Resampling.BILINEAR)
    return image, mask.point(lambda p: 255 if p >= 128 else 0)


def _box(lesion: Lesion, view: View, w: int, h: int, px_per_radius: float) -> tuple[slice, slice]:
    """Rows and columns outside which the lesion's opacity is below 1e-3 (only skin there)."""
    farthest = (1 + np.abs(lesion.border).sum()) * (1 + 8 * lesion.edge * (1 + lesion.edge_wobble))
    reach = farthest * px_per_radius
    cx, cy = view.centre[0] * w, view.centre[1] * h
    rows = slice(int(np.clip(cy - reach, 0, h)), int(np.clip(np.ceil(cy + reach), 0, h)))
    cols = slice(int(np.clip(cx - reach, 0, w)), int(np.clip(np.ceil(cx + reach), 0, w)))
    return rows, cols


@functools.cache
def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) of an h x w image (shared, read-only)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + np.float32(0.5)
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def _lesion_frame(
    view: View, box: tuple[slice, slice], w: int, h: int, px_per_radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Lesion-frame coordinates (u, v) of the pixels in `box`."""
    xs, ys = (g[box] for g in _grid(w, h))
    dx = (xs - np.float32(view.centre[0] * w)) / np.float32(px_per_radius)
    dy = (ys - np.float32(view.centre[1] * h)) / np.float32(px_per_radius)
    c, s = np.float32(np.cos(view.angle)), np.float32(np.sin(view.angle))
    return c * dx + s * dy, -s * dx + c * dy


def _shape(lesion: Lesion, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed border distance t (< 0 inside), opacity, and radius relative to the border."""
    rho = np.sqrt(u * u + v * v)
    # Border radius and edge softness depend on the direction only, so they come from a table
    # indexed by the diamond angle, a monotonic stand-in for atan2 in [-1, 3) that costs a
    # division (numpy's float32 arctan2 would take most of the rendering time).
    p = v / np.maximum(np.abs(u) + np.abs(v), np.float32(1e-6))
    diamond = np.where(u >= 0, p, 2 - p)
    index = np.minimum(((diamond + 1) * np.float32(_ANGLES / 4)).astype(np.intp), _ANGLES - 1)
    border, edge = _border_table(lesion)
    r = rho / border[index]
    t = r - 1
    return t, _sigmoid(-t / edge[index]) * np.float32(lesion.opacity), r


def _border_table(lesion: Lesion) -> tuple[np.ndarray, np.ndarray]:
    """Border radius and edge softness at _ANGLES diamond angles, evenly spaced in [-1, 3)."""
    diamond = -1 + 4 * (np.arange(_ANGLES) + 0.5) / _ANGLES
    p = np.where(diamond <= 1, diamond, 2 - diamond)
    theta = np.arctan2(p, np.where(diamond <= 1, 1, -1) * (1 - np.abs(p)))
    k = np.arange(1, _HARMONICS + 1)[:, None]
    radius = 1 + (lesion.border[0][:, None] * np.cos(k * theta) + lesion.border[1][:, None] * np.sin(k * theta)).sum(0)
    edge = lesion.edge * (1 + lesion.edge_wobble * np.sin(3 * theta + lesion.edge_phase))
    return np.maximum(radius, 0.35).astype(np.float32), np.maximum(edge, 0.006).astype(np.float32)


def _lesion_colour(lesion: Lesion, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Pigment colour (h, w, 3) of the lesion at lesion-frame coordinates; r is rho / border."""
    ou, ov = lesion.centre_offset
    du, dv = u - ou, v - ov
    radial = np.clip(np.sqrt(du * du + dv * dv) / np.float32(1.1), 0, 1) ** 1.5
    # Each patch blends the colour so far towards its own: keep the blend as one weight map
    # per colour and mix the colours in a single (pixels x colours) @ (colours x RGB) product.
    weights = [1 - radial, radial]
    for _, waves, coverage in lesion.patches:
        weight = _sigmoid((_waves(waves, u, v) + np.float32(coverage)) * 6) * (r < 1.05)
        weights = [w * (1 - weight) for w in weights] + [weight]
    palette = np.stack([lesion.centre, lesion.body, *(c for c, _, _ in lesion.patches)]).astype(np.float32)
    colour = np.stack(weights, axis=-1) @ palette
    shade = np.ones_like(u)
    if lesion.network:
        warp = lesion.network_warp * (np.sin(3.1 * u + 1.7 * v) + np.cos(2.3 * v - 2.9 * u))
        thickness = 0.35 * (1 + lesion.network_warp * 2 * np.sin(4.3 * u - 3.7 * v))
        mesh = np.maximum(
            _lines(lesion.network_freq * (u + warp), thickness),
            _lines(lesion.network_freq * (v - warp), thickness),
        )
        # Networks fade towards the periphery.
        shade -= lesion.network * mesh * np.clip(1.3 - r, 0, 1)
    if lesion.fissures:
        ridges = np.sin(9 * (u + 0.3 * np.sin(4 * v)) + 5 * np.sin(3 * u + 2 * v))
        shade -= lesion.fissures * np.clip(ridges, 0, 1) ** 3
    return colour * shade[..., None]


def _draw_structures(
    image: Image.Image,
    lesion: Lesion,
    view: View,
    px_per_radius: float,
    size: tuple[int, int],
    rng: np.random.Generator,
) -> None:
    """Draw dots, vessels and hairs on the full-resolution image in place."""
    draw = ImageDraw.Draw(image)
    gain = view.gain

    def to_image(uv: np.ndarray) -> np.ndarray:
        c, s = np.cos(view.angle), np.sin(view.angle)
        x = (c * uv[..., 0] - s * uv[..., 1]) * px_per_radius + view.centre[0] * size[0]
        y = (s * uv[..., 0] + c * uv[..., 1]) * px_per_radius + view.centre[1] * size[1]
        return np.stack([x, y], axis=-1)

    for dots in lesion.dots:
        fill = _rgb(np.asarray(dots.colour) * gain)
        for (x, y), r in zip(to_image(dots.uv), dots.radius * px_per_radius):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    vessel = _rgb(np.array([0.70, 0.18, 0.20]) * gain)
    for (x0, y0), (x1, y1) in to_image(lesion.vessels):
        draw.line([(x0, y0), (x1, y1)], fill=vessel, width=max(1, round(px_per_radius / 60)))
    for _ in range(view.hairs):
        start = rng.uniform(0, 1, 2) * size
        heading = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.2, 0.7) * max(size)
        bend = rng.normal(0, 0.6)
        steps = np.linspace(0, 1, 16)[:, None]
        angles = heading + bend * steps
        points = start + np.cumsum(np.hstack([np.cos(angles), np.sin(angles)]) * length / 16, axis=0)
        shade = rng.uniform(0.05, 0.25)
        draw.line(
            [tuple(p) for p in points],
            fill=_rgb(np.array([shade, shade * 0.8, shade * 0.7])),
            width=int(rng.integers(1, 4)),
        )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(x, -30, 30)))


def _lines(x: np.ndarray, thickness: np.ndarray) -> np.ndarray:
    """1 on the lines x = integer, falling to 0 between them."""
    return np.exp(-((np.sin(np.pi * x) / thickness) ** 2))


def _waves(waves: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A smooth random field in the lesion frame: a sum of plane waves (rows: wu, wv, phase)."""
    return sum(np.cos(wu * u + wv * v + phase) for wu, wv, phase in waves) / math.sqrt(len(waves))


def _noise(rng: np.random.Generator, shape: tuple[int, int], cells: int, amplitude: float) -> np.ndarray:
    """Smooth noise with about `cells` features across the width, by bicubic upsampling."""
    h, w = shape
    grid = rng.normal(0, amplitude, (max(2, cells * h // w), cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, "F").resize((w, h), Image.Resampling.BICUBIC))


def _vignette(w: int, h: int, strength: float) -> np.ndarray:
    """Dark corners of the dermoscope's round field of view."""
    xs, ys = _grid(w, h)
    r = np.sqrt((xs - w / 2) ** 2 + (ys - h / 2) ** 2) / (w / 2)
    return 1 - strength * np.clip((r - 0.75) / 0.5, 0, 1) ** 2


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(c) for c in np.clip(np.asarray(colour) * 255 + 0.5, 0, 255))
    return r, g, b


# ---- per-class priors ---------------------------------------------------------------


def _border(rng: np.random.Generator, asymmetry: float, irregularity: float, elongation: float) -> np.ndarray:
    """Fourier amplitudes of the border radius: low harmonics = asymmetry, high = irregularity."""
    k = np.arange(1, _HARMONICS + 1)
    sd = np.where(k <= 3, asymmetry, irregularity * (4 / k) ** 0.5)
    amps = rng.normal(0, 1, (2, _HARMONICS)) * sd
    amps[0, 1] += elongation
    return amps.astype(np.float32)


def _field(rng: np.random.Generator, waves: int, freq: float) -> np.ndarray:
    """Plane waves (wu, wv, phase) of a random field with about `freq` radians per lesion radius."""
    angle = rng.uniform(0, 2 * np.pi, waves)
    f = freq * rng.uniform(0.6, 1.4, waves)
    return np.stack([f * np.cos(angle), f * np.sin(angle), rng.uniform(0, 2 * np.pi, waves)], axis=1).astype(np.float32)


def _dots(
    rng: np.random.Generator,
    n: int,
    radius: tuple[float, float],
    colour: tuple[float, float, float],
    reach: float = 0.75,
) -> Dots:
    r = reach * np.sqrt(rng.uniform(0, 1, n))
    a = rng.uniform(0, 2 * np.pi, n)
    return Dots(np.stack([r * np.cos(a), r * np.sin(a)], axis=1), rng.uniform(*radius, n), colour)


def _jitter(
    rng: np.random.Generator, colour: tuple[float, float, float], lightness: float, spread: float = 0.05
) -> np.ndarray:
    return np.clip(np.asarray(colour) * lightness * np.exp(rng.normal(0, spread, 3)), 0, 1).astype(np.float32)


def _skin(rng: np.random.Generator) -> np.ndarray:
    tone = _SKIN_TONES[rng.choice(len(_SKIN_TONES), p=[0.35, 0.35, 0.2, 0.1])]
    return np.clip(tone * np.exp(rng.normal(0, 0.04, 3)), 0, 1).astype(np.float32)


def _base(dx: str, rng: np.random.Generator, **fields: object) -> Lesion:
    """A lesion with neutral defaults for every structure a prior does not set."""
    defaults = dict(
        edge_wobble=0.2,
        edge_phase=float(rng.uniform(0, 2 * np.pi)),
        opacity=0.95,
        centre_offset=rng.normal(0, 0.05, 2).astype(np.float32),
        patches=(),
        network=0.0,
        network_freq=8.0,
        network_warp=0.0,
        fissures=0.0,
        dots=(),
        vessels=np.zeros((0, 2, 2), np.float32),
        skin=_skin(rng),
    )
    defaults.update(fields)
    return Lesion(dx=dx, **defaults)


def _mel(dx: str, rng: np.random.Generator) -> Lesion:
    light = float(np.exp(rng.normal(-0.15, 0.15)))
    patches = [(_jitter(rng, (0.10, 0.07, 0.06), 1.0), _field(rng, 4, 3.0), rng.uniform(-0.6, 0.4))]
    if rng.random() < 0.75:  # blue-white veil
        patches.append((_jitter(rng, (0.56, 0.60, 0.70), 1.0), _field(rng, 3, 2.5), rng.uniform(-1.2, -0.4)))
    if rng.random() < 0.35:  # regression / pink areas
        patches.append((_jitter(rng, (0.80, 0.55, 0.55), 1.0), _field(rng, 3, 3.5), rng.uniform(-1.2, -0.5)))
    dots = (_dots(rng, int(rng.integers(0, 12)), (0.02, 0.05), (0.12, 0.08, 0.08), reach=1.0),)
    return _base(
        dx,
        rng,
        radius=float(rng.uniform(0.22, 0.38)),
        border=_border(
            rng,
            asymmetry=rng.uniform(0.06, 0.16),
            irregularity=rng.uniform(0.015, 0.04),
            elongation=rng.normal(0, 0.08),
        ),
        edge=float(rng.uniform(0.02, 0.12)),
        edge_wobble=float(rng.uniform(0.3, 0.9)),
        body=_jitter(rng, (0.38, 0.24, 0.17), light, 0.08),
        centre=_jitter(rng, (0.20, 0.12, 0.10), light, 0.08),
        centre_offset=rng.normal(0, 0.3, 2).astype(np.float32),
        patches=tuple(patches),
        network=float(rng.uniform(0.1, 0.45)),
        network_freq=float(rng.uniform(5, 9)),
        network_warp=float(rng.uniform(0.08, 0.25)),
        dots=dots,
    )


def _nv(dx: str, rng: np.random.Generator) -> Lesion:
    light = float(np.exp(rng.normal(0, 0.12)))
    return _base(
        dx,
        rng,
        radius=float(rng.uniform(0.16, 0.30)),
        border=_border(rng, asymmetry=0.03, irregularity=0.008, elongation=rng.normal(0, 0.06)),
        edge=float(rng.uniform(0.06, 0.16)),
        body=_jitter(rng, (0.58, 0.38, 0.25), light),
        centre=_jitter(rng, (0.48, 0.30, 0.19), light),
        network=float(rng.uniform(0.15, 0.4)),
        network_freq=float(rng.uniform(7, 10)),
        network_warp=float(rng.uniform(0.0, 0.03)),
        dots=(_dots(rng, int(rng.integers(0, 4)), (0.02, 0.035), (0.35, 0.22, 0.15), reach=0.5),),
    )


def _bkl(dx: str, rng: np.random.Generator) -> Lesion:
    light = float(np.exp(rng.normal(0.12, 0.12)))
    waxy = _jitter(rng, (0.76, 0.64, 0.46), light)
    return _base(
        dx,
        rng,
        radius=float(rng.uniform(0.18, 0.34)),
        border=_border(
            rng,
            asymmetry=rng.uniform(0.03, 0.08),
            irregularity=rng.uniform(0.01, 0.025),
            elongation=rng.normal(0.1, 0.06),
        ),
        edge=float(rng.uniform(0.008, 0.03)),
        opacity=0.98,
        body=waxy,
        centre=_jitter(rng, (0.60, 0.45, 0.30), light),
        patches=((_jitter(rng, (0.80, 0.70, 0.52), light), _field(rng, 4, 4.0), rng.uniform(-1.0, -0.2)),),
        fissures=float(rng.uniform(0.1, 0.35)),
        dots=(
            _dots(rng, int(rng.integers(2, 14)), (0.025, 0.06), (0.97, 0.95, 0.85)),  # milia-like cysts
            _dots(rng, int(rng.integers(0, 8)), (0.02, 0.045), (0.22, 0.15, 0.10)),  # comedo-like openings
        ),
    )


def _bcc(dx: str, rng: np.random.Generator) -> Lesion:
    starts = rng.uniform(-0.7, 0.7, (int(rng.integers(3, 9)), 2))
    vessels = np.stack([starts, starts + rng.normal(0, 0.35, starts.shape)], axis=1).astype(np.float32)
    return _base(
        dx,
        rng,
        radius=float(rng.uniform(0.18, 0.32)),
        border=_border(rng, asymmetry=0.07, irregularity=0.02, elongation=0.0),
        edge=float(rng.uniform(0.05, 0.15)),
        opacity=float(rng.uniform(0.5, 0.8)),
        body=_jitter(rng, (0.88, 0.60, 0.60), 1.0),
        centre=_jitter(rng, (0.85, 0.62, 0.64), 1.0),
        dots=(_dots(rng, int(rng.integers(1, 5)), (0.07, 0.14), (0.35, 0.38, 0.48)),),
        vessels=vessels,
    )


def _akiec(dx: str, rng: np.random.Generator) -> Lesion:
    return _base(
        dx,
        rng,
        radius=float(rng.uniform(0.2, 0.35)),
        border=_border(rng, asymmetry=0.08, irregularity=0.03, elongation=0.05),
        edge=float(rng.uniform(0.05, 0.15)),
        opacity=0.85,
        body=_jitter(rng, (0.80, 0.45, 0.40), 1.0),
        centre=_jitter(rng, (0.75, 0.40, 0.36), 1.0),
        dots=(_dots(rng, int(rng.integers(10, 30)), (0.015, 0.04), (0.95, 0.92, 0.88), reach=0.9),),
    )


def _df(dx: str, rng: np.random.Generator) -> Lesion:
    return _base(
        dx,
        rng,
        radius=float(rng.uniform(0.14, 0.24)),
        border=_border(rng, asymmetry=0.03, irregularity=0.01, elongation=0.05),
        edge=float(rng.uniform(0.1, 0.2)),
        body=_jitter(rng, (0.62, 0.44, 0.34), 1.0),
        centre=_jitter(rng, (0.92, 0.86, 0.82), 1.0),  # central white scar-like patch
        network=0.2,
        network_freq=6.0,
    )


def _vasc(dx: str, rng: np.random.Generator) -> Lesion:
    return _base(
        dx,
        rng,
        radius=float(rng.uniform(0.14, 0.26)),
        border=_border(rng, asymmetry=0.04, irregularity=0.015, elongation=0.05),
        edge=float(rng.uniform(0.02, 0.06)),
        body=_jitter(rng, (0.70, 0.20, 0.28), 1.0),
        centre=_jitter(rng, (0.55, 0.12, 0.25), 1.0),
        dots=(_dots(rng, int(rng.integers(3, 10)), (0.08, 0.16), (0.45, 0.10, 0.30)),),  # red-purple lacunae
    )


_PRIORS = {"mel": _mel, "nv": _nv, "bkl": _bkl, "bcc": _bcc, "akiec": _akiec, "df": _df, "vasc": _vasc}

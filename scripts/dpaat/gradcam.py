"""Grad-CAM (paper Eq. 19-20, via pytorch-grad-cam), its agreement with lesion masks, and Fig. 4.

Agreement with a lesion mask is measured two ways: the fraction of CAM energy inside
the mask (a uniform CAM scores the mask's area fraction, reported beside it as the
chance level) and the pointing game (does the CAM's maximum fall inside the mask).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from dpaat.attacks import eval_mode
from dpaat.figures import save_figure
from dpaat.paper_results import method_label
from dpaat.predict import predict_logits


def _check_images(images: Tensor) -> None:
    """Images must be float (N, 3, S, S) in [0, 1], as the models (which normalise internally) expect."""
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a tensor of shape (N, 3, S, S), got {getattr(images, 'shape', type(images))}")
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0, 1], got dtype {images.dtype}; convert with images.float() / 255")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError("images must lie in [0, 1] (pixel space); models normalise internally")


def _labels_array(labels: Tensor | np.ndarray | Sequence[int], n: int) -> np.ndarray:
    """Labels as an (n,) int64 array, or a clear error."""
    y = np.asarray(labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be {n} integer class indices, got shape {y.shape} and dtype {y.dtype}")
    if n and y.min() < 0:
        raise ValueError("labels must be non-negative class indices")
    return y.astype(np.int64)


def _device_of(model: nn.Module) -> torch.device:
    """The device of the model's parameters (CPU for a parameterless model)."""
    return next(model.parameters(), torch.empty(0)).device


def compute_cams(
    model: nn.Module, target_layer: nn.Module, images: Tensor, labels: Tensor | np.ndarray, batch_size: int = 32
) -> np.ndarray:
    """Grad-CAM maps (N, S, S) in [0, 1] for each image's class `labels[i]` at `target_layer`.

    The model runs in eval mode (restored after) and the parameters' .grad are left as they were.
    """
    _check_images(images)
    y = _labels_array(labels, images.shape[0])
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not any(m is target_layer for m in model.modules()):
        raise ValueError("target_layer is not a submodule of model; pass a layer of this model instance")
    params = list(model.parameters())
    device = _device_of(model)
    saved_grads = [p.grad for p in params]
    cams = []
    with eval_mode(model), torch.enable_grad():
        # Not used as a context manager: its __exit__ swallows IndexError (an out-of-range label).
        cam = GradCAM(model=model, target_layers=[target_layer])
        try:
            for start in range(0, images.shape[0], batch_size):
                # An input that requires grad keeps the target layer's gradient hook alive for frozen models.
                x = images[start : start + batch_size].to(device=device, dtype=torch.float32).requires_grad_(True)
                targets = [ClassifierOutputTarget(int(c)) for c in y[start : start + batch_size]]
                try:
                    cams.append(cam(input_tensor=x, targets=targets))
                except IndexError as err:
                    raise ValueError(f"a label in {sorted(set(y.tolist()))} exceeds the model's outputs") from err
        finally:
            cam.activations_and_grads.release()
            for p, g in zip(params, saved_grads):
                p.grad = g
    if not cams:
        return np.zeros((0, *images.shape[2:]), dtype=np.float32)
    return np.concatenate(cams).astype(np.float32)


def cam_mask_scores(cams: np.ndarray | Tensor, masks: np.ndarray | Tensor) -> pd.DataFrame:
    """Per image: energy_in_mask = Σ cam·mask / Σ cam, pointing_hit = argmax of cam inside mask, mask_fraction.

    Masks are binarised as mask > 0. An all-zero CAM has no energy and no maximum: NaN / NA.
    """
    c = np.asarray(cams, dtype=np.float64)
    m = np.asarray(masks) > 0
    if c.ndim != 3 or c.shape != m.shape:
        raise ValueError(f"cams and masks must both have shape (N, S, S); got {c.shape} and {m.shape}")
    if (c < 0).any():
        raise ValueError("cams must be non-negative (Grad-CAM applies a ReLU)")
    flat_c, flat_m = c.reshape(len(c), -1), m.reshape(len(m), -1)
    total = flat_c.sum(axis=1)
    inside = (flat_c * flat_m).sum(axis=1)
    energy = np.divide(inside, total, out=np.full(len(c), np.nan), where=total > 0)
    hit = flat_m[np.arange(len(c)), flat_c.argmax(axis=1)] if len(c) else np.zeros(0, dtype=bool)
    return pd.DataFrame(
        {
            "energy_in_mask": energy,
            "pointing_hit": pd.array(np.where(total > 0, hit, pd.NA), dtype="boolean"),
            "mask_fraction": flat_m.mean(axis=1),
        }
    )


def select_correct(
    model: nn.Module | Sequence[nn.Module],
    images: Tensor,
    labels: Tensor | np.ndarray,
    per_class: int,
    seed: int,
    batch_size: int = 64,
) -> np.ndarray:
    """Indices of up to `per_class` images per class predicted correctly by every given model.

    Picked at random with `seed` among the correct ones, returned grouped by class, ascending within a class.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be positive, got {per_class}")
    models = [model] if isinstance(model, nn.Module) else list(model)
    if not models:
        raise ValueError("select_correct needs at least one model")
    _check_images(images)
    y = _labels_array(labels, images.shape[0])
    correct = np.ones(len(y), dtype=bool)
    for m in models:
        correct &= predict_logits(m, images, batch_size=batch_size, device=_device_of(m)).argmax(dim=1).numpy() == y
    rng = np.random.default_rng(seed)
    picks = [np.sort(rng.permutation(np.flatnonzero(correct & (y == c)))[:per_class]) for c in np.unique(y)]
    return np.concatenate(picks).astype(np.int64) if picks else np.zeros(0, dtype=np.int64)


def gradcam_panel(
    images: Tensor,
    cams_by_method: Mapping[str, np.ndarray],
    labels: Tensor | np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    masks: np.ndarray | Tensor | None = None,
    title: str = "Grad-CAM on correctly predicted test images",
) -> None:
    """Fig. 4: one row per class (its first image), columns = the image, then each method's CAM overlay.

    With `masks`, the lesion outline is drawn and each overlay reports its CAM energy inside the mask.
    """
    _check_images(images)
    y = _labels_array(labels, images.shape[0])
    if not cams_by_method:
        raise ValueError("cams_by_method is empty; pass at least one method's CAMs")
    for method, cams in cams_by_method.items():
        if np.shape(cams) != (images.shape[0], *images.shape[2:]):
            raise ValueError(
                f"CAMs of {method!r} have shape {np.shape(cams)}, expected {(images.shape[0], *images.shape[2:])}"
            )
    if y.size and y.max() >= len(class_names):
        raise ValueError(f"label {y.max()} has no name among class_names {list(class_names)}")
    rows = [(c, int(np.flatnonzero(y == c)[0])) for c in range(len(class_names)) if (y == c).any()]
    if not rows:
        raise ValueError("no images to show")
    pixels = images.detach().cpu().permute(0, 2, 3, 1).numpy().astype(np.float32)
    mask_arr = None if masks is None else np.asarray(masks) > 0
    scores = {m: cam_mask_scores(c, mask_arr) for m, c in cams_by_method.items()} if mask_arr is not None else {}

    n_cols = 1 + len(cams_by_method)
    fig = Figure(figsize=(2.3 * n_cols, 2.4 * len(rows) + 0.6), layout="constrained")
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for r, (c, i) in enumerate(rows):
        panels = [("image", pixels[i], None)] + [
            (method_label(m), show_cam_on_image(pixels[i], np.asarray(cams[i], dtype=np.float32), use_rgb=True), m)
            for m, cams in cams_by_method.items()
        ]
        for col, (name, picture, method) in enumerate(panels):
            ax = axes[r, col]
            ax.imshow(picture)
            if mask_arr is not None:
                ax.contour(mask_arr[i], levels=[0.5], colors="white", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name)
            if col == 0:
                ax.set_ylabel(class_names[c], fontsize=11)
            if method is not None and scores:
                energy = scores[method]["energy_in_mask"].iloc[i]
                ax.set_xlabel("zero CAM" if np.isnan(energy) else f"CAM energy in lesion: {energy:.0%}", fontsize=8)
    outline = "; white line = lesion mask" if mask_arr is not None else ""
    fig.suptitle(f"{title}\n(red = strong positive contribution to the true class{outline})", fontsize=10)
    save_figure(fig, path)

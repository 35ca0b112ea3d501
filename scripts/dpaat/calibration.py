"""Calibration of the predicted confidences: expected calibration error and the reliability diagram.

Top-label calibration (Guo et al. 2017): each prediction's confidence is its largest softmax
probability, correct when that class is the label. Confidences fall into `n_bins` equal-width
bins (0, 1/M], (1/M, 2/M], ... as scikit-learn's `calibration_curve` bins them (its
`strategy="uniform"`), and

    ECE = sum over bins b of |sum_{i in b} (correct_i - confidence_i)| / N,

the bins' |accuracy - mean confidence| weighted by their share of the predictions. The
reliability diagram plots each non-empty bin's accuracy against its mean confidence, from
`calibration_curve` itself. Intervals resample test images (and seeds) with
`dpaat.stats.bootstrap`, like every table cell.
"""

from __future__ import annotations

import numpy as np

from dpaat import stats

N_BINS = 15


def top_label(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidence (largest probability) and correctness (argmax == label) of each prediction in probs (..., N, C)."""
    probs = np.asarray(probs, dtype=float)
    return probs.max(axis=-1), (probs.argmax(axis=-1) == np.asarray(labels)).astype(float)


def bin_ids(confidence: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Each confidence's bin, as scikit-learn's calibration_curve assigns it (right-closed, equal width)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    return np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], confidence)


def weighted_ece(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """ECE of probs (..., N, C) under image weights (B, N): shape (B, ...); unit weights give the plain ECE."""
    confidence, correct = top_label(labels, probs)
    bins = bin_ids(confidence, n_bins)
    gap = correct - confidence  # (..., N)
    weights = np.asarray(weights, dtype=float)
    lead = gap.shape[:-1]
    out = np.zeros((weights.shape[0], *lead))
    for b in range(n_bins):
        inside = bins == b
        if inside.any():
            out += np.abs(np.einsum("bn,...n->b...", weights, np.where(inside, gap, 0.0)))
    return out / weights.sum(axis=-1).reshape(-1, *([1] * len(lead)))


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS) -> float:
    """Top-label ECE of one model's probabilities (N, C)."""
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or len(probs) != len(labels) or len(probs) == 0:
        raise ValueError(f"need probabilities (N, C) for N labels, got {probs.shape} for {len(labels)}")
    return float(weighted_ece(labels, probs, np.ones((1, len(labels))), n_bins)[0])


def ece_interval(
    labels: np.ndarray, probs: np.ndarray, *, n_bins: int = N_BINS, n_resamples: int, seed: int, scale: float = 1.0
) -> stats.Interval:
    """ECE averaged over archs, then seeds, of probs (A, S, N, C), with its bootstrap interval over images (and seeds)."""
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 4:
        raise ValueError(f"probs must be (archs, seeds, images, classes), got shape {probs.shape}")
    _, n_seeds, n_images, _ = probs.shape

    def statistic(w_seeds: np.ndarray, w_images: np.ndarray) -> np.ndarray:
        per_seed = weighted_ece(labels, probs, w_images, n_bins).mean(axis=1)  # (B, S)
        return scale * (per_seed * w_seeds).sum(axis=-1) / w_seeds.sum(axis=-1)

    return stats.bootstrap(statistic, [n_seeds, n_images], n_resamples=n_resamples, seed=seed)


def reliability_curve(labels: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, mean confidence) of each non-empty bin of the pooled predictions probs (..., N, C)."""
    from sklearn.calibration import calibration_curve

    confidence, correct = top_label(labels, probs)
    return calibration_curve(correct.ravel().astype(int), confidence.ravel(), n_bins=n_bins, pos_label=1)

"""Statistics of a test set's predictions: bootstrap intervals, paired tests, detectable differences.

Every metric is computed from per-image predictions with per-image *weights*, so that a
bootstrap resample (image i drawn k times = weight k) is one weighted evaluation and a
thousand resamples are one vectorised numpy pass. The resampling itself is
`scipy.stats.bootstrap` (independently over test images and, when there are several,
over seeds). Paired tests take the test *image* as the unit: the same image is seen by
every CNN and seed, so its outcomes are not independent pairs. Accuracy comparisons are
an exact sign-flip test of the per-image differences summed over CNNs and seeds (its
null distribution enumerated by convolution, no resampling); a metric that is not a
per-image success (mAP) gets scipy's paired permutation test, an image's two predictions
swapping in every CNN and seed at once. Intervals of accuracy differences are score
intervals of the per-image differences (Tango's for paired proportions, generalised), one
method at every count of discordant images; equivalence is a two one-sided test (TOST) with
the same score statistic, so that a verdict and its interval always agree. The trained
networks are fixed: the inference is conditional on them. McNemar's exact test
(`statsmodels`) is for one CNN and one seed, where pairs are independent. Multiple
comparisons are Holm-corrected with statsmodels' `multipletests`.

Layout of the prediction arrays: `labels` (N,) class indices of the N test images;
`probs` (..., N, C) softmax scores with any leading dimensions (archs, seeds).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
ALPHA = 0.05
# Paired permutations of a test without a closed form (mAP): the smallest two-sided p is 2 / 20001,
# far below α / K for any family of claims this pipeline tests (warned of where it is not).
PERMUTATIONS = 20_000
# The metrics a cell can carry; "map" is macro one-vs-rest average precision (the paper's mAP/mARP).
METRIC_NAMES: tuple[str, ...] = (
    "accuracy", "precision", "recall", "f1", "balanced_accuracy", "worst_recall", "map",
)  # fmt: skip
# Resamples per scipy call batch: bounds memory to batch x archs x seeds x N x C floats.
_BATCH = 100


@dataclass(frozen=True)
class Interval:
    """A point estimate with its two-sided confidence interval and how it was made (BCa, percentile, score)."""

    estimate: float
    low: float
    high: float
    method: str = ""


@dataclass(frozen=True)
class PairedTest:
    """McNemar's exact test on paired successes: b = only A right, c = only B right."""

    n: int
    b: int
    c: int
    pvalue: float

    @property
    def difference(self) -> float:
        """Accuracy of A minus accuracy of B on the same images."""
        return (self.b - self.c) / self.n if self.n else math.nan


def _confusion(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted confusion counts (..., C_true, C_pred) for weights (..., N) broadcast against probs (..., N, C)."""
    n_classes = probs.shape[-1]
    pred = np.eye(n_classes)[probs.argmax(axis=-1)]  # (..., N, C) one-hot predictions
    truth = np.eye(n_classes)[labels]  # (N, C)
    weighted_truth = weights[..., :, None] * truth  # (..., N, C)
    return np.einsum("...nt,...np->...tp", weighted_truth, pred)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 (scikit-learn's zero_division=0)."""
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _average_precision(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro one-vs-rest average precision with sample weights, as scikit-learn's average_precision_score.

    AP = Σ_k (R_k − R_{k−1}) P_k over the distinct score thresholds, highest first.
    """
    n_classes = probs.shape[-1]
    aps = []
    for c in range(n_classes):
        shape = np.broadcast_shapes(probs.shape[:-1], weights.shape)
        score = np.broadcast_to(probs[..., c], shape)  # (..., N)
        w = np.broadcast_to(weights, shape)
        positive = (labels == c).astype(float)  # (N,)
        order = np.argsort(-score, axis=-1, kind="stable")
        s_sorted = np.take_along_axis(score, order, axis=-1)
        w_sorted = np.take_along_axis(w, order, axis=-1)
        pos_sorted = np.take(positive, order)
        tp = np.cumsum(w_sorted * pos_sorted, axis=-1)
        seen = np.cumsum(w_sorted, axis=-1)
        # A threshold counts at the last element of each run of equal scores.
        last = np.ones(s_sorted.shape, dtype=bool)
        last[..., :-1] = s_sorted[..., 1:] != s_sorted[..., :-1]
        total_pos = tp[..., -1:]
        recall = _ratio(tp, total_pos)
        precision = _ratio(tp, seen)
        recall_at = np.where(last, recall, np.nan)
        # Previous threshold's recall: carry the last seen value forward (0 before the first threshold).
        prev = np.concatenate([np.zeros(recall.shape[:-1] + (1,)), recall_at[..., :-1]], axis=-1)
        idx = np.where(~np.isnan(prev), np.arange(prev.shape[-1]), 0)
        np.maximum.accumulate(idx, axis=-1, out=idx)
        prev = np.take_along_axis(np.nan_to_num(prev), idx, axis=-1)
        aps.append(np.where(last, (recall - prev) * precision, 0.0).sum(axis=-1))
    return np.mean(aps, axis=0)


def weighted_metric(metric: str, labels: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`metric` of predictions `probs` (..., N, C) with per-image `weights` (..., N); returns shape (...).

    With unit weights these equal scikit-learn's accuracy, macro precision/recall/F1 over all
    classes (zero_division=0), balanced accuracy (mean recall of the classes present), the
    lowest recall of a class present, and macro average precision.
    """
    if metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; choose one of {list(METRIC_NAMES)}")
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=float)
    weights = np.asarray(weights, dtype=float)
    if metric == "map":
        return _average_precision(labels, probs, weights)
    conf = _confusion(labels, probs, weights)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    true_c = conf.sum(axis=-1)
    pred_c = conf.sum(axis=-2)
    if metric == "accuracy":
        return _ratio(tp.sum(axis=-1), true_c.sum(axis=-1))
    if metric == "precision":
        return _ratio(tp, pred_c).mean(axis=-1)
    if metric == "f1":
        return _ratio(2 * tp, pred_c + true_c).mean(axis=-1)
    recall = _ratio(tp, true_c)
    if metric == "recall":
        return recall.mean(axis=-1)
    present = true_c > 0
    if metric == "balanced_accuracy":
        return _ratio((recall * present).sum(axis=-1), present.sum(axis=-1))
    return np.where(present, recall, np.inf).min(axis=-1)  # worst_recall


def _counts(indices: np.ndarray, size: int) -> np.ndarray:
    """Resampled indices (..., n) into counts per original element (..., size): the bootstrap weights."""
    flat = indices.reshape(-1, indices.shape[-1])
    offsets = np.arange(flat.shape[0])[:, None] * size
    counts = np.bincount((flat + offsets).ravel(), minlength=flat.shape[0] * size)
    return counts.reshape(*indices.shape[:-1], size).astype(float)


def bootstrap(
    statistic: Callable[..., np.ndarray],
    sizes: Sequence[int],
    *,
    n_resamples: int,
    seed: int,
    confidence: float = CONFIDENCE,
    method: str = "BCa",
) -> Interval:
    """BCa (or `method`) bootstrap interval of `statistic(*weights)` resampling each of several samples independently.

    `sizes` are the sample sizes (e.g. images, or seeds and images); `statistic` receives one
    weight array per sample, shaped (B, size), and returns (B,). Samples of size 1 are not
    resampled. scipy.stats.bootstrap draws the resamples, seeded by `seed`; where BCa is
    undefined (every resample equal) the percentile interval of the same resamples is used.
    """
    if method not in ("BCa", "percentile"):
        raise ValueError(f"bootstrap method must be 'BCa' or 'percentile', got {method!r}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    if any(n < 1 for n in sizes):
        raise ValueError(f"every sample needs at least one element, got sizes {list(sizes)}")
    estimate = float(statistic(*(np.ones((1, n)) for n in sizes))[0])
    resampled = [i for i, n in enumerate(sizes) if n > 1]
    if not resampled or math.isnan(estimate):
        return Interval(estimate, math.nan, math.nan, method)

    def on_indices(*indices: np.ndarray, axis: int = -1) -> np.ndarray:
        # scipy passes resamples (B, n) of every sample, or, for BCa's jackknife, leave-one-out
        # resamples (n_i, n_i - 1) of one sample beside the others' original (n_j,) data.
        batch = np.broadcast_shapes(*(np.shape(idx)[:-1] for idx in indices))
        rows = int(np.prod(batch)) if batch else 1
        weights = [np.ones((rows, n)) for n in sizes]
        for i, idx in zip(resampled, indices):
            weights[i] = np.broadcast_to(_counts(np.atleast_2d(idx), sizes[i]), (rows, sizes[i]))
        values = statistic(*weights)
        return values.reshape(batch) if batch else values[0]

    with warnings.catch_warnings():
        # BCa is undefined when every resample gives the same value (e.g. 100 % accuracy); handled below.
        warnings.simplefilter("ignore", scipy_stats.DegenerateDataWarning)
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        result = scipy_stats.bootstrap(
            tuple(np.arange(sizes[i]) for i in resampled),
            on_indices,
            n_resamples=n_resamples,
            batch=_BATCH,
            vectorized=True,
            paired=False,
            confidence_level=confidence,
            method=method,
            rng=np.random.default_rng(seed),
        )
    low, high = result.confidence_interval
    if math.isnan(low) or math.isnan(high):
        # Degenerate BCa: fall back to the percentile interval of the same resamples.
        tail = 100 * (1 - confidence) / 2
        low, high = np.nanpercentile(result.bootstrap_distribution, [tail, 100 - tail])
        method = "percentile"
    return Interval(estimate, float(low), float(high), method)


def group_value(
    metric: str, labels: np.ndarray, probs: np.ndarray, w_images: np.ndarray, w_seeds: np.ndarray
) -> np.ndarray:
    """Per resample: the seed-weighted mean over seeds of the arch-averaged metric; probs (A, S, N, C)."""
    values = weighted_metric(metric, labels, probs[None], w_images[:, None, None, :])  # (B, A, S)
    per_seed = values.mean(axis=1)
    return (per_seed * w_seeds).sum(axis=-1) / w_seeds.sum(axis=-1)


def cell_interval(
    metric: str, labels: np.ndarray, probs: np.ndarray, *, n_resamples: int, seed: int, scale: float = 1.0
) -> Interval:
    """A table cell with its interval: `metric` averaged over archs, then over seeds, of probs (A, S, N, C).

    Resamples test images and (with several seeds) seeds.
    """
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 4:
        raise ValueError(f"probs must be (archs, seeds, images, classes), got shape {probs.shape}")
    _, n_seeds, n_images, _ = probs.shape
    return bootstrap(
        lambda w_seeds, w_images: scale * group_value(metric, labels, probs, w_images, w_seeds),
        [n_seeds, n_images],
        n_resamples=n_resamples,
        seed=seed,
    )


def _paired(probs_a: np.ndarray, probs_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two arms' scores as float arrays, checked to share one (archs, seeds, images, classes) shape."""
    probs_a, probs_b = np.asarray(probs_a, dtype=float), np.asarray(probs_b, dtype=float)
    if probs_a.shape != probs_b.shape or probs_a.ndim != 4:
        raise ValueError(
            f"paired predictions must share one (archs, seeds, images, classes) shape: {probs_a.shape}, {probs_b.shape}"
        )
    return probs_a, probs_b


def difference_interval(
    metric: str,
    labels: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    *,
    n_resamples: int,
    seed: int,
    resample_seeds: bool = True,
    confidence: float = CONFIDENCE,
    method: str = "BCa",
) -> Interval:
    """Paired bootstrap interval of cell(A) − cell(B), both (A, S, N, C) on the same images and seeds.

    Resamples the images and, unless `resample_seeds` is false (the image as the only unit), the seeds.
    """
    probs_a, probs_b = _paired(probs_a, probs_b)
    _, n_seeds, n_images, _ = probs_a.shape
    return bootstrap(
        lambda ws, wi: group_value(metric, labels, probs_a, wi, ws) - group_value(metric, labels, probs_b, wi, ws),
        [n_seeds if resample_seeds else 1, n_images],
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
        method=method,
    )


def mean_interval(groups: Sequence[np.ndarray], *, n_resamples: int, seed: int, scale: float = 1.0) -> Interval:
    """Mean over groups of each group's NaN-ignoring mean, resampling each group's values independently.

    A group with no value (all NaN) makes the mean NaN, as pandas' mean over groups would.
    """
    arrays = [np.asarray(g, dtype=float) for g in groups]
    if not arrays or any(a.ndim != 1 or a.size == 0 for a in arrays):
        raise ValueError("mean_interval needs one non-empty 1-D array per group")

    def statistic(*weights: np.ndarray) -> np.ndarray:
        means = []
        for a, w in zip(arrays, weights):
            ok = ~np.isnan(a)
            total, count = (w * np.where(ok, a, 0.0)).sum(axis=-1), (w * ok).sum(axis=-1)
            means.append(np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0))
        return scale * np.mean(means, axis=0)

    return bootstrap(statistic, [a.size for a in arrays], n_resamples=n_resamples, seed=seed)


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> PairedTest:
    """McNemar's exact test of paired successes: for one CNN and one seed, where the pairs are independent images."""
    from statsmodels.stats.contingency_tables import mcnemar  # where used: the table jobs need no statsmodels

    a = np.asarray(correct_a, dtype=bool).ravel()
    b = np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(
            f"paired successes must have the same shape, got {np.shape(correct_a)} and {np.shape(correct_b)}"
        )
    table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
    only_a, only_b = table[0][1], table[1][0]
    pvalue = 1.0 if only_a + only_b == 0 else float(mcnemar(table, exact=True).pvalue)
    return PairedTest(n=int(a.size), b=only_a, c=only_b, pvalue=pvalue)


@dataclass(frozen=True)
class PermutationTest:
    """A two-sided paired permutation test: the observed statistic, its p-value and the resampled null distribution."""

    statistic: float
    pvalue: float
    null: np.ndarray
    exact: bool  # the null distribution enumerates every swap

    def detectable(self, threshold: float) -> float:
        """Smallest positive statistic this permutation distribution would call significant (p < threshold)."""
        values = np.sort(self.null)
        candidates = np.unique(np.abs(self.null))
        candidates = np.append(candidates[candidates > 0], np.nextafter(values[-1], np.inf))
        # Within scipy's relative tolerance of a value counts as reaching it.
        at_least = values.size - np.searchsorted(values, candidates * (1 - 1e-14), side="left")
        # scipy's p per side: count / swaps when exact, (count + 1) / (resamples + 1) when randomised; doubled.
        adjust = 0 if self.exact else 1
        p = np.minimum(1.0, 2 * (at_least + adjust) / (values.size + adjust))
        ok = p < threshold
        return float(candidates[ok].min()) if ok.any() else math.nan


class _SwappedAveragePrecision:
    """Macro AP of arm-swapped predictions, averaged over archs and seeds, for many swaps without a sort each.

    Each image's score comes from A or B, so the 2N candidate scores per (arch, seed, class) are
    sorted once; a swap only selects N of them. AP = Σ over thresholds of ΔR·P = (1 / positives) ·
    Σ over selected positives of the precision at the end of their run of equal scores.
    """

    def __init__(self, labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray) -> None:
        n_images, n_classes = probs_a.shape[-2:]
        # (A, S, C, 2N): the candidates of a class contiguous, for the cumulative sums along them.
        candidates = np.moveaxis(np.concatenate([probs_a, probs_b], axis=-2), -1, -2)
        order = np.argsort(-candidates, axis=-1, kind="stable")
        scores = np.take_along_axis(candidates, order, axis=-1)
        self.image, self.from_a = order % n_images, order < n_images
        positive = np.eye(n_classes, dtype=bool)[np.asarray(labels)].T  # (C, N)
        self.positive = np.take_along_axis(np.concatenate([positive, positive], axis=-1)[None, None], order, axis=-1)
        # Index of the last candidate of each candidate's run of equal scores (None: no ties).
        last = np.ones(scores.shape, dtype=bool)
        last[..., :-1] = scores[..., 1:] != scores[..., :-1]
        idx = np.where(last, np.arange(2 * n_images), 2 * n_images)
        self.run_end = None if last.all() else np.minimum.accumulate(idx[..., ::-1], axis=-1)[..., ::-1]
        self.n_positive = positive.sum(axis=-1)  # (C,)
        self.positive_so_far = np.cumsum(self.positive, axis=-1, dtype=np.int32)
        self.candidates_so_far = np.arange(1, 2 * n_images + 1, dtype=np.int32)

    def difference(self, take_a: np.ndarray) -> np.ndarray:
        """AP of the swapped A side minus that of the B side; take_a (B, N): image i's A-side prediction is A's."""
        selected = take_a[:, self.image] == self.from_a  # (B, A, S, C, 2N): the A side's candidates
        # The B side takes every other candidate: its counts are the complements of the A side's.
        hits = selected & self.positive
        tp = np.cumsum(hits, axis=-1, dtype=np.int32)
        seen = np.cumsum(selected, axis=-1, dtype=np.int32)
        tp_b, seen_b = self.positive_so_far - tp, self.candidates_so_far - seen
        if self.run_end is not None:  # tied scores: the precision at the end of each run
            end = np.broadcast_to(self.run_end, selected.shape)
            tp, seen, tp_b, seen_b = (np.take_along_axis(x, end, axis=-1) for x in (tp, seen, tp_b, seen_b))
        # seen ≥ 1 wherever a hit counts.
        total = np.where(hits, tp / np.maximum(seen, 1), 0.0) - np.where(
            self.positive & ~hits, tp_b / np.maximum(seen_b, 1), 0.0
        )
        ap = _ratio(total.sum(axis=-1), self.n_positive)  # (B, A, S, C)
        return ap.mean(axis=-1).mean(axis=(1, 2))


def permutation_test(
    metric: str,
    labels: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    *,
    n_resamples: int,
    seed: int,
) -> PermutationTest:
    """Two-sided paired permutation test of mAP cell(A) − cell(B): each image's A and B predictions may swap.

    A swap exchanges one image's predictions in every arch and seed at once (scipy.stats.permutation_test,
    permutation_type="samples"), the exchangeable unit under the null that A and B do equally well.
    Accuracy has an exact test instead (`sign_flip`).
    """
    if metric != "map":
        raise ValueError(f"the paired permutation test is for mAP; compare {metric!r} with sign_flip (accuracy)")
    probs_a, probs_b = _paired(probs_a, probs_b)
    n_images = probs_a.shape[2]
    # Resamples per batch so that a batch's swapped candidates stay near 4 million.
    batch = max(1, min(_BATCH * 10, 2_000_000 // probs_a.size))
    swapped_ap = _SwappedAveragePrecision(labels, probs_a, probs_b)

    def statistic(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        # x holds i (A's prediction of image i) or -i-1 (B's); y the complement.
        value = swapped_ap.difference(np.atleast_2d(x) >= 0)
        return value if np.ndim(x) > 1 else value[0]

    image = np.arange(n_images)
    result = scipy_stats.permutation_test(
        (image, -image - 1),
        statistic,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        batch=batch,
        rng=np.random.default_rng(seed),
    )
    null = np.asarray(result.null_distribution)
    return PermutationTest(float(result.statistic), float(result.pvalue), null, exact=null.size == 2**n_images)


@dataclass(frozen=True)
class SignFlip:
    """Per-image paired accuracy differences: `totals[i]` = A's minus B's successes on image i over `pairs` (archs x seeds)."""

    totals: np.ndarray
    pairs: int

    @property
    def n_images(self) -> int:
        return int(self.totals.size)

    @property
    def difference(self) -> float:
        """Accuracy of A minus accuracy of B (fraction), averaged over images, archs and seeds."""
        return float(self.totals.sum() / (self.pairs * self.n_images))

    @property
    def positive(self) -> int:
        """Images A gets right more often than B (over the archs and seeds)."""
        return int((self.totals > 0).sum())

    @property
    def negative(self) -> int:
        return int((self.totals < 0).sum())

    @property
    def discordant(self) -> int:
        """Images whose paired difference is not zero."""
        return self.positive + self.negative

    @property
    def pvalue(self) -> float:
        """Exact two-sided sign-flip p: P(|T| ≥ |t|) when each image's difference flips sign with probability 1/2."""
        return _sign_flip_p(self.totals)

    def detectable(self, threshold: float) -> float:
        """Smallest accuracy difference (fraction) the sign-flip test would call significant (p < threshold).

        Given the magnitudes of the observed non-zero differences; where even all of them one way
        would not reach `threshold`, images with a full difference (every pair discordant the same
        way) are added until it does (NaN when the test set has too few images for that).
        """
        magnitudes = [int(k) for k in np.abs(self.totals) if k]
        # 2 · 2^-n < threshold needs n > log2(2 / threshold) non-zero images at the least.
        needed = math.floor(math.log2(2 / threshold)) + 1
        magnitudes += [self.pairs] * max(0, needed - len(magnitudes))
        while len(magnitudes) <= self.n_images:
            support, probs = sign_flip_null(magnitudes)
            at_least = np.cumsum(probs[::-1])[::-1]  # P(T ≥ t)
            ok = (support > 0) & (probs > 0) & (2 * at_least < threshold)  # attainable sums only
            if ok.any():
                return float(support[ok].min() / (self.pairs * self.n_images))
            magnitudes.append(self.pairs)
        return math.nan


def sign_flip(correct_a: np.ndarray, correct_b: np.ndarray) -> SignFlip:
    """Paired successes (..., N) of A and B (leading dimensions archs, seeds) as per-image differences."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim < 1:
        raise ValueError(f"paired successes must have the same shape (..., images), got {a.shape} and {b.shape}")
    totals = (a.astype(np.int64) - b).reshape(-1, a.shape[-1]).sum(axis=0)
    return SignFlip(totals=totals, pairs=int(np.prod(a.shape[:-1], dtype=np.int64)))


def sign_flip_null(magnitudes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Exact null distribution of T = Σ ±k_i over all 2^n equally likely sign vectors: support and probabilities."""
    k = np.abs(np.asarray(magnitudes, dtype=np.int64))
    k = k[k > 0]
    total = int(k.sum())
    probs = np.zeros(2 * total + 1)
    probs[total] = 1.0
    for ki in k:
        # The support so far lies within ±(sum of the magnitudes so far): np.roll never wraps.
        probs = 0.5 * (np.roll(probs, ki) + np.roll(probs, -ki))
    return np.arange(-total, total + 1), probs


def _sign_flip_p(totals: np.ndarray) -> float:
    observed = abs(int(np.sum(totals)))
    if observed == 0:
        return 1.0
    support, probs = sign_flip_null(totals)
    return float(min(1.0, 2 * probs[support >= observed].sum()))


def _restricted_variance(values: np.ndarray, counts: np.ndarray, mean0: float) -> float:
    """Variance of the per-image difference under its maximum-likelihood distribution with mean `mean0`.

    The distribution lives on [−1, 1] (differences as fractions of the pairs); its restricted MLE
    weights the observed values as empirical likelihood does, p_k = (n_k / n) / (1 + t (v_k − mean0)),
    and, where no observed value can carry the mean that far, puts the rest of the mass on the
    unobserved end, +1 or −1 (for one pair per image this is Tango's restricted MLE of the 2 x 2 table).
    """
    n = counts.sum()
    shift = values - mean0
    t_low, t_high = -1 / (1 - mean0), 1 / (1 + mean0)  # where the mass at +1 or −1 would turn negative

    def slope(t: float) -> float:
        return float((counts * shift / (1 + t * shift)).sum())

    end = 0.0
    if values.max() < 1 and slope(t_low) <= 0:
        t, end = t_low, 1.0
    elif values.min() > -1 and slope(t_high) >= 0:
        t, end = t_high, -1.0
    else:
        span = t_high - t_low
        t = optimize.brentq(slope, t_low + 1e-12 * span, t_high - 1e-12 * span, xtol=1e-14)
    probs = counts / n / (1 + t * shift)
    extra = max(0.0, 1.0 - probs.sum())
    return max(0.0, float((probs * values**2).sum() + extra * end**2 - mean0**2))


def score_statistic(flip: SignFlip, mean0: float) -> float:
    """Score statistic of H0 'accuracy difference = mean0' from the per-image differences (Tango's, generalised).

    z = (d̄ − mean0) / sqrt(V(mean0) / N), V the variance under the restricted MLE: the image is the
    unit, its difference the mean over its pairs (archs x seeds), a value in [−1, 1].
    """
    values, counts = np.unique(flip.totals / flip.pairs, return_counts=True)
    mean = flip.difference
    if not -1 < mean0 < 1:
        return -math.inf if mean0 >= 1 > mean else math.inf if mean0 <= -1 < mean else 0.0
    gap = mean - mean0
    if abs(gap) < 1e-15:
        return 0.0
    variance = _restricted_variance(values, counts.astype(float), mean0)
    return math.copysign(math.inf, gap) if variance == 0 else gap / math.sqrt(variance / flip.n_images)


def score_interval(flip: SignFlip, confidence: float = CONFIDENCE) -> Interval:
    """Two-sided score interval of the accuracy difference: every mean0 its score test at 1 − confidence keeps.

    One method at every discordance (none included): with no discordant image it is
    [−z² / (N + z²), +z² / (N + z²)], the Wilson bound of 0 of N.
    """
    critical = scipy_stats.norm.ppf(0.5 + confidence / 2)
    mean = flip.difference

    def bound(towards: float) -> float:
        if mean == towards:
            return towards
        edge = towards - math.copysign(1e-12, towards)
        if abs(score_statistic(flip, edge)) < critical:
            return towards
        return optimize.brentq(lambda m: abs(score_statistic(flip, m)) - critical, mean, edge, xtol=1e-12)

    return Interval(mean, bound(-1.0), bound(1.0), method="score")


@dataclass(frozen=True)
class Equivalence:
    """Tests of |A − B| against a margin from the score statistic, and the (1 − 2α) interval TOST decides by."""

    interval: Interval
    p_equivalent: float  # TOST: the larger of the two one-sided p's of H0 |δ| ≥ margin
    p_different: float  # H0 |δ| ≤ margin: below α when the (1 − α) interval lies entirely outside ±margin


def equivalence_test(flip: SignFlip, margin: float, *, alpha: float = ALPHA) -> Equivalence:
    """TOST of an accuracy difference within ±margin (fractions) and its converse, the image as the unit.

    Both are score tests (`score_statistic`) at ±margin, so that they decide as the score
    intervals do at every discordance: TOST's p < α exactly when the (1 − 2α) interval lies
    inside ±margin; p_different, twice the smaller one-sided p of a difference beyond the margin
    (the two sides may both be near their boundary when the margin is small), is < α exactly
    when the (1 − α) interval lies entirely outside ±margin.
    """
    if not margin > 0:
        raise ValueError(f"the equivalence margin must be positive, got {margin}")
    z_upper, z_lower = score_statistic(flip, margin), score_statistic(flip, -margin)
    norm = scipy_stats.norm
    p_equivalent = max(norm.cdf(z_upper), norm.sf(z_lower))
    p_different = min(1.0, 2 * min(norm.sf(z_upper), norm.cdf(z_lower)))
    return Equivalence(score_interval(flip, 1 - 2 * alpha), float(p_equivalent), float(p_different))


def holm(pvalues: Sequence[float], alpha: float = ALPHA) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels' multipletests); NaN entries stay NaN and are not counted."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=alpha, method="holm")[1]
    return out

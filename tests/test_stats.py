"""Statistics: weighted metrics against scikit-learn, bootstrap against scipy, tests against hand-worked cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    precision_recall_fscore_support,
    recall_score,
)
from statsmodels.stats.multitest import multipletests

from dpaat import stats
from test_metrics import HAND_F1, HAND_MAP, HAND_PRECISION, HAND_RECALL, LABELS, PROBS


def _sklearn(metric: str, y: np.ndarray, probs: np.ndarray, w: np.ndarray) -> float:
    pred = probs.argmax(1)
    if metric == "accuracy":
        return accuracy_score(y, pred, sample_weight=w)
    if metric == "map":
        return average_precision_score(np.eye(probs.shape[1])[y], probs, average="macro", sample_weight=w)
    if metric == "balanced_accuracy":
        return balanced_accuracy_score(y, pred, sample_weight=w)
    if metric == "worst_recall":
        present = sorted(set(y[w > 0]))
        return recall_score(y, pred, labels=present, average=None, sample_weight=w, zero_division=0).min()
    p, r, f, _ = precision_recall_fscore_support(
        y, pred, labels=list(range(probs.shape[1])), average="macro", sample_weight=w, zero_division=0
    )
    return {"precision": p, "recall": r, "f1": f}[metric]


def test_unit_weights_give_the_hand_worked_metrics():
    w = np.ones(len(LABELS))
    got = {m: float(stats.weighted_metric(m, LABELS, PROBS, w)) for m in stats.METRIC_NAMES}
    assert got["accuracy"] == pytest.approx(3 / 5)
    assert got["map"] == pytest.approx(HAND_MAP)  # with a tie between a positive and a negative
    assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((HAND_PRECISION, HAND_RECALL, HAND_F1))
    assert (got["balanced_accuracy"], got["worst_recall"]) == pytest.approx((HAND_RECALL, 0.0))


@pytest.mark.parametrize("metric", stats.METRIC_NAMES)
def test_weighted_metrics_equal_sklearn_with_sample_weights(metric):
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 3, 40)
        probs = rng.dirichlet(np.ones(3), 40)
        probs[:5] = probs[5:10]  # ties of scores, as a bootstrap resample has
        w = rng.integers(0, 4, 40).astype(float)
        w[y == 0][:1] = 1.0
        batch = stats.weighted_metric(metric, y, probs[None].repeat(2, 0), np.stack([w, np.ones(40)]))
        assert batch[0] == pytest.approx(_sklearn(metric, y, probs, w), abs=1e-12)
        assert batch[1] == pytest.approx(_sklearn(metric, y, probs, np.ones(40)), abs=1e-12)


def test_accuracy_interval_is_scipys_bootstrap_of_the_mean():
    rng = np.random.default_rng(1)
    y = np.arange(60) % 3
    correct = rng.random(60) < 0.7
    probs = np.eye(3)[np.where(correct, y, (y + 1) % 3)][None, None]
    ours = stats.cell_interval("accuracy", y, probs, n_resamples=2000, seed=7)
    ref = scipy_stats.bootstrap(
        (correct.astype(float),), np.mean, n_resamples=2000, batch=100, method="BCa", rng=np.random.default_rng(7)
    )
    assert ours.estimate == pytest.approx(correct.mean())
    assert (ours.low, ours.high) == pytest.approx(tuple(ref.confidence_interval), abs=1e-12)


def test_seeds_and_images_are_resampled_independently():
    rng = np.random.default_rng(2)
    y = np.arange(30) % 3
    correct = rng.random((3, 30)) < 0.6  # 3 seeds
    probs = np.eye(3)[np.where(correct, y, (y + 1) % 3)][None]  # (1 arch, 3 seeds, 30, 3)

    def naive(seed_idx, image_idx, axis=-1):
        # Resamples of both samples, or BCa's jackknife of one beside the other's original data.
        seeds2, images2 = np.atleast_2d(seed_idx), np.atleast_2d(image_idx)
        n = max(len(seeds2), len(images2))
        seeds2 = np.repeat(seeds2, n, axis=0) if len(seeds2) == 1 else seeds2
        images2 = np.repeat(images2, n, axis=0) if len(images2) == 1 else images2
        out = np.array([correct[np.ix_(s, i)].mean() for s, i in zip(seeds2, images2)])
        return out if max(np.ndim(seed_idx), np.ndim(image_idx)) > 1 else out[0]

    ours = stats.cell_interval("accuracy", y, probs, n_resamples=500, seed=3)
    ref = scipy_stats.bootstrap(
        (np.arange(3), np.arange(30)), naive, n_resamples=500, batch=100, vectorized=True, method="BCa",
        rng=np.random.default_rng(3),
    )  # fmt: skip
    assert (ours.low, ours.high) == pytest.approx(tuple(ref.confidence_interval), abs=1e-12)


def test_degenerate_interval_is_the_point():
    y = np.arange(30) % 3
    probs = np.eye(3)[y][None, None]
    assert stats.cell_interval("accuracy", y, probs, n_resamples=200, seed=0) == stats.Interval(1.0, 1.0, 1.0)


def test_difference_interval_is_paired():
    y = np.arange(60) % 3
    rng = np.random.default_rng(4)
    correct = rng.random(60) < 0.5
    probs = np.eye(3)[np.where(correct, y, (y + 1) % 3)][None, None]
    same = stats.difference_interval("accuracy", y, probs, probs.copy(), n_resamples=300, seed=0)
    assert same == stats.Interval(0.0, 0.0, 0.0)  # identical predictions: no difference in any resample


def test_mcnemar_exact_hand_worked():
    # 1 image only A gets right, 7 only B: p = 2 * P(X <= 1 | 8, 1/2) = 2 * 9/256.
    a = np.array([1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0], dtype=bool)
    b = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0], dtype=bool)
    test = stats.mcnemar_exact(a, b)
    assert (test.n, test.b, test.c) == (11, 1, 7)
    assert test.pvalue == pytest.approx(18 / 256)
    assert test.pvalue == pytest.approx(scipy_stats.binomtest(1, 8).pvalue)
    assert test.difference == pytest.approx(-6 / 11)
    assert stats.mcnemar_exact(a, a).pvalue == 1.0


def test_holm_hand_worked_and_statsmodels():
    # sorted 0.01, 0.03, 0.04 -> 3·0.01, max(0.03, 2·0.03), max(0.06, 0.04)
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    p = np.random.default_rng(5).random(12) / 10
    assert stats.holm(p) == pytest.approx(multipletests(p, method="holm")[1])
    assert np.isnan(stats.holm([0.01, np.nan])[1])


def test_minimum_detectable_difference():
    # The exact test needs 6 discordant pairs all one way (2/2^6 < 0.05 <= 2/2^5).
    assert stats.min_discordant(0.05) == 6
    assert stats.minimum_detectable_difference(60, 0) == pytest.approx(6 / 60)
    # 20 discordant pairs: 15 vs 5 gives p = 0.041, 14 vs 6 gives 0.115 -> a gap of 10 images.
    assert scipy_stats.binomtest(5, 20).pvalue < 0.05 < scipy_stats.binomtest(6, 20).pvalue
    assert stats.minimum_detectable_difference(60, 20) == pytest.approx(10 / 60)


def test_permutation_pvalue_is_the_exact_enumeration():
    rng = np.random.default_rng(6)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    pa = rng.dirichlet(np.ones(3), (1, 1, 8))
    pb = rng.dirichlet(np.ones(3), (1, 1, 8))

    def diff(a, b):
        return _sklearn("map", y, a[0, 0], np.ones(8)) - _sklearn("map", y, b[0, 0], np.ones(8))

    observed = diff(pa, pb)
    null = []
    for swap in itertools.product([False, True], repeat=8):
        s = np.array(swap)[None, None, :, None]
        null.append(diff(np.where(s, pb, pa), np.where(s, pa, pb)))
    null = np.array(null)
    tol = 1e-12
    exact = min(1.0, 2 * min((null >= observed - tol).mean(), (null <= observed + tol).mean()))
    assert stats.permutation_pvalue("map", y, pa, pb, n_resamples=1000, seed=0) == pytest.approx(exact)


def test_mean_interval_of_groups_with_nan():
    a = np.array([0.2, np.nan, 0.4, 0.6])
    b = np.array([np.nan, np.nan])
    ok = stats.mean_interval([a], n_resamples=300, seed=0)
    assert ok.estimate == pytest.approx(0.4) and ok.low <= 0.4 <= ok.high
    empty = stats.mean_interval([a, b], n_resamples=300, seed=0)
    assert np.isnan(empty.estimate) and np.isnan(empty.low) and np.isnan(empty.high)
